"""`python -m adaptmesh_training` as operators run it: trains, takes its Ray down with it, and
after `kill -9` resumes the run it was in the middle of from its last checkpoint."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from adaptmesh_embedded.ports import free_port
from adaptmesh_gate.app import build_app as build_gate
from adaptmesh_gate.settings import GateSettings
from adaptmesh_kit import ArtifactStore, create_app
from adaptmesh_kit.topic_ends import end_offsets
from adaptmesh_schemas import Stream, decode_event, read_envelope
from adaptmesh_schemas.events import ModelReady, ModelTrained, TrainingProgress, TrainingStarted
from adaptmesh_training.app import RUNS_FILE
from adaptmesh_training.runs import RunLedger
from adaptmesh_training.settings import TrainingSettings
from tests.integration.adaptmesh_training.test_training_on_kafka import (
    caused_by,
    ended,
    retrain,
    training_events,
    training_settings,
)
from tests.integration.test_service_process import health
from tests.meshtest import eventually, mesh_settings, read_records
from tests.unit.adaptmesh_training.snapshots import tiny_snapshot

REPO = Path(__file__).resolve().parents[3]


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def service_env(settings: TrainingSettings, port: int, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "RAY_"))},
        "PYTHONPATH": str(REPO),
        "MESH_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MESH_TOPIC_PREFIX": settings.topic_prefix,
        "MESH_TOPIC_PARTITIONS": "1",
        "MESH_HEALTH_PORT": str(port),
        "MESH_STATE_DIR": str(settings.state_dir),
        "MESH_ARTIFACT_ROOT": settings.artifact_root,
        "MESH_CONSUMER_GROUP": settings.consumer_group or "",
        **extra,
    }


def start_service(env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as log:
        # Its own process group: Ray's processes join it, so the group outliving the service
        # would mean Ray was left running.
        return subprocess.Popen(
            [sys.executable, "-m", "adaptmesh_training"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def healthy(service: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    await eventually(lambda: health(port) == 204 or service.poll() is not None, 120)
    assert service.poll() is None, read_log(log_file)


def read_log(log_file: Path) -> str:
    return log_file.read_text()


def kill_group(service: subprocess.Popen[bytes]) -> None:
    if service.poll() is None or process_group_alive(service.pid):
        os.killpg(service.pid, signal.SIGKILL)
        service.wait()


@pytest.mark.timeout(600)
async def test_the_service_process_trains_and_leaves_no_ray_process_behind(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = training_settings(kafka_bootstrap, unique_name, tmp_path)
    port = free_port()
    log_file = tmp_path / "service.log"
    domain = f"d-{unique_name}"
    dataset = ArtifactStore(settings.artifact_root).put_document(tiny_snapshot(domain))
    service = start_service(service_env(settings, port), log_file)
    try:
        await healthy(service, port, log_file)
        async with create_app(settings, "probe") as probe:
            sent = await probe.publish(retrain(domain, "v1", dataset))
            seen = await training_events(
                kafka_bootstrap, probe.topic(Stream.TRAINING), lambda s: ended(s, sent)
            )
        assert isinstance(caused_by(seen, sent)[-1], ModelTrained), log_file.read_text()
        assert "Ray ready" in log_file.read_text()

        service.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(service.wait, 120)
        assert returncode == 128 + signal.SIGTERM
        await eventually(lambda: not process_group_alive(service.pid), 20, "Ray outlived it")
        assert "Ray stopped" in log_file.read_text()
    finally:
        kill_group(service)


@pytest.mark.timeout(900)
async def test_after_kill_9_the_run_resumes_past_its_checkpoint_and_is_promoted_once(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = training_settings(kafka_bootstrap, unique_name, tmp_path)
    port = free_port()
    log_file = tmp_path / "service.log"
    env = service_env(
        settings,
        port,
        MESH_TRAINING_PROGRESS_EVERY_STEPS="1",
        MESH_TRAINING_CHECKPOINT_EVERY_STEPS="4",
    )
    domain = f"d-{unique_name}"
    # 18 train examples in batches of 4, 10 epochs: 50 steps, long enough to be cut short.
    dataset = ArtifactStore(settings.artifact_root).put_document(tiny_snapshot(domain, epochs=10))
    shared = mesh_settings(kafka_bootstrap, unique_name, tmp_path).model_dump()
    gate_settings = GateSettings(**{**shared, "consumer_group": f"gate-{unique_name}"})
    gate = build_gate(gate_settings)
    service = start_service(env, log_file)
    try:
        await healthy(service, port, log_file)
        async with gate, create_app(settings, "probe") as probe:
            sent = await probe.publish(retrain(domain, "v1", dataset))
            await eventually(
                lambda: checkpoint_step(settings.state_dir) >= 8, 300, "no checkpoint yet"
            )
            os.killpg(service.pid, signal.SIGKILL)  # the service and its whole Ray
            service.wait()
            await eventually(lambda: not process_group_alive(service.pid), 30, "Ray outlived it")
            checkpointed = checkpoint_step(settings.state_dir)

            service = start_service(env, log_file)
            await healthy(service, port, log_file)
            seen = await training_events(
                kafka_bootstrap, probe.topic(Stream.TRAINING), lambda s: ended(s, sent)
            )
            ready = await read_records(
                kafka_bootstrap, probe.topic(Stream.MODELS_READY), 1, timeout=180
            )
            await asyncio.sleep(5)  # room for a second model.ready, if there were one
            promotions = sum(
                (await end_offsets(kafka_bootstrap, probe.topic(Stream.MODELS_READY))).values()
            )
    finally:
        kill_group(service)

    run = caused_by(seen, sent)
    assert sum(isinstance(event, TrainingStarted) for event in run) == 1
    [trained] = [event for event in run if isinstance(event, ModelTrained)]
    steps = [event.step for event in run if isinstance(event, TrainingProgress)]
    # Once from step 1 up to the kill, then on from just past the last checkpoint (never 1).
    assert steps.count(1) == 1
    assert set(steps) == set(range(1, 51))
    restarts = [i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]]
    assert len(restarts) <= 1
    for i in restarts:
        assert steps[i] - 1 >= checkpointed >= 8
    assert "resuming from step" in log_file.read_text()
    assert trained.train_metrics["train_steps"] == 50
    assert promotions == 1
    promoted = decode_event(read_envelope(ready[0].headers), ready[0].value)
    assert isinstance(promoted, ModelReady)
    assert promoted.model_version == trained.model_version


def checkpoint_step(state_dir: Path | None) -> int:
    """The latest checkpointed step in the service's run ledger (read as another process)."""
    assert state_dir is not None
    path = state_dir / RUNS_FILE
    if not path.exists():
        return 0
    ledger = RunLedger(path)
    try:
        return max((run.checkpoint_step for run in ledger.all()), default=0)
    finally:
        ledger.close()
