"""`python -m adaptmesh_training` as operators run it: trains, and takes its Ray down with it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from adaptmesh_embedded.mesh import free_port
from adaptmesh_kit import ArtifactStore, create_app
from adaptmesh_schemas import Stream
from adaptmesh_schemas.events import ModelTrained
from tests.integration.adaptmesh_training.test_training_on_kafka import (
    caused_by,
    ended,
    retrain,
    training_events,
    training_settings,
)
from tests.integration.test_service_process import health
from tests.meshtest import eventually
from tests.unit.adaptmesh_training.snapshots import tiny_snapshot

REPO = Path(__file__).resolve().parents[3]


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(600)
async def test_the_service_process_trains_and_leaves_no_ray_process_behind(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = training_settings(kafka_bootstrap, unique_name, tmp_path)
    port = free_port()
    log_file = tmp_path / "service.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "RAY_"))},
        "PYTHONPATH": str(REPO),
        "MESH_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MESH_TOPIC_PREFIX": settings.topic_prefix,
        "MESH_TOPIC_PARTITIONS": "1",
        "MESH_HEALTH_PORT": str(port),
        "MESH_STATE_DIR": str(settings.state_dir),
        "MESH_ARTIFACT_ROOT": settings.artifact_root,
        "MESH_CONSUMER_GROUP": settings.consumer_group or "",
    }
    domain = f"d-{unique_name}"
    dataset = ArtifactStore(settings.artifact_root).put_document(tiny_snapshot(domain))
    with log_file.open("wb") as log:
        # Its own process group: Ray's processes join it, so the group outliving the service
        # would mean Ray was left running.
        service = subprocess.Popen(
            [sys.executable, "-m", "adaptmesh_training"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        await eventually(lambda: health(port) == 204 or service.poll() is not None, 120)
        assert service.poll() is None, log_file.read_text()
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
        if service.poll() is None or process_group_alive(service.pid):
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()
