"""The production model per domain, as `mesh.models.ready.v1` says.

The compacted topic is the truth: every start reads it from the beginning (a broadcast
subscription), the newest record per domain wins. The gate also crowns a model itself right
after publishing its `model.ready`, so the next candidate is judged against it even before the
record comes back. To know whether the view is complete, it tracks how far it has read each
partition, to compare with the log's end offsets.
"""

from __future__ import annotations

from adaptmesh_schemas.events import ModelReady


class Champions:
    """Current `model.ready` per domain, and the read position in the topic."""

    def __init__(self) -> None:
        self._by_domain: dict[str, ModelReady] = {}
        self._next_offsets: dict[int, int] = {}

    def current(self, domain: str) -> ModelReady | None:
        return self._by_domain.get(domain)

    def crown(self, ready: ModelReady) -> None:
        """`ready` is now the domain's production model (replaying the same one is a no-op)."""
        self._by_domain[ready.domain] = ready

    def read(self, partition: int, offset: int) -> None:
        """The record at `offset` of `partition` has been applied."""
        if offset + 1 > self._next_offsets.get(partition, 0):
            self._next_offsets[partition] = offset + 1

    def lag(self, end_offsets: dict[int, int]) -> dict[int, int]:
        """Records per partition still unread before `end_offsets` (only those lagging)."""
        lagging = {
            partition: end - self._next_offsets.get(partition, 0)
            for partition, end in end_offsets.items()
        }
        return {partition: behind for partition, behind in lagging.items() if behind > 0}
