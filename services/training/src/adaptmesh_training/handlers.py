"""The training service's subscribers: a retrain request in, a run's events out."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from adaptmesh_kit import ArtifactStore, EventContext
from adaptmesh_ml import TrainingProgress as StepProgress
from adaptmesh_ml import resolve_base_model, save_model
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.events import DatasetVersioned, ModelReady, RetrainRequested
from adaptmesh_training.failures import DatasetMismatchError
from adaptmesh_training.ledger import TrainingLedger
from adaptmesh_training.lineage import build_lineage, code_version, model_version_for, new_run_id
from adaptmesh_training.ray_cluster import RayCluster
from adaptmesh_training.run_events import (
    failed_event,
    progress_event,
    started_event,
    trained_event,
)
from adaptmesh_training.runner import RunSpec, train_with_progress
from adaptmesh_training.settings import TrainingSettings

log = logging.getLogger(__name__)


class TrainingHandlers:
    """Handlers sharing one Ray connection and one ledger."""

    def __init__(
        self,
        settings: TrainingSettings,
        artifacts: ArtifactStore,
        cluster: RayCluster,
        ledger: TrainingLedger,
    ) -> None:
        self._settings = settings
        self._artifacts = artifacts
        self._cluster = cluster
        self._ledger = ledger
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    async def on_retrain_requested(self, event: RetrainRequested, context: EventContext) -> None:
        """Train a candidate; publish started, progress, then trained or failed.

        A failed run is reported once and the handler returns: raising would make the kit run
        the same doomed training again.
        """
        run_id = new_run_id()
        try:
            snapshot = await asyncio.to_thread(self._load_snapshot, event)
        except Exception as error:  # noqa: BLE001  (reported as training.failed)
            await self._fail(context, event, run_id, error)
            return

        self._ledger.record_dataset(event.domain, event.dataset_version, snapshot.parent_version)
        if self._ledger.is_stale(event.domain, event.dataset_version):
            log.info(
                "skipping stale request %s: %s already has a model on a newer dataset than %s",
                context.envelope.id,
                event.domain,
                event.dataset_version,
            )
            return

        try:
            # Checked here, in seconds, rather than by every Ray worker after its start-up.
            await asyncio.to_thread(resolve_base_model, snapshot.base_model)
        except Exception as error:  # noqa: BLE001  (reported as training.failed)
            await self._fail(context, event, run_id, error)
            return

        started_at = datetime.now(UTC)
        workers = self._settings.training_workers
        await context.publish(started_event(event, snapshot, run_id, workers))
        log.info("run %s: %s on dataset %s", run_id, event.domain, event.dataset_version)

        async def publish_progress(step: StepProgress) -> None:
            await context.publish(progress_event(event.domain, run_id, step))

        spec = RunSpec(
            run_id=run_id,
            snapshot=snapshot,
            workers=workers,
            max_failures=self._settings.training_max_failures,
            progress_every_steps=self._settings.training_progress_every_steps,
            storage_dir=self._storage_dir(),
            cpus_per_worker=self._settings.cpus_per_worker(),
        )
        try:
            await self._cluster.ready()
            trained = await train_with_progress(spec, publish_progress)
            model_version = model_version_for(run_id, started_at)
            lineage = build_lineage(
                request=event,
                snapshot=snapshot,
                trained=trained,
                parent_model_version=self._ledger.champion(event.domain),
                correlation_id=context.envelope.correlationid,
                code=code_version(),
            )
            artifact, manifest = await asyncio.to_thread(
                save_model,
                self._artifacts,
                trained,
                domain=event.domain,
                model_version=model_version,
                lineage=lineage,
            )
        except Exception as error:
            log.exception("run %s failed", run_id)
            await self._fail(context, event, run_id, error)
            return

        self._ledger.record_trained(event.domain, event.dataset_version)
        await context.publish(
            trained_event(
                event.domain,
                run_id=run_id,
                model_version=model_version,
                artifact=artifact,
                trained=trained,
                lineage=manifest.lineage,
                dataset=event.dataset,
            )
        )
        log.info("run %s: model %s at %s", run_id, model_version, artifact.uri)

    async def on_dataset_versioned(self, event: DatasetVersioned, context: EventContext) -> None:
        """Learn dataset ancestry, so a late request for an older version is recognised."""
        self._ledger.record_dataset(event.domain, event.dataset_version, event.parent_version)

    async def on_model_ready(self, event: ModelReady, context: EventContext) -> None:
        """Remember each domain's champion: a new candidate's parent in its lineage."""
        self._ledger.record_champion(event.domain, event.model_version)

    def _load_snapshot(self, event: RetrainRequested) -> DatasetSnapshot:
        """The request's dataset, digest-verified, and checked to be the domain's."""
        snapshot = self._artifacts.get_document(event.dataset, DatasetSnapshot)
        if snapshot.domain != event.domain:
            raise DatasetMismatchError(
                f"dataset {event.dataset.uri} belongs to {snapshot.domain!r}, not {event.domain!r}"
            )
        return snapshot

    async def _fail(
        self, context: EventContext, event: RetrainRequested, run_id: str, error: Exception
    ) -> None:
        failure = failed_event(event.domain, run_id, error)
        log.warning("run %s for %s failed: %s", run_id, event.domain, failure.error)
        await context.publish(failure)

    def _storage_dir(self) -> Path:
        """Where Ray Train keeps a run's checkpoints until the model is in the artifact store."""
        if self._settings.state_dir is not None:
            return self._settings.state_dir / "ray"
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="adaptmesh-training-")
        return Path(self._scratch.name) / "ray"
