"""`adaptmesh status` and `adaptmesh lineage` on a real broker, output captured.

The recorded flow of `tests/unit/adaptmesh_cli/mesh_flow.py` is published to a private topic
set as the services write it (CloudEvents headers with causation and correlation ids, a W3C
`traceparent`), each event to its stream's topic, keyed by domain: the CLI reads it back
through the same consumer, decoding and views as against a running mesh. Two more things only a
broker has: a promotion in a transaction that was aborted (a read_committed reader never sees
it) and a consumer group with committed offsets, whose lag `status` reports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adaptmesh_cli.main import main
from adaptmesh_cli.status import MeshRecord
from adaptmesh_kit import MeshSettings, provision_topics
from adaptmesh_schemas import Stream, encode_event, topic_name
from adaptmesh_schemas.events import ModelReady
from tests.meshtest import mesh_settings
from tests.unit.adaptmesh_cli.mesh_flow import DOMAIN, OTHER, TRACE_FIRST, recorded_flow

pytestmark = pytest.mark.kafka


async def send(producer: AIOKafkaProducer, record: MeshRecord) -> None:
    """`record` as its service wrote it: CloudEvents headers and, when it has one, its trace."""
    headers = record.envelope.to_headers()
    if record.trace_id is not None:
        headers.append(("traceparent", f"00-{record.trace_id}-00f067aa0ba902b7-01".encode()))
    await producer.send_and_wait(
        record.topic,
        encode_event(record.event),
        key=record.event.domain.encode(),
        headers=headers,
    )


def use_mesh(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> MeshSettings:
    mesh = mesh_settings(kafka_bootstrap, unique_name, tmp_path)
    for name, value in (
        ("MESH_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap),
        ("MESH_TOPIC_PREFIX", mesh.topic_prefix),
        ("MESH_ARTIFACT_ROOT", mesh.artifact_root),
    ):
        monkeypatch.setenv(name, value)
    return mesh


async def run_cli(*argv: str) -> int:
    # main() runs its own event loop: off this one.
    return await asyncio.to_thread(main, list(argv))


async def test_status_and_lineage_read_the_mesh_topics(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mesh = use_mesh(kafka_bootstrap, unique_name, tmp_path, monkeypatch)
    await provision_topics(mesh)
    # Twenty minutes ago, so the replica's heartbeat (a minute before the end) is still alive.
    start = datetime.now(UTC) - timedelta(minutes=20)
    records = recorded_flow(mesh.topic_prefix, start)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"status-test-{unique_name}"
    )
    await producer.start()
    try:
        async with producer.transaction():
            for record in records:
                await send(producer, record)
        ready = next(r for r in records if isinstance(r.event, ModelReady))
        ghost = ready.event.model_copy(update={"model_version": "m-ghost", "promotion": 9})
        await producer.begin_transaction()
        await send(producer, dataclasses.replace(ready, event=ghost))
        await producer.abort_transaction()
    finally:
        await producer.stop()

    # A consumer group that has read one record of the training topic: the rest is its lag.
    training = topic_name(Stream.TRAINING, mesh.topic_prefix)
    group = f"adaptmesh.status-test-{unique_name}"
    consumer = AIOKafkaConsumer(
        training, bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.commit({TopicPartition(training, 0): 1})
    finally:
        await consumer.stop()
    on_training = sum(r.topic == training for r in records)
    capsys.readouterr()

    assert await run_cli("status") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("adaptmesh status at ")
    with capsys.disabled():
        print(out)  # shown with -s: what an operator sees
    [fin] = [line for line in lines if line.startswith(f"│ {DOMAIN} ") and "replicas" in line]
    assert "│ m-1 " in fin
    assert "1/1 replicas" in fin
    assert "approved (this model)" in fin
    assert "label-chi2 alarmed" in fin
    assert "promotion 1, 2 labels" in out
    assert "m-ghost" not in out
    [run] = [line for line in lines if "run-2" in line]
    assert "30/120 (25%)" in run
    assert "9m00s" in run  # 20 steps in two minutes, 90 to go
    assert "run-1" not in out  # trained
    assert "run-ops" not in out  # failed
    [lag] = [line for line in lines if group in line]
    assert f"{training} {on_training - 1}" in lag

    assert await run_cli("status", "--domain", OTHER) == 0
    out = capsys.readouterr().out
    assert f"│ {OTHER} " in out
    assert f"│ {DOMAIN} " not in out
    assert "Runs in flight: none" in out
    # Without a terminal, --watch prints once and ends.
    assert await run_cli("status", "--watch", "--domain", OTHER) == 0
    assert capsys.readouterr().out.count("adaptmesh status at ") == 1
    assert await run_cli("status", "--domain", "nobody") == 2
    assert capsys.readouterr().out == "no events for domain 'nobody' on the mesh's topics\n"

    assert await run_cli("lineage", DOMAIN) == 0
    out = capsys.readouterr().out
    with capsys.disabled():
        print(out)
    assert out.startswith(f"lineage of {DOMAIN}: trace ids {TRACE_FIRST}, {'1' * 32}\n")
    for expected in (
        "model.ready  m-1 promotion 1",
        f"artifact sha256:{'a' * 16}…",
        "gate.approved  m-1 APPROVED",
        "model.trained  m-1  run run-1",
        "training.started  run run-1",
        "retrain.requested  reason data",
        "dataset.versioned  ds-2  (data)",
        "change.data_batch  batch b1, 2 examples",
        "dataset.versioned  ds-1  (recipe)",
        "change.recipe",
        f"trace {TRACE_FIRST}",
    ):
        assert expected in out, expected
    assert "ds-3" not in out
    assert "m-ghost" not in out

    assert await run_cli("lineage", DOMAIN, "m-ghost") == 2
    assert capsys.readouterr().out == f"no m-ghost of domain {DOMAIN!r} on the mesh's topics\n"


def tmux(session: str, *args: str) -> subprocess.CompletedProcess[str]:
    """tmux on a server of the test's own (its own socket, no user configuration), so no
    other server's window sizes or environment apply."""
    return subprocess.run(
        ["tmux", "-L", session, "-f", os.devnull, *args],
        capture_output=True,
        text=True,
        check=False,
    )


