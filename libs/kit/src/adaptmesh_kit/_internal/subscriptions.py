"""Which handlers a service has on each stream, and the rules for combining them.

A stream can be read two ways by one service, each by its own FastStream subscriber: by the
service's consumer group (its instances share the partitions; per record or in batches, not
both: two group consumers of one topic in one process would split its partitions between them)
and by broadcast (every instance reads everything). Both may exist on one stream: e.g. each
instance keeps a view of every dataset version while the group does the once-per-record work.

A record that is bad in itself (too large, bad envelope, unknown type, invalid body) is
dead-lettered by the group subscription when the stream has one, since it does so once per
group; the broadcast one would dead-letter it once per instance.
"""

from __future__ import annotations

import dataclasses

from adaptmesh_kit._internal.positions import ReadPositions
from adaptmesh_kit.handling import BatchHandler, Handler
from adaptmesh_schemas.topics import Stream


@dataclasses.dataclass(slots=True)
class RecordSubscription:
    """Per-record handlers by ce_type."""

    handlers: dict[str, Handler] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class BatchSubscription:
    """One handler for the batches of a stream, and which ce_types it takes."""

    handler: BatchHandler
    event_types: frozenset[str]
    max_records: int
    max_wait_ms: int


@dataclasses.dataclass(slots=True)
class StreamSubscriptions:
    """A service's subscriptions to one stream: at most one of each kind."""

    group: RecordSubscription | BatchSubscription | None = None
    broadcast: RecordSubscription | None = None
    # How far the broadcast subscription has read (for `caught_up`).
    positions: ReadPositions | None = None

    def group_types(self) -> frozenset[str]:
        if isinstance(self.group, BatchSubscription):
            return self.group.event_types
        if isinstance(self.group, RecordSubscription):
            return frozenset(self.group.handlers)
        return frozenset()

    def broadcast_types(self) -> frozenset[str]:
        return frozenset(self.broadcast.handlers) if self.broadcast else frozenset()


class Subscriptions:
    """The service's subscriptions, by stream."""

    def __init__(self) -> None:
        self._streams: dict[Stream, StreamSubscriptions] = {}

    def of(self, stream: Stream) -> StreamSubscriptions:
        return self._streams.setdefault(stream, StreamSubscriptions())

    def add_record_handler(
        self, stream: Stream, ce_types: list[str], handler: Handler, *, broadcast: bool
    ) -> RecordSubscription | None:
        """Register `handler`; returns the subscription when it is new (needs a subscriber)."""
        subscriptions = self.of(stream)
        created: RecordSubscription | None = None
        if broadcast:
            if subscriptions.broadcast is None:
                subscriptions.broadcast = created = RecordSubscription()
                subscriptions.positions = ReadPositions()
            target = subscriptions.broadcast
        else:
            if isinstance(subscriptions.group, BatchSubscription):
                raise ValueError(
                    f"{stream} already has a batch handler in the consumer group; handle "
                    "these types in it too (or subscribe with broadcast=True)"
                )
            if subscriptions.group is None:
                subscriptions.group = created = RecordSubscription()
            target = subscriptions.group
        for ce_type in ce_types:
            target.handlers[ce_type] = handler
        return created

    def add_batch_handler(self, stream: Stream, subscription: BatchSubscription) -> None:
        subscriptions = self.of(stream)
        if subscriptions.group is not None:
            why = (
                "a batch handler; one handler takes all the types it wants from a batch"
                if isinstance(subscriptions.group, BatchSubscription)
                else "per-record handlers in the consumer group; a batch handler would split "
                "the partitions with them"
            )
            raise ValueError(f"{stream} already has {why}")
        subscriptions.group = subscription
