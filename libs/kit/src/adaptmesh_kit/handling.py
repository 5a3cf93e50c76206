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
class EventContext:
    """What a handler knows about the record it handles, and how it publishes consequences."""

    envelope: Envelope
    topic: str
    partition: int
    offset: int
    app: MeshApp

    async def publish(self, event: MeshEvent, *, event_id: str | None = None) -> Envelope:
        """Publish `event` as a consequence of the event being handled.

        `event_id` fixes its `ce_id` (default: a fresh uuid): derive it from the handled
        event's id and a redelivery republishes the same ids, which consumers drop as seen."""
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
