"""How far a broadcast subscription has read its topic, to tell when it has caught up.

Every record counts — handled, skipped as meant for others, or dead-lettered — so a tail of
records the handler never sees cannot keep a reader waiting for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping


class ReadPositions:
    """The next offset to read per partition, and a way to wait for given ends."""

    def __init__(self) -> None:
        self._next: dict[int, int] = {}
        self._moved = asyncio.Condition()

    async def advance(self, partition: int, offset: int) -> None:
        """The record at `offset` of `partition` has been consumed."""
        if offset + 1 > self._next.get(partition, 0):
            self._next[partition] = offset + 1
        async with self._moved:
            self._moved.notify_all()

    def behind(self, bounds: Mapping[int, tuple[int, int]]) -> dict[int, int]:
        """Records per partition not yet read before each end of `bounds` (first, end);
        partitions whose first record is at or past the end (all deleted) count as read."""
        lagging = {
            partition: end - max(first, self._next.get(partition, 0))
            for partition, (first, end) in bounds.items()
        }
        return {partition: behind for partition, behind in lagging.items() if behind > 0}

    async def reach(self, bounds: Mapping[int, tuple[int, int]]) -> None:
        """Return once every partition has been read up to its end in `bounds`."""
        async with self._moved:
            await self._moved.wait_for(lambda: not self.behind(bounds))
