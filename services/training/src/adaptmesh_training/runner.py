"""One training run under Ray Train: `TorchTrainer` around `adaptmesh_ml.train_classifier`.

The driver side (`train_on_ray`) runs in the service process; `train_loop` runs in each Ray
Train worker. Rank 0 sends progress into a `ray.util.queue.Queue` while it trains, which the
service drains and publishes as the run goes, and returns the trained model as a checkpoint.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.util.queue import Empty, Queue

from adaptmesh_ml import TrainedModel, TrainingProgress, train_classifier
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_training.checkpoints import read_checkpoint, write_checkpoint

log = logging.getLogger(__name__)

# How long one wait for progress lasts before the driver looks whether the run has ended.
PROGRESS_POLL_SECONDS = 0.5
FIT_SECONDS_METRIC = "ray_fit_seconds"


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs (one argument, so fields can be added compatibly)."""

    run_id: str
    snapshot: DatasetSnapshot
    workers: int
    max_failures: int
    progress_every_steps: int
    storage_dir: Path
    cpus_per_worker: int = 1


class RunProducedNoModelError(RuntimeError):
    """Ray Train finished the run without a checkpoint, so there is no model to publish."""


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: train, and on rank 0 report the model as a checkpoint."""
    snapshot = DatasetSnapshot.model_validate_json(config["snapshot"])
    progress: Queue | None = config.get("progress")
    rank = ray.train.get_context().get_world_rank()

    def send_progress(step: TrainingProgress) -> None:
        if progress is not None:
            progress.put(step)

    trained = train_classifier(
        snapshot,
        on_progress=send_progress,
        progress_every_steps=config["progress_every_steps"],
        prepare_model=ray.train.torch.prepare_model,
        prepare_data_loader=ray.train.torch.prepare_data_loader,
        world_rank=rank,
    )
    # Every rank reports once (Ray Train pairs the reports up); only rank 0 carries the model.
    if rank != 0:
        ray.train.report(trained.metrics)
        return
    with tempfile.TemporaryDirectory(prefix="adaptmesh-checkpoint-") as directory:
        write_checkpoint(trained, Path(directory))
        ray.train.report(trained.metrics, checkpoint=Checkpoint.from_directory(directory))


def train_on_ray(spec: RunSpec, progress: Queue | None = None) -> TrainedModel:
    """Run `train_loop` under `TorchTrainer` and return rank 0's model (blocking).

    Raises Ray Train's `TrainingFailedError` when the run failed after its retries. The run's
    storage folder is removed afterwards: the model's durable copy is the artifact store's.
    """
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "snapshot": spec.snapshot.model_dump_json(),
            "progress": progress,
            "progress_every_steps": spec.progress_every_steps,
        },
        # Ray sets each worker's torch threads to its CPU share: one worker on one CPU would
        # leave the rest of the machine idle.
        scaling_config=ScalingConfig(
            num_workers=spec.workers,
            use_gpu=False,
            resources_per_worker={"CPU": spec.cpus_per_worker},
        ),
        run_config=RunConfig(
            storage_path=str(spec.storage_dir),
            name=spec.run_id,
            failure_config=FailureConfig(max_failures=spec.max_failures),
        ),
    )
    started = time.perf_counter()
    try:
        result = trainer.fit()
        if result.checkpoint is None:
            raise RunProducedNoModelError(f"run {spec.run_id} reported no checkpoint")
        with result.checkpoint.as_directory() as directory:
            trained = read_checkpoint(Path(directory))
    finally:
        shutil.rmtree(spec.storage_dir / spec.run_id, ignore_errors=True)
    fit_seconds = time.perf_counter() - started
    log.info(
        "run %s: fit %.1f s, of which training %.1f s",
        spec.run_id,
        fit_seconds,
        trained.metrics.get("train_seconds", float("nan")),
    )
    return replace(trained, metrics={**trained.metrics, FIT_SECONDS_METRIC: fit_seconds})


async def train_with_progress(
    spec: RunSpec, on_progress: Callable[[TrainingProgress], Awaitable[None]]
) -> TrainedModel:
    """`train_on_ray` in a thread, awaiting `on_progress` for each report as it arrives.

    Needs Ray started. If this coroutine is cancelled or `on_progress` fails, the queue goes
    away and the run fails at its next progress report instead of training on unobserved.
    """
    # The queue is an actor; it needs no CPU of its own (the workers need every one there is).
    queue = Queue(actor_options={"num_cpus": 0})
    fit = asyncio.wrap_future(_start_in_daemon_thread(spec, queue))
    try:
        while not fit.done():
            try:
                step = await queue.get_async(timeout=PROGRESS_POLL_SECONDS)
            except Empty:
                continue
            await on_progress(step)
        # Workers put synchronously, so once the run is over everything it sent is queued.
        for step in queue.get_nowait_batch(queue.qsize()):
            await on_progress(step)
        return await fit
    finally:
        queue.shutdown(force=True)
        if not fit.done():
            # Nobody awaits the abandoned run: log its end instead of an unretrieved exception.
            fit.add_done_callback(_log_abandoned_run)


def _start_in_daemon_thread(spec: RunSpec, queue: Queue) -> concurrent.futures.Future[TrainedModel]:
    """Run `train_on_ray` on a daemon thread rather than the event loop's executor: a service
    that stops mid-run must not wait for the run to finish (the loop's shutdown joins its
    executor's threads); stopping Ray ends the run instead."""
    outcome: concurrent.futures.Future[TrainedModel] = concurrent.futures.Future()

    def run() -> None:
        outcome.set_running_or_notify_cancel()
        try:
            outcome.set_result(train_on_ray(spec, queue))
        except BaseException as error:  # noqa: BLE001  (handed to the awaiting coroutine)
            outcome.set_exception(error)

    threading.Thread(target=run, name=f"ray-run-{spec.run_id[:6]}", daemon=True).start()
    return outcome


def _log_abandoned_run(fit: asyncio.Future[TrainedModel]) -> None:
    if not fit.cancelled() and fit.exception() is not None:
        log.warning("an abandoned training run ended: %s", fit.exception())
