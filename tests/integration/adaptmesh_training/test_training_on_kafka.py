"""The training service on a real broker with a real local Ray: LoRA runs under Ray Train.

One local Ray serves the whole module (starting it costs seconds); each test has its own topics,
consumer group and artifact store. Each run costs Ray Train's fixed start-up (tens of seconds
on two cores), so the datasets are tiny and the timeouts generous.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2

from adaptmesh_kit import ArtifactStore, MeshApp, create_app
from adaptmesh_ml import Classifier
from adaptmesh_schemas import Envelope, MeshEvent, Stream, decode_event, read_envelope
from adaptmesh_schemas.events import (
    ModelReady,
    ModelTrained,
    RetrainReason,
    RetrainRequested,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)
from adaptmesh_schemas.values import ArtifactRef, Lineage
from adaptmesh_training.app import build_app
from adaptmesh_training.ledger import TrainingLedger
from adaptmesh_training.lineage import code_version
from adaptmesh_training.ray_cluster import RayCluster
from adaptmesh_training.settings import TrainingSettings
from tests.meshtest import eventually, mesh_settings
from tests.unit.adaptmesh_training.snapshots import BASE_MODEL, tiny_snapshot

pytestmark = pytest.mark.kafka

Seen = tuple[MeshEvent, Envelope]
TERMINAL = (ModelTrained, TrainingFailed)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    cluster = RayCluster()
    cluster.ensure_started()
    yield cluster
    cluster.shutdown()


def training_settings(
    bootstrap: str, name: str, tmp_path: Path, **overrides: Any
) -> TrainingSettings:
    shared = mesh_settings(bootstrap, name, tmp_path).model_dump()
    values = {
        **shared,
        "state_dir": tmp_path / "state",
        "consumer_group": f"training-{name}",
        **overrides,
    }
    return TrainingSettings(**values)


def retrain(domain: str, version: str, dataset: ArtifactRef) -> RetrainRequested:
    return RetrainRequested(
        domain=domain, reason=RetrainReason.DATA, dataset_version=version, dataset=dataset
    )


def caused_by(seen: list[Seen], request: Envelope) -> list[MeshEvent]:
    return [event for event, envelope in seen if envelope.causationid == request.id]


def ended(seen: list[Seen], request: Envelope) -> bool:
    return any(isinstance(event, TERMINAL) for event in caused_by(seen, request))


async def training_events(
    bootstrap: str, topic: str, until: Callable[[list[Seen]], bool], timeout: float = 420
) -> list[Seen]:
    """Every event on the training topic, from the beginning, until `until` holds."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    seen: list[Seen] = []
    try:
        async with asyncio.timeout(timeout):
            while not until(seen):
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        envelope = read_envelope(record.headers)
                        seen.append((decode_event(envelope, record.value), envelope))
    except TimeoutError:
        kinds = [type(event).__name__ for event, _ in seen]
        raise AssertionError(f"training did not finish in {timeout} s; saw {kinds}") from None
    finally:
        await consumer.stop()
    return seen