def screen(session: str) -> str:
    return tmux(session, "capture-pane", "-p", "-t", session).stdout


async def wait_for_screen(session: str, text: str, seconds: float = 30.0) -> str:
    shown = ""
    for _ in range(int(seconds * 4)):
        shown = screen(session)
        if text in shown:
            return shown
        await asyncio.sleep(0.25)
    raise AssertionError(f"{text!r} never appeared; the screen:\n{shown}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux, a real terminal")
async def test_status_watch_redraws_on_a_terminal_until_ctrl_c(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh = use_mesh(kafka_bootstrap, unique_name, tmp_path, monkeypatch)
    await provision_topics(mesh)
    records = recorded_flow(mesh.topic_prefix, datetime.now(UTC) - timedelta(minutes=20))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    session = f"status-{unique_name}"
    try:
        for record in records:
            await send(producer, record)
        # Without COLUMNS and LINES from this process (a test runner may set them): the size
        # is the terminal's, as for a user at one.
        command = [
            *("env", "-u", "COLUMNS", "-u", "LINES"),
            *(sys.executable, "-c", "from adaptmesh_cli.main import main; main()"),
        ]
        # The mesh's settings, set in this process's environment above, go in explicitly.
        settings = [
            f"-e{name}={os.environ[name]}"
            for name in ("MESH_KAFKA_BOOTSTRAP_SERVERS", "MESH_TOPIC_PREFIX", "MESH_ARTIFACT_ROOT")
        ]
        started = tmux(
            session,
            *("new-session", "-d", "-s", session, "-x", "140", "-y", "50"),
            *settings,
            *command,
            *("status", "--watch", "--domain", DOMAIN),
        )
        assert started.returncode == 0, started.stderr
        first = await wait_for_screen(session, "30/120 (25%)")
        assert "promotion 1, 2 labels" in first
        # The run reports again: the same screen shows it, no new command.
        [progress] = [r for r in records if r.envelope.id == "run-2.progress-30"]
        later = progress.event.model_copy(update={"step": 60})
        moved = dataclasses.replace(
            progress,
            event=later,
            envelope=progress.envelope.model_copy(
                update={"id": "run-2.progress-60", "time": datetime.now(UTC)}
            ),
        )
        await send(producer, moved)
        second = await wait_for_screen(session, "60/120 (50%)")
        assert "30/120" not in second
        assert second.count("adaptmesh status at ") == 1  # redrawn in place, not appended
        assert tmux(session, "send-keys", "-t", session, "C-c").returncode == 0
        for _ in range(40):
            if tmux(session, "has-session", "-t", session).returncode != 0:
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError(f"still running after Ctrl-C:\n{screen(session)}")
    finally:
        await producer.stop()
        tmux(session, "kill-server")
