"""What a handler is given and what it may raise or return.

A per-record handler (`MeshApp.handles`) is called with one event and its `EventContext`; a batch
handler (`MeshApp.handles_batch`) with the `Delivery`s of one fetched batch, and may return some
of them as rejected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from adaptmesh_schemas.envelope import Envelope
from adaptmesh_schemas.versioning import MeshEvent

if TYPE_CHECKING:
    from adaptmesh_kit.app import MeshApp

EventT = TypeVar("EventT", bound=MeshEvent)


class RejectedEvent(Exception):  # noqa: N818  (it names the outcome, not a failure of ours)
    """Raised by a handler for an event that is valid in form but unacceptable in content
    (e.g. a label the taxonomy does not have). It is dead-lettered at once with this reason,
    not retried: retrying cannot make it acceptable. Raised by a batch handler, it rejects the
    whole batch; to reject single records a batch handler returns them instead."""


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxItem:
    """One record to write: topic, key, body and text headers."""

    topic: str
    key: bytes
    value: bytes
    headers: dict[str, str]


@dataclasses.dataclass(slots=True)
class Outbox:
    """What a handler of an exactly-once stream published, written once it has returned, in
    one transaction with the record's offset."""

    items: list[OutboxItem] = dataclasses.field(default_factory=list)

    def add(self, item: OutboxItem) -> None:
        self.items.append(item)

    def clear(self) -> None:
        self.items.clear()


@dataclasses.dataclass(frozen=True, slots=True)
class EventContext:
    """What a handler knows about the record it handles, and how it publishes consequences."""

    envelope: Envelope
    topic: str
    partition: int
    offset: int
    app: MeshApp
    outbox: Outbox | None = None
    """Set for exactly-once streams: publishes are collected and committed with the offset."""

    async def publish(self, event: MeshEvent, *, event_id: str | None = None) -> Envelope:
        """Publish `event` as a consequence of the event being handled.

        `event_id` fixes its `ce_id` (default: a fresh uuid): derive it from the handled
        event's id and a redelivery republishes the same ids, which consumers drop as seen.

        On an exactly-once stream (`create_app(..., exactly_once=...)`) the event is written
        only after the handler returns, atomically with the record's offset; this returns at
        once, and nothing is written if the handler fails or the instance loses the partition.
        """
        if self.outbox is not None:
            envelope = self.app.envelope_for(
                event,
                correlation_id=self.envelope.correlationid,
                causation_id=self.envelope.id,
                event_id=event_id,
            )
            self.outbox.add(self.app.record_for(event, envelope))
            return envelope
        return await self.app.publish(
            event,
            correlation_id=self.envelope.correlationid,
            causation_id=self.envelope.id,
            event_id=event_id,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery(Generic[EventT]):
    """One record of a batch, decoded: the event and its context (publish consequences of this
    record through `context.publish`)."""

    event: EventT
    context: EventContext


Handler = Callable[[Any, EventContext], Awaitable[None]]
# Returns the deliveries it rejects, each with the reason (they are dead-lettered); the rest
# count as handled. `None` or an empty sequence: all handled.
BatchHandler = Callable[
    [Sequence[Delivery[Any]]], Awaitable[Sequence[tuple[Delivery[Any], str]] | None]
]
