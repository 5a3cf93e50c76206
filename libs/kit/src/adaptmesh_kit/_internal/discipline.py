"""What every subscription of a service does alike, per record and per batch.

Each record is screened (size, envelope, known type, right topic) before anything else; what a
handler takes is deduplicated by `ce_id` and its body decoded; whatever cannot be taken goes to
the dead letters with a stable reason code. Ids are remembered, with the sha256 of the body,
once a handler has had the event (handled, rejected or failed for good); a record with a bad
body is not, so it is dead-lettered again only if it is delivered again (after a crash before
its offset was committed). A handled id that comes back with the same body is a redelivery and
is skipped; with another body it is a different event under a taken id, dead-lettered as
`conflict` (never handled, and never silently dropped).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import ConsumerRecord

from adaptmesh_kit._internal.idempotency import Handled, ProcessedLog
from adaptmesh_kit._internal.offsets import HandledOffsets
from adaptmesh_kit._internal.subscriptions import Subscriptions
from adaptmesh_kit.handling import EventContext, Handler, Outbox, OutboxItem, RejectedEvent
from adaptmesh_kit.settings import MeshSettings
from adaptmesh_schemas.envelope import DecodeError, Envelope, decode_event, read_envelope
from adaptmesh_schemas.topics import Stream
from adaptmesh_schemas.versioning import EVENT_TYPES, MeshEvent

HANDLER_RETRY_DELAY_SECONDS = 0.2

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Defect:
    """Why a record goes to the dead letters: `code` is stable, `reason` is for people.

    `in_record`: the record itself is bad (every consumer would find the same), as opposed to
    what a handler made of it (rejected it, or kept failing)."""

    code: str
    reason: str
    in_record: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class Discipline:
    """The service-wide parts every subscription uses."""

    settings: MeshSettings
    consumer_group: str
    subscriptions: Subscriptions
    processed: ProcessedLog
    offsets: HandledOffsets
    topic_of: Callable[[Stream], str]
    dead_letter: Callable[[ConsumerRecord[Any, Any], Defect], Awaitable[None]]
    context_for: Callable[[Envelope, ConsumerRecord[Any, Any]], EventContext]
    # For exactly-once streams: the dead letter as a record to write in the transaction, and
    # how to write an outbox without Kafka transactions (FastStream's in-memory test broker).
    letter_for: Callable[[ConsumerRecord[Any, Any], Defect], OutboxItem]
    write_outbox: Callable[[Outbox], Awaitable[None]]

    def dead_letter_into(
        self, outbox: Outbox, record: ConsumerRecord[Any, Any], defect: Defect
    ) -> None:
        """Add the dead letter of `record` to what the transaction writes."""
        outbox.add(self.letter_for(record, defect))

    async def publish_outbox(self, outbox: Outbox) -> None:
        await self.write_outbox(outbox)

    async def run_record_handler(
        self, handler: Handler, event: MeshEvent, context: EventContext
    ) -> Defect | None:
        """Call a per-record handler, retrying failures; a rejection is final at once.

        When the context collects publishes (an exactly-once stream), a failed attempt's
        publishes are not the outcome: they are dropped before the next attempt and after the
        last one. A rejection keeps what was published before it, as it would be without
        transactions.
        """
        attempts = self.settings.handler_attempts
        for attempt in range(1, attempts + 1):
            if context.outbox is not None:
                context.outbox.clear()
            try:
                await handler(event, context)
            except RejectedEvent as rejection:
                return Defect("rejected", str(rejection), in_record=False)
            except Exception as error:  # noqa: BLE001  (any handler failure has the same fate)
                if attempt == attempts:
                    if context.outbox is not None:
                        context.outbox.clear()
                    return handler_failure(error, attempt)
                log.warning("handler for %s failed (%s), retrying", context.envelope.type, error)
                await asyncio.sleep(HANDLER_RETRY_DELAY_SECONDS * attempt)
            else:
                return None
        return None

    @staticmethod
    def repeated(envelope: Envelope, handled: Handled, body_sha256: str) -> Defect | None:
        """What to do with a record whose id the group has handled: None to skip it (a
        redelivery: same body, or one handled before bodies were digested), or the conflict
        to dead-letter when its body is not the one handled."""
        if handled.body_sha256 is None or handled.body_sha256 == body_sha256:
            log.info("skipping %s %s: already handled", envelope.type, envelope.id)
            return None
        log.warning(
            "%s %s was already handled with another body; dead-lettering it as a conflict",
            envelope.type,
            envelope.id,
        )
        return Defect(
            "conflict",
            f"ce_id {envelope.id!r} was already handled with a different body (sha256 "
            f"{handled.body_sha256}; this body: sha256 {body_sha256}); it was not handled "
            "again: publish a changed event under a new ce_id",
            in_record=False,
        )

    def screen(self, stream: Stream, record: ConsumerRecord[Any, Any]) -> Envelope | Defect:
        """The record's envelope, or why no consumer of `stream` can take it."""
        value: bytes | None = record.value
        size = len(value) if value else 0
        if size > self.settings.max_event_bytes:
            return Defect(
                "too-large",
                f"body of {size:,} bytes exceeds the {self.settings.max_event_bytes:,}-byte "
                "limit (MESH_MAX_EVENT_BYTES); put large payloads in the artifact store and "
                "send a reference",
            )
        try:
            envelope = read_envelope(record.headers)
        except DecodeError as error:
            return Defect(error.code, str(error))
        event_type = EVENT_TYPES.get(envelope.type)
        if event_type is None:
            return Defect("unknown-type", f"unknown ce_type {envelope.type!r}")
        if event_type.stream is not stream:
            return Defect(
                "wrong-topic", f"{envelope.type} belongs on {self.topic_of(event_type.stream)}"
            )
        return envelope

    @staticmethod
    def decode(envelope: Envelope, value: bytes | None) -> MeshEvent | Defect:
        try:
            return decode_event(envelope, value)
        except DecodeError as error:
            return Defect(error.code, str(error))


def handler_failure(error: Exception, attempts: int) -> Defect:
    """The dead letter's reason for a handler that failed `attempts` times, last with `error`."""
    return Defect(
        "handler-error",
        f"{type(error).__name__}: {error} (after {attempts} attempts)\n"
        + "".join(traceback.format_exception(error, limit=-3)),
        in_record=False,
    )