@pytest.mark.timeout(600)
async def test_a_retrain_request_trains_under_ray_and_publishes_a_loadable_model(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = training_settings(
        kafka_bootstrap, unique_name, tmp_path, training_progress_every_steps=1
    )
    domain = f"d-{unique_name}"
    store = ArtifactStore(settings.artifact_root)
    dataset = store.put_document(tiny_snapshot(domain))
    async with build_app(settings, cluster=ray_cluster), create_app(settings, "probe") as probe:
        sent = await probe.publish(retrain(domain, "v1", dataset))
        seen = await training_events(
            kafka_bootstrap, probe.topic(Stream.TRAINING), lambda s: ended(s, sent)
        )

    started, *middle, trained = caused_by(seen, sent)
    assert isinstance(started, TrainingStarted)
    assert isinstance(trained, ModelTrained), trained
    progress = [event for event in middle if isinstance(event, TrainingProgress)]
    assert progress == middle
    assert {envelope.correlationid for _, envelope in seen} == {sent.correlationid}
    assert {event.run_id for event in progress} | {trained.run_id} == {started.run_id}
    assert (started.dataset_version, started.recipe_version, started.workers) == ("v1", "r1", 1)

    # 18 train examples in batches of 4: five steps, each reported, live from the worker.
    assert [event.step for event in progress] == [1, 2, 3, 4, 5]
    assert all(event.total_steps == 5 and event.epoch == 0 for event in progress)

    assert re.fullmatch(rf"m-\d{{14}}-{started.run_id[:6]}", trained.model_version)
    assert trained.labels == ("crude", "grain", "money-fx")
    lineage = trained.lineage
    assert (lineage.dataset_version, lineage.dataset_sha256) == ("v1", dataset.sha256)
    assert (lineage.recipe_version, lineage.base_model) == ("r1", BASE_MODEL)
    assert lineage.parent_model_version is None
    assert lineage.code_version == code_version()
    assert lineage.seed == 7
    assert lineage.correlation_id == sent.correlationid
    assert lineage.hyperparameters["max_length"] == 32
    metrics = trained.train_metrics
    assert metrics["train_steps"] == 5
    assert metrics["ray_fit_seconds"] > metrics["train_seconds"] > 0

    classifier = await asyncio.to_thread(Classifier.load, store, trained.artifact)
    assert classifier.model_version == trained.model_version
    assert classifier.labels == trained.labels
    assert classifier.manifest.lineage == lineage
    [prediction] = await asyncio.to_thread(classifier.predict, ["oil prices fell again"])
    assert prediction.label in trained.labels
    # The run's Ray storage is gone once the model is in the artifact store.
    assert not (tmp_path / "state" / "ray" / started.run_id).exists()


@pytest.mark.timeout(600)
async def test_failed_runs_are_reported_once_and_the_next_request_still_trains(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = training_settings(kafka_bootstrap, unique_name, tmp_path, training_max_failures=0)
    domain = f"d-{unique_name}"
    store = ArtifactStore(settings.artifact_root)
    good = store.put_document(tiny_snapshot(domain, parent_version="v1"))
    tampered = good.model_copy(update={"sha256": "0" * 64})
    snapshot = tiny_snapshot(domain)
    # Valid as a document, hopeless as training data: it fails inside the Ray worker.
    all_eval = snapshot.model_copy(
        update={
            "examples": tuple(e.model_copy(update={"split": "eval"}) for e in snapshot.examples)
        }
    )
    hopeless = store.put_document(all_eval)
    ledger = TrainingLedger()
    app = build_app(settings, cluster=ray_cluster, ledger=ledger)
    async with app, create_app(settings, "probe") as probe:
        await probe.publish(champion(domain, "m-20260101000000-c0ffee"))
        await eventually(lambda: ledger.champion(domain) is not None, 60, "champion unknown")
        bad_digest = await probe.publish(retrain(domain, "v-tampered", tampered))
        doomed = await probe.publish(retrain(domain, "v-empty", hopeless))
        healthy = await probe.publish(retrain(domain, "v2", good))
        seen = await training_events(
            kafka_bootstrap, probe.topic(Stream.TRAINING), lambda s: ended(s, healthy)
        )

    [digest_failure] = caused_by(seen, bad_digest)
    assert isinstance(digest_failure, TrainingFailed)
    assert "ArtifactIntegrityError" in digest_failure.error
    assert digest_failure.retryable is False

    started, worker_failure = caused_by(seen, doomed)
    assert isinstance(started, TrainingStarted)
    assert isinstance(worker_failure, TrainingFailed)
    assert worker_failure.run_id == started.run_id
    assert "no train examples" in worker_failure.error
    assert worker_failure.retryable is False

    *_, trained = caused_by(seen, healthy)
    assert isinstance(trained, ModelTrained), trained
    assert trained.lineage.parent_model_version == "m-20260101000000-c0ffee"
    assert ledger.trained_versions(domain) == {"v2"}


@pytest.mark.timeout(600)
async def test_two_instances_in_one_group_share_the_domains(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = {
        name: training_settings(
            kafka_bootstrap,
            unique_name,
            tmp_path,
            topic_partitions=4,
            state_dir=tmp_path / name,
        )
        for name in ("a", "b")
    }
    ledgers = {name: TrainingLedger() for name in settings}
    apps = {
        name: build_app(settings[name], cluster=ray_cluster, ledger=ledgers[name])
        for name in settings
    }
    store = ArtifactStore(settings["a"].artifact_root)
    # One domain per partition, so whatever the assignment, each instance owns some domains.
    domains = domains_covering(4, unique_name)
    async with apps["a"], apps["b"], create_app(settings["a"], "probe") as probe:
        await eventually(
            lambda: split_evenly(apps["a"], apps["b"]), 60, "the group never split the topic"
        )
        owners = {name: {domains[p] for p in retrain_partitions(app)} for name, app in apps.items()}
        sent = [
            await probe.publish(retrain(domain, "v1", store.put_document(tiny_snapshot(domain))))
            for domain in domains.values()
        ]
        seen = await training_events(
            kafka_bootstrap,
            probe.topic(Stream.TRAINING),
            lambda s: all(ended(s, request) for request in sent),
            timeout=540,
        )

    for request in sent:
        run = caused_by(seen, request)
        assert [type(event) for event in run if not isinstance(event, TrainingProgress)] == [
            TrainingStarted,
            ModelTrained,
        ], run
    for name, ledger in ledgers.items():
        assert ledger.trained_domains() == owners[name]
        assert ledger.trained_domains()
    assert owners["a"] | owners["b"] == set(domains.values())


def champion(domain: str, model_version: str) -> ModelReady:
    return ModelReady(
        domain=domain,
        model_version=model_version,
        artifact=ArtifactRef(uri="file:///elsewhere/manifest.json", sha256="ef" * 32),
        labels=("crude", "grain", "money-fx"),
        lineage=Lineage(
            dataset_version="v0",
            dataset_sha256="ab" * 32,
            recipe_version="r1",
            base_model=BASE_MODEL,
            code_version="0.1.0",
            seed=7,
            correlation_id="change-0",
        ),
    )


def domains_covering(partitions: int, name: str) -> dict[int, str]:
    """A domain name for each partition, as the producer's partitioner places keys."""
    found: dict[int, str] = {}
    index = 0
    while len(found) < partitions:
        domain = f"d{index}-{name}"
        found.setdefault((murmur2(domain.encode()) & 0x7FFFFFFF) % partitions, domain)
        index += 1
    return found


def retrain_partitions(app: MeshApp) -> set[int]:
    """Partitions of the retrain topic the instance's group consumer holds right now."""
    topic = app.topic(Stream.RETRAIN)
    held: set[int] = set()
    for subscriber in app.broker.subscribers:
        consumer = getattr(subscriber, "consumer", None)
        if consumer is not None:
            held |= {tp.partition for tp in consumer.assignment() if tp.topic == topic}
    return held


def split_evenly(first: MeshApp, second: MeshApp) -> bool:
    mine, theirs = retrain_partitions(first), retrain_partitions(second)
    return bool(mine) and bool(theirs) and not mine & theirs and len(mine | theirs) == 4
