"""Warm training workers: long-lived Ray actors that keep torch imported and base models loaded.

A `TorchTrainer.fit()` per run cost 25-45 s before the first step (controller and worker
actors, process group, imports, model load). Here the service starts its workers once: N
`TrainingWorker` actors, each with its CPU share (and as many torch threads), joined in one
gloo process group when N > 1, each holding a `BaseModelCache`. A run is one remote call per
worker; with several workers it is real distributed data-parallel training (DDP over gloo, a
`DistributedSampler` shard each), exactly as Ray Train would set it up, minus the set-up.

The workers read the dataset, the champion and the checkpoint from the artifact store, and
rank 0 writes checkpoints there, so the driver only moves references. Rank 0 talks to the
driver through one `RunControl` actor: progress and checkpoints go in, the driver drains them;
a cancel goes the other way and is answered at the next progress report.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field

from adaptmesh_ml import TrainedModel
from adaptmesh_schemas.documents import ModelManifest
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec
from adaptmesh_training.ray_cluster import RESIDENCY_SHARE, residency_resource

log = logging.getLogger(__name__)

DRAIN_SECONDS = 0.5


class RunJob(BaseModel):
    """What every worker needs for one run (references only; the workers read the bytes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(description="The run.")
    dataset: ArtifactRef = Field(description="The dataset snapshot to train on.")
    parent: ArtifactRef | None = Field(description="The champion to warm-start from, if any.")
    checkpoint: ArtifactRef | None = Field(description="The checkpoint to resume from, if any.")
    progress_every_steps: int = Field(ge=1, description="Steps between progress reports.")
    checkpoint_every_steps: int = Field(ge=1, description="Steps between checkpoints.")


@dataclass(frozen=True)
class Progress:
    epoch: int
    step: int
    total_steps: int
    loss: float


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    checkpoint: ArtifactRef


RunEvent = Progress | CheckpointSaved


@dataclass(frozen=True)
class RunOutcome:
    """Rank 0's result: the trained model and how it started."""

    trained: TrainedModel
    parent: ModelManifest | None
    start_note: str


@ray.remote(num_cpus=0)
class RunControl:
    """The mailbox between rank 0 and the driver (one per worker group, reset per run)."""

    def __init__(self) -> None:
        self._events: list[RunEvent] = []
        self._cancelled = False

    def reset(self) -> None:
        self._events, self._cancelled = [], False

    def post(self, event: RunEvent) -> bool:
        """Record `event`; the answer says whether the run should go on."""
        self._events.append(event)
        return not self._cancelled

    def keep_going(self) -> bool:
        return not self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def drain(self) -> list[RunEvent]:
        events, self._events = self._events, []
        return events


@ray.remote
class TrainingWorker:
    """One rank of the warm worker group. Methods run one at a time (a plain actor)."""

    def __init__(
        self,
        rank: int,
        world_size: int,
        threads: int,
        store_root: str,
        *,
        residency_roots: dict[str, str],
        residency: str | None,
    ) -> None:
        import torch  # noqa: PLC0415  (imported in the worker process, once)

        from adaptmesh_kit import ArtifactStore  # noqa: PLC0415
        from adaptmesh_ml import BaseModelCache  # noqa: PLC0415

        torch.set_num_threads(threads)
        self._rank = rank
        self._world_size = world_size
        # Reads datasets and parents from any configured root; writes checkpoints under the
        # residency's root only.
        self._store = ArtifactStore(store_root, residency_roots=residency_roots).for_residency(
            residency
        )
        self._bases = BaseModelCache()

    def pid(self) -> int:
        """This worker's process id (operators and fault tests kill it by that)."""
        return os.getpid()

    def address(self) -> tuple[str, int]:
        """Where rank 0 can be reached for the process group's rendezvous."""
        host = str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        return host, port

    def join(self, host: str, port: int) -> None:
        import torch.distributed as dist  # noqa: PLC0415

        dist.init_process_group(
            "gloo",
            init_method=f"tcp://{host}:{port}",
            rank=self._rank,
            world_size=self._world_size,
        )

    def preload(self, spec_json: str) -> None:
        """Load a base model ahead of the first run that needs it."""
        self._bases.get(BaseModelSpec.model_validate_json(spec_json))

    def train(self, job_json: str, control: Any) -> RunOutcome | None:
        from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

        from adaptmesh_ml import (  # noqa: PLC0415
            TrainingProgress,
            TrainingState,
            WarmStart,
            WarmStartError,
            plan_warm_start,
            train_classifier,
        )
        from adaptmesh_schemas.documents import DatasetSnapshot  # noqa: PLC0415
        from adaptmesh_training.checkpoints import (  # noqa: PLC0415
            load_checkpoint,
            store_checkpoint,
        )

        job = RunJob.model_validate_json(job_json)
        snapshot = self._store.get_document(job.dataset, DatasetSnapshot)
        plan = plan_warm_start(self._store, snapshot, job.parent)
        resume = (
            load_checkpoint(self._store, job.run_id, job.checkpoint) if job.checkpoint else None
        )

        def on_progress(step: TrainingProgress) -> None:
            ray.get(
                control.post.remote(Progress(step.epoch, step.step, step.total_steps, step.loss))
            )

        def on_checkpoint(state: TrainingState) -> None:
            ref = store_checkpoint(self._store, job.run_id, state)
            ray.get(control.post.remote(CheckpointSaved(state.step, ref)))

        def keep_going() -> bool:
            return bool(ray.get(control.keep_going.remote()))

        def run(warm_start: WarmStart | None) -> TrainedModel:
            return train_classifier(
                snapshot,
                bases=self._bases,
                warm_start=warm_start,
                resume=resume,
                on_progress=on_progress,
                progress_every_steps=job.progress_every_steps,
                on_checkpoint=on_checkpoint,
                checkpoint_every_steps=job.checkpoint_every_steps,
                keep_going=keep_going,
                prepare_model=DistributedDataParallel if self._world_size > 1 else None,
                world_rank=self._rank,
            )

        note = plan.reason
        try:
            trained = run(plan.warm_start)
        except WarmStartError as error:
            # Raised before the first step (the adapter's shape is only known once resolved).
            note = f"fresh adapter: {error}"
            trained = run(None)
        if self._rank != 0:
            return None
        return RunOutcome(trained=trained, parent=plan.parent, start_note=note)


class WorkerGroup:
    """The driver's handle on the warm workers. Start once; `run` many times."""

    def __init__(
        self,
        workers: int,
        threads_per_worker: int,
        store_root: str,
        residency_roots: dict[str, str] | None = None,
    ) -> None:
        self.workers = workers
        self._threads = threads_per_worker
        self._store_root = store_root
        self._residency_roots = dict(residency_roots or {})
        self.residency: str | None = None
        """The residency the workers were placed for (None: any node)."""
        self._actors: list[Any] = []
        self._pids: list[int] = []
        self._control: Any = None

    @property
    def started(self) -> bool:
        return bool(self._actors)

    def start(self, residency: str | None = None) -> None:
        """Create the actors and their process group (blocking; call it off the event loop),
        on nodes offering `residency` when one is given (see `require_residency` first)."""
        self.residency = residency
        resources = {residency_resource(residency): RESIDENCY_SHARE} if residency else {}
        self._control = RunControl.options(num_cpus=0).remote()  # type: ignore[attr-defined]
        self._actors = [
            TrainingWorker.options(  # type: ignore[attr-defined]
                num_cpus=self._threads, max_restarts=0, resources=resources
            ).remote(
                rank,
                self.workers,
                self._threads,
                self._store_root,
                residency_roots=self._residency_roots,
                residency=residency,
            )
            for rank in range(self.workers)
        ]
        # Asked now: a busy actor answers only after the run in hand.
        self._pids = [int(pid) for pid in ray.get([actor.pid.remote() for actor in self._actors])]
        if self.workers > 1:
            host, port = ray.get(self._actors[0].address.remote())
            ray.get([actor.join.remote(host, port) for actor in self._actors])
        log.info("%d warm training worker(s) up, %d threads each", self.workers, self._threads)

    def preload(self, spec: BaseModelSpec) -> None:
        ray.get([actor.preload.remote(spec.model_dump_json()) for actor in self._actors])

    def restart(self) -> None:
        """Replace every actor (a lost rank leaves the process group unusable)."""
        self.stop()
        self.start(self.residency)

    def place(self, residency: str | None) -> None:
        """Have the workers on nodes offering `residency` (and writing under its root): the
        warm workers are replaced when they were placed for another one."""
        if self.started and self.residency == residency:
            return
        self.stop()
        self.start(residency)

    def stop(self) -> None:
        for actor in [*self._actors, self._control]:
            if actor is not None:
                ray.kill(actor)
        self._actors, self._pids, self._control = [], [], None

    def cancel(self) -> None:
        if self._control is not None:
            self._control.cancel.remote()

    def pids(self) -> list[int]:
        """The worker processes' ids, rank by rank."""
        return list(self._pids)

    async def run(self, job: RunJob, on_event: Callable[[RunEvent], Awaitable[None]]) -> RunOutcome:
        """Train `job` on every rank, handing rank 0's reports to `on_event` as they come.

        Raises what a worker raised (Ray wraps it in a `RayTaskError` that is also an
        instance of the original type) or `RayActorError` when a worker died."""
        await self._control.reset.remote()
        refs = [actor.train.remote(job.model_dump_json(), self._control) for actor in self._actors]
        everything = asyncio.gather(*(_awaitable(ref) for ref in refs))
        try:
            while True:
                done, _ = await asyncio.wait({everything}, timeout=DRAIN_SECONDS)
                for event in await self._control.drain.remote():
                    await on_event(event)
                if done:
                    break
            results = everything.result()
        finally:
            if not everything.done():
                everything.cancel()
        for event in await self._control.drain.remote():
            await on_event(event)
        outcome = results[0]
        if not isinstance(outcome, RunOutcome):
            raise TypeError(f"rank 0 returned {type(outcome).__name__}, not a RunOutcome")
        return outcome


async def _awaitable(ref: Any) -> Any:
    return await ref
