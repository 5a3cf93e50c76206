"""Thin subscribers: a change in, a dataset version announced; a release fanned out."""

from __future__ import annotations

import asyncio
import logging

from adaptmesh_ingestion.base_models import admit_release
from adaptmesh_ingestion.domain import Change, ChangeRejected
from adaptmesh_ingestion.fleet import FleetIndex, ReleaseRejected
from adaptmesh_ingestion.ledger import DatasetLedger
from adaptmesh_kit import EventContext, RejectedEvent
from adaptmesh_kit.faults import fault_point
from adaptmesh_schemas import FLEET_DOMAIN, Stream
from adaptmesh_schemas.events import BaseModelReleased, DatasetVersioned

log = logging.getLogger(__name__)


class IngestionHandlers:
    """Turns every accepted change into a published `DatasetVersioned`; a rejected one is
    dead-lettered with the reason. A base-model release becomes one `change.base_model` per
    domain it concerns, applied later like any other change in that domain's partition."""

    def __init__(
        self, ledger: DatasetLedger, fleet: FleetIndex, *, fleet_sync_seconds: float
    ) -> None:
        self._ledger = ledger
        self._fleet = fleet
        self._fleet_sync_seconds = fleet_sync_seconds
        # Changes and feedback arrive on two subscriptions that interleave; one domain's
        # versions must be made and announced one at a time, in order.
        self._lock = asyncio.Lock()

    async def on_change(self, change: Change, context: EventContext) -> None:
        if change.domain == FLEET_DOMAIN:
            raise RejectedEvent(
                f"{change.event_name} for {FLEET_DOMAIN!r} rejected: that key is reserved for "
                "fleet-wide events and names no domain"
            )
        async with self._lock:
            try:
                # Off the event loop: snapshots are file writes and can be large.
                versioned = await asyncio.to_thread(
                    self._ledger.record, change, context.envelope.id
                )
            except ChangeRejected as rejection:
                raise RejectedEvent(str(rejection)) from rejection
            fault_point("ingestion.recorded")  # the version is written, not yet announced
            await context.publish(versioned)

    async def on_dataset_versioned(self, version: DatasetVersioned, context: EventContext) -> None:
        """Follow every domain's base model (the whole topic, at every start)."""
        self._fleet.learn(version)

    async def on_release(self, release: BaseModelReleased, context: EventContext) -> None:
        release_id = context.envelope.id
        try:
            # Off the event loop: it looks at installed packages and the file system.
            await asyncio.to_thread(admit_release, release, release_id)
        except ReleaseRejected as rejection:
            raise RejectedEvent(str(rejection)) from rejection
        if self._fleet_sync_seconds > 0:
            # Versions written before now, by any instance, must be in the index, or a domain
            # still on the old base could be missed.
            await context.app.caught_up(Stream.DATASETS, within_seconds=self._fleet_sync_seconds)
        try:
            fan_out = self._fleet.plan(release, release_id)
        except ReleaseRejected as rejection:
            raise RejectedEvent(str(rejection)) from rejection
        for domain, why in fan_out.passed_over:
            log.warning("base model release %s passes over %s: %s", release_id, domain, why)
        # Not under the lock: these are applied later, each in its own domain's partition.
        for move in fan_out.moves:
            await context.publish(move.change, event_id=move.event_id)
        log.info(
            "base model release %s moves %d domain(s) to %s: %s",
            release_id,
            len(fan_out.moves),
            release.new_base.model_id,
            ", ".join(move.change.domain for move in fan_out.moves),
        )
