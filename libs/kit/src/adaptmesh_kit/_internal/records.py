"""A subscription that hands records to their handlers one at a time.

In the consumer group, an event already handled (same `ce_id` and body) is skipped, one that
reuses a handled `ce_id` with another body is dead-lettered as a conflict, and a record's offset
becomes committable once its handler returned. A broadcast subscription has neither (every
instance reads everything at each start; its handlers are idempotent) and counts its read
positions instead, so `caught_up` can tell when it has read the whole topic.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from adaptmesh_kit._internal.discipline import (
    Defect,
    Discipline,
)
from adaptmesh_kit._internal.idempotency import body_digest
from adaptmesh_kit._internal.subscriptions import RecordSubscription
from adaptmesh_schemas.topics import Stream

log = logging.getLogger(__name__)


class RecordConsumer:
    def __init__(
        self,
        discipline: Discipline,
        stream: Stream,
        subscription: RecordSubscription,
        *,
        broadcast: bool,
    ) -> None:
        self._discipline = discipline
        self._stream = stream
        self._subscription = subscription
        self._broadcast = broadcast

    async def consume(self, record: ConsumerRecord[Any, Any], consumer: object) -> None:
        discipline = self._discipline
        twins = discipline.subscriptions.of(self._stream)
        defect = await self._handle(record)
        if defect is not None:
            if self._broadcast and defect.in_record and twins.group is not None:
                log.debug(
                    "%s[%d]@%d is bad (%s); the group subscription dead-letters it",
                    record.topic,
                    record.partition,
                    record.offset,
                    defect.code,
                )
            else:
                await discipline.dead_letter(record, defect)
        if self._broadcast:
            assert twins.positions is not None  # created with the broadcast subscription
            await twins.positions.advance(record.partition, record.offset)
        elif isinstance(consumer, AIOKafkaConsumer):
            discipline.offsets.handled(consumer, record.topic, record.partition, record.offset)

    async def _handle(self, record: ConsumerRecord[Any, Any]) -> Defect | None:
        """Handle one record; returns why it must be dead-lettered, if it must."""
        discipline = self._discipline
        checked = discipline.screen(self._stream, record)
        if isinstance(checked, Defect):
            return checked
        envelope = checked
        handler = self._subscription.handlers.get(envelope.type)
        if handler is None:
            if not self._broadcast and envelope.type in (
                discipline.subscriptions.of(self._stream).broadcast_types()
            ):
                # Only the broadcast twin handles this type, and it leaves bad records to us.
                decoded = discipline.decode(envelope, record.value)
                return decoded if isinstance(decoded, Defect) else None
            return None  # a known event meant for other consumers of this topic
        group = discipline.consumer_group
        # Broadcast subscriptions read everything at every start and do not dedupe.
        body_sha256 = None if self._broadcast else body_digest(record.value)
        if body_sha256 is not None:
            handled = discipline.processed.recall(group, envelope.id)
            if handled is not None:
                return discipline.repeated(envelope, handled, body_sha256)
        event = discipline.decode(envelope, record.value)
        if isinstance(event, Defect):
            return event
        context = discipline.context_for(envelope, record)
        outcome = await discipline.run_record_handler(handler, event, context)
        if body_sha256 is not None:
            # Handled, rejected or failed for good: a redelivery changes nothing.
            discipline.processed.remember(group, envelope.id, body_sha256)
        return outcome
