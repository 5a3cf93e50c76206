"""When the start-up read of `mesh.models.ready.v1` has caught up.

A replica is ready once it has read every record that existed when it started: then it knows
each domain's production model as of its start. Two signals count, per partition:

* the handler saw the record just before the start-up end offset (the usual case), or
* the consumer's position passed the end offset and stayed there, with no handler running,
  across two observations: the tail records were ones the handler never sees (dead-lettered,
  or compacted away), and waiting for them would keep the replica unready forever.
"""

from __future__ import annotations

from collections.abc import Mapping


class StartupCatchUp:
    """Tracks the start-up read up to the end offsets that existed at start-up."""

    def __init__(self) -> None:
        self._remaining: dict[int, int] | None = None  # partition -> end offset to reach
        self._handled: dict[int, int] = {}  # partition -> highest offset handled
        self._settling: dict[int, int] = {}  # partition -> position seen once at/after end

    def begin(self, start_offsets: Mapping[int, int], end_offsets: Mapping[int, int]) -> None:
        """Set the target: the log as it was at start-up (partition -> first/next offset)."""
        self._remaining = {
            partition: end
            for partition, end in end_offsets.items()
            if end > start_offsets.get(partition, 0)
        }
        for partition, offset in self._handled.items():
            self._reached(partition, offset + 1)

    def handled(self, partition: int, offset: int) -> None:
        """The handler finished the record at `offset` (loaded, refused or skipped)."""
        self._handled[partition] = max(offset, self._handled.get(partition, -1))
        self._reached(partition, offset + 1)

    def observe_positions(self, positions: Mapping[int, int], *, handler_busy: bool) -> None:
        """The consumer's next-offset per partition, seen from outside the handler."""
        if self._remaining is None:
            return
        for partition, end in list(self._remaining.items()):
            position = positions.get(partition)
            if handler_busy or position is None or position < end:
                self._settling.pop(partition, None)
            elif self._settling.get(partition) == position:
                self._reached(partition, position)
            else:
                self._settling[partition] = position

    @property
    def ready(self) -> bool:
        """Whether every record present at start-up has been read."""
        return self._remaining is not None and not self._remaining

    def _reached(self, partition: int, next_offset: int) -> None:
        if self._remaining is not None and next_offset >= self._remaining.get(partition, 0):
            self._remaining.pop(partition, None)
            self._settling.pop(partition, None)
