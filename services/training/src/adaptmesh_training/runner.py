"""The runner: takes runs from the ledger one at a time and carries each to its end.

It runs beside the consumer (started and stopped with the broker, like drift-sensing's relay)
so that a run never holds a Kafka record. For each open run, in order:

1. A `saved` run (the service stopped between storing and announcing) is announced.
2. A queued run is skipped when it is stale — its dataset is a strict ancestor of one already
   trained for the domain, or a later open request of the domain descends from it.
3. The base model must resolve, and the domain's residency (if any) must have an artifact root
   and a Ray node offering it (else `training.failed`, not retryable: it is checked before
   scheduling, so the run never waits for a node that does not exist).
4. `training.started` once (its event id is fixed by the run id), then the warm workers train;
   rank 0's progress is published as `training.progress` and each checkpoint recorded in the
   ledger as it is written. A newer request for the domain cancels the run in flight.
5. A worker that dies is replaced and the run resumes from its last checkpoint, up to
   `MESH_TRAINING_MAX_FAILURES` times; so does a run the service itself was killed during.
6. The model is stored, the run marked `saved`, `model.trained` published (fixed event id),
   then the run marked `done`. Exactly one `model.trained` per request: a crash before the
   publish repeats it with the same id, which consumers drop as already seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from opentelemetry import context as otel_context
from opentelemetry import propagate
from ray.exceptions import RayActorError

from adaptmesh_kit import ArtifactStore, MeshApp
from adaptmesh_ml import (
    TrainingCancelledError,
    base_model_sha256,
    load_model_files,
    resolve_base_model,
    save_model,
)
from adaptmesh_ml import TrainingProgress as StepProgress
from adaptmesh_schemas import MeshEvent, Stream
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_training.failures import (
    DatasetMismatchError,
    WorkersKeptFailingError,
    describe_failure,
)
from adaptmesh_training.ledger import TrainingLedger
from adaptmesh_training.lineage import build_lineage, code_version, model_version_for
from adaptmesh_training.ray_cluster import RayCluster, require_residency
from adaptmesh_training.run_events import (
    failed_event,
    progress_event,
    started_event,
    trained_event,
)
from adaptmesh_training.runs import RunLedger, RunRecord, RunStatus
from adaptmesh_training.settings import TrainingSettings
from adaptmesh_training.workers import (
    CheckpointSaved,
    Progress,
    RunEvent,
    RunJob,
    RunOutcome,
    WorkerGroup,
)

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 30.0
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
# Base models loaded into the workers at start: those of the most recently seen datasets.
WARM_BASES = 2


class RunRunner:
    """Runs between `start()` and `stop()`; `wake()` after recording a request."""

    def __init__(
        self,
        app: MeshApp,
        *,
        settings: TrainingSettings,
        runs: RunLedger,
        knowledge: TrainingLedger,
        cluster: RayCluster,
        workers: WorkerGroup,
    ) -> None:
        self._app = app
        self._settings = settings
        self._runs = runs
        self._knowledge = knowledge
        self._cluster = cluster
        self._workers = workers
        self._store: ArtifactStore = app.artifacts
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._warm: asyncio.Task[None] | None = None
        self._current: RunRecord | None = None
        self._caught_up_once = False

    async def start(self) -> None:
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Workers come up (torch imported, base models loaded) while nothing waits for them.
        self._warm = loop.create_task(self._warm_up(), name="training-warm-up")
        self._task = loop.create_task(self._loop(), name="training-runner")

    async def _warm_up(self) -> None:
        """Bring the workers up ahead of the first run, when the process is starting Ray
        anyway (the service does at start; an app used without Ray waits for a run)."""
        if not self._cluster.requested:
            return
        await self._cluster.ready()
        if not self._workers.started:
            await asyncio.to_thread(self._workers.start)
        await self._caught_up()
        for spec in self._knowledge.base_models()[-WARM_BASES:]:
            try:
                await asyncio.to_thread(self._workers.preload, spec)
            except Exception:
                log.warning("could not preload base model %s", spec.model_id, exc_info=True)

    async def _workers_ready(self, residency: str | None) -> None:
        if self._warm is not None:
            try:
                await self._warm
            except Exception:
                log.warning("warming up the workers failed", exc_info=True)
        await self._cluster.ready()
        await asyncio.to_thread(self._workers.place, residency)

    async def _require_residency(self, residency: str | None) -> None:
        """A domain with a residency needs an artifact root for it (`ResidencyError`) and a
        Ray node offering it (`ResidencyUnavailableError`)."""
        self._store.for_residency(residency)
        if residency is not None:
            await self._cluster.ready()
            await asyncio.to_thread(require_residency, residency)

    async def stop(self) -> None:
        """Stop taking runs. A run in flight is abandoned, not failed: it stays `running` with
        its last checkpoint and resumes when the service starts again."""
        task, self._task = self._task, None
        if self._warm is not None:
            self._warm.cancel()
        if task is None:
            return
        self._workers.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, STOP_TIMEOUT_SECONDS)

    def wake(self) -> None:
        """Something was recorded: look at the ledger again, and cancel the run in flight if
        a newer request of its domain made it stale."""
        current = self._current
        if current is not None and self._superseded_by(current):
            log.info(
                "run %s: a newer dataset of %s arrived; cancelling", current.run_id, current.domain
            )
            self._workers.cancel()
        self._wake.set()

    async def _loop(self) -> None:
        trouble = 0  # consecutive rounds that could not even report their outcome
        while True:
            self._wake.clear()
            record = self._runs.next_open()
            if record is None:
                await self._wake.wait()
                continue
            self._current = record
            try:
                try:
                    await self._carry(record)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.exception("run %s failed", record.run_id)
                    await self._fail(self._runs.get(record.run_id) or record, error)
                trouble = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                # Reporting failed too (the broker is away?): the run stays open and is taken
                # up again after a pause, rather than being lost or spun on.
                delay = RETRY_SECONDS[min(trouble, len(RETRY_SECONDS) - 1)]
                trouble += 1
                log.exception("run %s could not be reported; again in %.0f s", record.run_id, delay)
                await asyncio.sleep(delay)
            finally:
                self._current = None

    async def _carry(self, record: RunRecord) -> None:
        if record.status is RunStatus.SAVED:
            await self._announce(record)
            return
        try:
            snapshot = await asyncio.to_thread(self._load_snapshot, record)
        except Exception as error:  # noqa: BLE001  (reported as training.failed)
            await self._fail(record, error)
            return
        request = record.request
        self._knowledge.record_dataset(
            request.domain, request.dataset_version, snapshot.parent_version
        )
        if record.status is RunStatus.QUEUED:
            stale = self._stale_reason(record)
            if stale:
                log.info("skipping run %s of %s: %s", record.run_id, record.domain, stale)
                self._runs.update(
                    record.model_copy(update={"status": RunStatus.SKIPPED, "note": stale})
                )
                return
        try:
            await asyncio.to_thread(resolve_base_model, snapshot.base_model)
            await self._require_residency(snapshot.recipe.residency)
        except Exception as error:  # noqa: BLE001  (reported as training.failed)
            await self._fail(record, error)
            return
        if record.status is RunStatus.QUEUED:
            record = await self._begin(record, snapshot)
        await self._train(record, snapshot)

    async def _begin(self, record: RunRecord, snapshot: DatasetSnapshot) -> RunRecord:
        """First start: fix the parent (the champion now) and announce the run."""
        await self._caught_up()
        record = record.model_copy(
            update={
                "status": RunStatus.RUNNING,
                "started_at": datetime.now(UTC),
                "parent": self._knowledge.champion_artifact(record.domain),
                "parent_version": self._knowledge.champion(record.domain),
            }
        )
        # Announced before it is recorded as running: a crash in between announces it again
        # with the same event id, which consumers drop.
        await self._publish(
            record,
            started_event(record.request, snapshot, record.run_id, self._settings.training_workers),
            suffix="started",
        )
        self._runs.update(record)
        log.info(
            "run %s: %s on dataset %s", record.run_id, record.domain, record.request.dataset_version
        )
        return record

    async def _train(self, record: RunRecord, snapshot: DatasetSnapshot) -> None:
        await self._workers_ready(snapshot.recipe.residency)
        while True:
            record = self._runs.update(record.model_copy(update={"attempts": record.attempts + 1}))
            if record.attempts > self._settings.training_max_failures + 1:
                raise WorkersKeptFailingError(
                    f"run {record.run_id} lost its workers {record.attempts - 1} times"
                )
            if record.checkpoint is not None:
                log.info("run %s: resuming from step %d", record.run_id, record.checkpoint_step)
            job = RunJob(
                run_id=record.run_id,
                dataset=record.request.dataset,
                parent=record.parent,
                checkpoint=record.checkpoint,
                progress_every_steps=self._settings.training_progress_every_steps,
                checkpoint_every_steps=self._settings.training_checkpoint_every_steps,
            )
            if self._superseded_by(record):  # a newer request came while this one got ready
                await self._cancelled(record)
                return
            try:
                outcome = await self._workers.run(job, self._on_event(record.run_id))
                break
            except TrainingCancelledError:
                await self._cancelled(record)
                return
            except RayActorError as error:
                log.warning(
                    "run %s: a worker died (%s); restarting the workers", record.run_id, error
                )
                await asyncio.to_thread(self._workers.restart)
                record = self._runs.get(record.run_id) or record
        record = self._runs.get(record.run_id) or record
        await self._save(record, snapshot, outcome)

    def _on_event(self, run_id: str) -> Callable[[RunEvent], Awaitable[None]]:
        async def handle(event: RunEvent) -> None:
            record = self._runs.get(run_id)
            if record is None:
                return
            if isinstance(event, Progress):
                step = StepProgress(event.epoch, event.step, event.total_steps, event.loss)
                await self._publish(record, progress_event(record.domain, run_id, step))
            elif isinstance(event, CheckpointSaved):
                self._runs.update(
                    record.model_copy(
                        update={"checkpoint": event.checkpoint, "checkpoint_step": event.step}
                    )
                )

        return handle

    async def _save(
        self, record: RunRecord, snapshot: DatasetSnapshot, outcome: RunOutcome
    ) -> None:
        trained = outcome.trained
        if record.started_at is None:
            raise RuntimeError(f"run {record.run_id} has no start time")
        model_version = model_version_for(record.run_id, record.started_at)
        lineage = build_lineage(
            request=record.request,
            snapshot=snapshot,
            trained=trained,
            parent_version=record.parent_version,
            parent_artifact=record.parent if trained.init == "champion" else None,
            base_sha256=await asyncio.to_thread(base_model_sha256, snapshot.base_model),
            correlation_id=record.correlation_id,
            code=code_version(),
        )
        artifact, _ = await asyncio.to_thread(
            save_model,
            self._store.for_residency(snapshot.recipe.residency),
            trained,
            domain=record.domain,
            model_version=model_version,
            lineage=lineage,
        )
        log.info("run %s: %s (%s)", record.run_id, model_version, outcome.start_note)
        record = self._runs.update(
            record.model_copy(
                update={
                    "status": RunStatus.SAVED,
                    "model": artifact,
                    "model_version": model_version,
                }
            )
        )
        await self._announce(record)

    async def _announce(self, record: RunRecord) -> None:
        if record.model is None or record.model_version is None:
            raise RuntimeError(f"run {record.run_id} is marked saved without a model")
        manifest, _ = await asyncio.to_thread(load_model_files, self._store, record.model)
        await self._publish(
            record,
            trained_event(
                record.domain,
                run_id=record.run_id,
                model_version=record.model_version,
                artifact=record.model,
                labels=manifest.labels,
                metrics=manifest.metrics,
                lineage=manifest.lineage,
                dataset=record.request.dataset,
            ),
            suffix="trained",
        )
        self._knowledge.record_trained(record.domain, record.request.dataset_version)
        self._runs.update(record.model_copy(update={"status": RunStatus.DONE}))
        log.info("run %s: model %s at %s", record.run_id, record.model_version, record.model.uri)

    async def _cancelled(self, record: RunRecord) -> None:
        newer = self._superseded_by(record)
        note = f"cancelled: superseded by dataset {newer}" if newer else "cancelled"
        await self._publish(
            record,
            failed_event(record.domain, record.run_id, TrainingCancelledError(note)),
            suffix="failed",
        )
        self._runs.update(record.model_copy(update={"status": RunStatus.CANCELLED, "note": note}))
        log.info("run %s: %s", record.run_id, note)

    async def _fail(self, record: RunRecord, error: BaseException) -> None:
        """Report the run failed, then close it (a failed publish leaves it open)."""
        failure = describe_failure(error)
        log.warning("run %s for %s failed: %s", record.run_id, record.domain, failure.error)
        await self._publish(
            record, failed_event(record.domain, record.run_id, error), suffix="failed"
        )
        self._runs.update(
            record.model_copy(update={"status": RunStatus.FAILED, "note": failure.error})
        )

    def _stale_reason(self, record: RunRecord) -> str | None:
        version = record.request.dataset_version
        if self._knowledge.is_stale(record.domain, version):
            return f"a model exists on a newer dataset than {version}"
        newer = self._superseded_by(record)
        if newer:
            return f"a newer request (dataset {newer}) of the domain is waiting"
        return None

    def _superseded_by(self, record: RunRecord) -> str | None:
        """The dataset version of a later open request of the domain that descends from this
        run's dataset, if any."""
        version = record.request.dataset_version
        for later in self._runs.open_after(record):
            later_version = later.request.dataset_version
            if version in self._knowledge.ancestors(record.domain, later_version):
                return later_version
        return None

    async def _caught_up(self) -> None:
        """Champions and dataset ancestry are learnt from broadcast reads of two topics; the
        first run's parent is only fixed once those reads have reached what the topics held.
        After that the reads follow the topics live, so later runs do not ask again (asking
        costs a fresh connection per topic, about a second of every change)."""
        within = self._settings.training_catch_up_seconds
        if within <= 0 or self._caught_up_once:
            return
        for stream in (Stream.MODELS_READY, Stream.DATASETS):
            try:
                await self._app.caught_up(stream, within_seconds=within)
            except Exception as error:  # noqa: BLE001  (a slow topic must not block training)
                log.warning(
                    "not caught up with %s (%s); going on with what is known", stream, error
                )
                return
        self._caught_up_once = True

    async def _publish(
        self, record: RunRecord, event: MeshEvent, *, suffix: str | None = None
    ) -> None:
        # Published outside the handler that consumed the request: attach its trace context
        # so the run's events stay in the change's trace.
        token = otel_context.attach(propagate.extract(record.trace_context))
        try:
            await self._app.publish(
                event,
                correlation_id=record.correlation_id,
                causation_id=record.request_id,
                event_id=f"{record.run_id}.{suffix}" if suffix else None,
            )
        finally:
            otel_context.detach(token)

    def _load_snapshot(self, record: RunRecord) -> DatasetSnapshot:
        """The request's dataset, digest-verified, and checked to be the domain's."""
        snapshot = self._store.get_document(record.request.dataset, DatasetSnapshot)
        if snapshot.domain != record.domain:
            raise DatasetMismatchError(
                f"dataset {record.request.dataset.uri} belongs to {snapshot.domain!r}, "
                f"not {record.domain!r}"
            )
        return snapshot
