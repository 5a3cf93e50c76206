"""Two DistributedDataParallel workers on gloo, as the warm training workers run them."""

from __future__ import annotations

import json
import math
import multiprocessing
from pathlib import Path

import pytest
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from adaptmesh_ml import ADAPTER_WEIGHTS_FILE, TrainingProgress, train_classifier
from tests.unit.adaptmesh_ml import tiny_domain

WORLD_SIZE = 2


def _worker(rank: int, rendezvous: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        reports: list[TrainingProgress] = []
        trained = train_classifier(
            tiny_domain.snapshot(epochs=2),
            on_progress=reports.append,
            progress_every_steps=1,
            prepare_model=DistributedDataParallel,
            world_rank=rank,
        )
    finally:
        dist.destroy_process_group()
    (Path(out_dir) / f"rank{rank}.safetensors").write_bytes(trained.files[ADAPTER_WEIGHTS_FILE])
    summary = {
        "steps": [report.step for report in reports],
        "metrics": trained.metrics,
        "world_size": trained.hyperparameters["world_size"],
    }
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(summary))


# Two fresh interpreters import torch and transformers: slow on a busy 2-core machine.
@pytest.mark.timeout(240)
def test_two_workers_share_the_data_and_end_with_the_same_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One thread per worker (spawned workers inherit the environment), as Ray would set it.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spawn = multiprocessing.get_context("spawn")
    workers = [
        spawn.Process(target=_worker, args=(rank, str(tmp_path / "rendezvous"), str(tmp_path)))
        for rank in range(WORLD_SIZE)
    ]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join(timeout=200)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
    assert [worker.exitcode for worker in workers] == [0] * WORLD_SIZE

    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    # Each worker sees half of the 42 texts: 21 in batches of 8, for 2 epochs.
    steps = 2 * math.ceil(math.ceil(42 / WORLD_SIZE) / 8)
    assert first["steps"] == list(range(1, steps + 1))
    assert second["steps"] == []  # only rank 0 reports
    assert first["world_size"] == second["world_size"] == WORLD_SIZE
    assert first["metrics"]["train_steps"] == second["metrics"]["train_steps"] == steps
    # Epoch losses are averaged over both shards, so every rank reports the same numbers.
    assert first["metrics"]["train_loss"] == second["metrics"]["train_loss"]
    assert first["metrics"]["train_loss"] < first["metrics"]["train_loss_first_epoch"]
    # DDP averages gradients, so both replicas hold the same weights.
    assert (tmp_path / "rank0.safetensors").read_bytes() == (
        tmp_path / "rank1.safetensors"
    ).read_bytes()
