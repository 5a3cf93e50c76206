"""A consumer-group subscription that hands each fetched batch to one handler call.

Every record of a batch is checked as a single record would be; each bad one is dead-lettered
on its own, before the handler runs (so is one reusing a handled `ce_id` with another body, as a
conflict), and the valid ones not handled before go to the handler together, in log order. Once
it has finished, the batch's ids (with their bodies' digests) are remembered in one transaction
and every record's offset (dead-lettered and skipped ones too) becomes committable. A handler
failure retries the whole batch; when it keeps failing, every record of it is dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from opentelemetry.trace import Span, Status, StatusCode

from adaptmesh_kit._internal.discipline import (
    HANDLER_RETRY_DELAY_SECONDS,
    Defect,
    Discipline,
    handler_failure,
)
from adaptmesh_kit._internal.idempotency import Handled, body_digest
from adaptmesh_kit._internal.subscriptions import BatchSubscription
from adaptmesh_kit._internal.tracing import BatchSpans
from adaptmesh_kit.handling import Delivery, RejectedEvent
from adaptmesh_schemas.envelope import Envelope
from adaptmesh_schemas.topics import Stream

log = logging.getLogger(__name__)

RecordKey = tuple[str, int, int]  # topic, partition, offset


class BatchConsumer:
    def __init__(
        self,
        discipline: Discipline,
        stream: Stream,
        subscription: BatchSubscription,
        spans: BatchSpans,
    ) -> None:
        self._discipline = discipline
        self._stream = stream
        self._subscription = subscription
        self._spans = spans

    async def consume(self, records: Sequence[ConsumerRecord[Any, Any]], consumer: object) -> None:
        if not records:
            return
        with self._spans.process(records[0].topic, records) as span:
            await self._consume(records, span)
        if isinstance(consumer, AIOKafkaConsumer):
            last: dict[tuple[str, int], int] = {}
            for record in records:
                last[record.topic, record.partition] = record.offset
            for (topic, partition), offset in last.items():
                self._discipline.offsets.handled(consumer, topic, partition, offset)

    async def _consume(self, records: Sequence[ConsumerRecord[Any, Any]], span: Span) -> None:
        discipline = self._discipline
        group = discipline.consumer_group
        screened = [discipline.screen(self._stream, record) for record in records]
        wanted = self._subscription.event_types
        # One query for the whole batch instead of one per record.
        seen = discipline.processed.recall_among(
            group,
            [e.id for e in screened if isinstance(e, Envelope) and e.type in wanted],
        )
        deliveries: list[Delivery[Any]] = []
        sources: dict[RecordKey, ConsumerRecord[Any, Any]] = {}
        taken: dict[str, str] = {}  # id -> body sha256 of the deliveries, in order
        for record, checked in zip(records, screened, strict=True):
            outcome = self._take(record, checked, seen, taken)
            if isinstance(outcome, Defect):
                await discipline.dead_letter(record, outcome)
            elif outcome is not None:
                deliveries.append(outcome)
                sources[record.topic, record.partition, record.offset] = record
        refused = await self._run_handler(deliveries, span) if deliveries else []
        # Handled, rejected or failed for good: a redelivery changes nothing.
        discipline.processed.remember_many(group, taken.items())
        for key, defect in refused:
            await discipline.dead_letter(sources[key], defect)

    def _take(
        self,
        record: ConsumerRecord[Any, Any],
        checked: Envelope | Defect,
        seen: dict[str, Handled],
        taken: dict[str, str],
    ) -> Delivery[Any] | Defect | None:
        """The record's `Delivery`, its `Defect`, or None when it is not for the handler."""
        if isinstance(checked, Defect):
            return checked
        envelope = checked
        discipline = self._discipline
        if envelope.type not in self._subscription.event_types:
            if envelope.type in discipline.subscriptions.of(self._stream).broadcast_types():
                # Only the broadcast twin handles this type, and it leaves bad records to us.
                decoded = discipline.decode(envelope, record.value)
                return decoded if isinstance(decoded, Defect) else None
            return None  # a known event meant for other consumers of this topic
        body_sha256 = body_digest(record.value)
        # `taken`: a producer's retry can put the same event twice into one batch.
        handled = seen.get(envelope.id)
        if handled is None and envelope.id in taken:
            handled = Handled(taken[envelope.id])
        if handled is not None:
            return discipline.repeated(envelope, handled, body_sha256)
        event = discipline.decode(envelope, record.value)
        if isinstance(event, Defect):
            return event
        taken[envelope.id] = body_sha256
        return Delivery(event, discipline.context_for(envelope, record))

    async def _run_handler(
        self, deliveries: list[Delivery[Any]], span: Span
    ) -> list[tuple[RecordKey, Defect]]:
        """Call the handler, retrying the batch on failure; returns what it refused, and why."""
        attempts = self._discipline.settings.handler_attempts
        for attempt in range(1, attempts + 1):
            try:
                rejected = await self._subscription.handler(deliveries)
            except RejectedEvent as rejection:
                whole = Defect("rejected", str(rejection), in_record=False)
                return [(_key(delivery), whole) for delivery in deliveries]
            except Exception as error:  # noqa: BLE001  (any handler failure has the same fate)
                span.record_exception(error)
                if attempt == attempts:
                    span.set_status(Status(StatusCode.ERROR, f"handler failed {attempt} times"))
                    failure = handler_failure(error, attempt)
                    return [(_key(delivery), failure) for delivery in deliveries]
                log.warning(
                    "batch handler for %s failed (%s), retrying its %d records",
                    self._stream,
                    error,
                    len(deliveries),
                )
                await asyncio.sleep(HANDLER_RETRY_DELAY_SECONDS * attempt)
            else:
                return self._rejections(rejected or (), deliveries)
        return []

    def _rejections(
        self,
        rejected: Sequence[tuple[Delivery[Any], str]],
        deliveries: list[Delivery[Any]],
    ) -> list[tuple[RecordKey, Defect]]:
        offered = {_key(delivery) for delivery in deliveries}
        refusals: dict[RecordKey, Defect] = {}
        for delivery, reason in rejected:
            key = _key(delivery)
            if key not in offered:
                log.error(
                    "batch handler for %s rejected %s[%d]@%d, which was not in its batch; ignored",
                    self._stream,
                    *key,
                )
                continue
            refusals.setdefault(key, Defect("rejected", reason, in_record=False))
        return list(refusals.items())


def _key(delivery: Delivery[Any]) -> RecordKey:
    context = delivery.context
    return context.topic, context.partition, context.offset
