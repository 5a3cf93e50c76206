"""Thin subscribers: a change in, a dataset version announced."""

from __future__ import annotations

import asyncio

from adaptmesh_ingestion.domain import Change, ChangeRejected
from adaptmesh_ingestion.ledger import DatasetLedger
from adaptmesh_kit import EventContext, RejectedEvent


class IngestionHandlers:
    """Turns every accepted change into a published `DatasetVersioned`; a rejected one is
    dead-lettered with the reason."""

    def __init__(self, ledger: DatasetLedger) -> None:
        self._ledger = ledger
        # Changes and feedback arrive on two subscriptions that interleave; one domain's
        # versions must be made and announced one at a time, in order.
        self._lock = asyncio.Lock()

    async def on_change(self, change: Change, context: EventContext) -> None:
        async with self._lock:
            try:
                # Off the event loop: snapshots are file writes and can be large.
                versioned = await asyncio.to_thread(
                    self._ledger.record, change, context.envelope.id
                )
            except ChangeRejected as rejection:
                raise RejectedEvent(str(rejection)) from rejection
            await context.publish(versioned)
