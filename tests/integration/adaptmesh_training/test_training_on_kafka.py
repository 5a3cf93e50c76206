"""The training service on a real broker with a real local Ray and its warm worker actors.

One local Ray serves the whole module (starting it costs seconds); each test has its own topics,
consumer group and artifact store, and its app its own workers (they start once per app, then
every run reuses them). The datasets are tiny and the timeouts generous (two busy cores).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2
from transformers import SqueezeBertConfig, SqueezeBertForSequenceClassification

from adaptmesh_cli.rebuild import run_rebuild
from adaptmesh_kit import ArtifactStore, MeshApp, create_app
from adaptmesh_ml import (
    ADAPTER_WEIGHTS_FILE,
    Classifier,
    TrainingState,
    load_model_files,
    resolve_base_model,
)
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
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, Lineage
from adaptmesh_training.app import TrainingApp, build_app
from adaptmesh_training.checkpoints import store_checkpoint
from adaptmesh_training.lineage import code_version
from adaptmesh_training.ray_cluster import RayCluster
from adaptmesh_training.runs import RunRecord, RunStatus
from adaptmesh_training.settings import TrainingSettings
from tests.meshtest import eventually, mesh_settings
from tests.unit.adaptmesh_training.snapshots import BASE_MODEL, dataset_versioned, tiny_snapshot

pytestmark = pytest.mark.kafka

Seen = tuple[MeshEvent, Envelope]
TERMINAL = (ModelTrained, TrainingFailed)


@pytest.fixture(scope="module")
def base_model_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where this module's local base models live: `MESH_BASE_MODEL_ROOTS` from before Ray
    starts, since Ray's worker processes inherit the environment Ray was started in."""
    root = tmp_path_factory.mktemp("base-models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MESH_BASE_MODEL_ROOTS", str(root))
        yield root


@pytest.fixture(scope="module")
def ray_cluster(base_model_root: Path) -> Iterator[RayCluster]:
    del base_model_root  # set up first
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
async def test_runs_train_on_warm_workers_and_a_retrain_starts_from_the_champion(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = training_settings(
        kafka_bootstrap, unique_name, tmp_path, training_progress_every_steps=1
    )
    domain = f"d-{unique_name}"
    store = ArtifactStore(settings.artifact_root)
    dataset = store.put_document(tiny_snapshot(domain))
    app = build_app(settings, cluster=ray_cluster)
    async with app, create_app(settings, "probe") as probe:
        sent = await probe.publish(retrain(domain, "v1", dataset))
        seen = await training_events(
            kafka_bootstrap, probe.topic(Stream.TRAINING), lambda s: ended(s, sent)
        )
        first = caused_by(seen, sent)[-1]
        assert isinstance(first, ModelTrained), first
        # The gate promotes it; the next request (more data, same taxonomy) starts from it.
        await probe.publish(promoted(first))
        await eventually(lambda: app.knowledge.champion(domain) is not None, 60)
        larger = store.put_document(tiny_snapshot(domain, parent_version="v1", extra=2))
        again = await probe.publish(retrain(domain, "v2", larger))
        seen = await training_events(
            kafka_bootstrap, probe.topic(Stream.TRAINING), lambda s: ended(s, again)
        )
        runs = await settled_runs(app)

    started, *middle, trained = caused_by(seen, sent)
    assert isinstance(started, TrainingStarted)
    assert isinstance(trained, ModelTrained), trained
    progress = [event for event in middle if isinstance(event, TrainingProgress)]
    assert progress == middle
    assert {envelope.correlationid for _, envelope in seen} >= {sent.correlationid}
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
    assert lineage.init == "base"
    assert lineage.base_model_sha256 is not None
    assert set(lineage.library_versions) >= {"torch", "transformers", "peft", "adaptmesh"}
    assert lineage.determinism["torch_threads"] == settings.cpus_per_worker()
    assert trained.train_metrics["train_steps"] == 5

    classifier = await asyncio.to_thread(Classifier.load, store, trained.artifact)
    assert classifier.model_version == trained.model_version
    assert classifier.labels == trained.labels
    assert classifier.manifest.lineage == lineage
    [prediction] = await asyncio.to_thread(classifier.predict, ["oil prices fell again"])
    assert prediction.label in trained.labels

    warm = caused_by(seen, again)[-1]
    assert isinstance(warm, ModelTrained), warm
    assert warm.lineage.init == "champion"
    assert warm.lineage.parent_model_version == trained.model_version
    assert warm.lineage.parent_artifact == trained.artifact
    _, parent_files = load_model_files(store, trained.artifact)
    assert (
        warm.lineage.parent_adapter_sha256
        == hashlib.sha256(parent_files[ADAPTER_WEIGHTS_FILE]).hexdigest()
    )
    assert warm.lineage.head_mapping == {label: (label,) for label in trained.labels}
    # The six new texts plus the replay share of older ones (min_replay 64 > 18: all of them).
    assert warm.train_metrics["new_examples"] == 6
    assert warm.train_metrics["replayed_examples"] == 18
    assert [run.status for run in runs] == [RunStatus.DONE, RunStatus.DONE]

    # Both models, trained in a Ray worker, rebuild bit for bit in this process from their
    # lineage alone (`adaptmesh rebuild`, which finds them on the training topic).
    for model in (trained, warm):
        said: list[str] = []
        code = await asyncio.to_thread(
            run_rebuild,
            settings,
            domain,
            model.model_version,
            scratch=tmp_path / f"rebuild-{model.model_version}",
            say=said.append,
        )
        assert code == 0, "\n".join(said)


@pytest.mark.timeout(600)
async def test_failed_runs_are_reported_once_and_the_next_request_still_trains(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = training_settings(kafka_bootstrap, unique_name, tmp_path, training_max_failures=0)
    domain = f"d-{unique_name}"
    store = ArtifactStore(settings.artifact_root)
    good = store.put_document(tiny_snapshot(domain, parent_version="v1", init="base"))
    warm = store.put_document(tiny_snapshot(domain, parent_version="v0"))
    tampered = good.model_copy(update={"sha256": "0" * 64})
    snapshot = tiny_snapshot(domain, init="base")
    # Valid as a document, hopeless as training data: it fails inside the Ray worker.
    all_eval = snapshot.model_copy(
        update={
            "examples": tuple(e.model_copy(update={"split": "eval"}) for e in snapshot.examples)
        }
    )
    hopeless = store.put_document(all_eval)
    app = build_app(settings, cluster=ray_cluster)
    async with app, create_app(settings, "probe") as probe:
        # A champion whose manifest is not where its claim check says.
        await probe.publish(champion(domain, "m-20260101000000-c0ffee"))
        await eventually(lambda: app.knowledge.champion(domain) is not None, 60, "no champion")
        bad_digest = await probe.publish(retrain(domain, "v-tampered", tampered))
        doomed = await probe.publish(retrain(domain, "v-empty", hopeless))
        lost_champion = await probe.publish(retrain(domain, "v0", warm))
        healthy = await probe.publish(retrain(domain, "v2", good))
        seen = await training_events(
            kafka_bootstrap, probe.topic(Stream.TRAINING), lambda s: ended(s, healthy)
        )
        runs = await settled_runs(app)

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

    started, champion_failure = caused_by(seen, lost_champion)
    assert isinstance(champion_failure, TrainingFailed)
    assert champion_failure.error.startswith("ArtifactPathError: file:///elsewhere/manifest.json")
    assert champion_failure.retryable is False

    *_, trained = caused_by(seen, healthy)
    assert isinstance(trained, ModelTrained), trained
    # Trained from a fresh adapter (the recipe says so), the champion is still its parent.
    assert trained.lineage.parent_model_version == "m-20260101000000-c0ffee"
    assert trained.lineage.init == "base"
    assert app.knowledge.trained_versions(domain) == {"v2"}
    statuses = [run.status for run in runs]
    assert statuses == [RunStatus.FAILED] * 3 + [RunStatus.DONE]


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
            # Both instances' workers fit on the shared two-CPU Ray.
            training_cpus_per_worker=1,
        )
        for name in ("a", "b")
    }
    apps = {name: build_app(settings[name], cluster=ray_cluster) for name in settings}
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
    for name, app in apps.items():
        assert app.knowledge.trained_domains() == owners[name]
        assert app.knowledge.trained_domains()
    assert owners["a"] | owners["b"] == set(domains.values())


@pytest.mark.timeout(600)
async def test_a_rebalance_and_a_run_longer_than_the_poll_interval_start_no_second_run(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = {
        name: training_settings(
            kafka_bootstrap,
            unique_name,
            tmp_path,
            state_dir=tmp_path / name,
            training_cpus_per_worker=1,
            # Far shorter than the run: a handler that held the record would be thrown out of
            # the group and its record handed to the other instance.
            max_poll_interval_ms=2_000,
        )
        for name in ("a", "b")
    }
    domain = f"d-{unique_name}"
    store = ArtifactStore(settings["a"].artifact_root)
    long_run = store.put_document(tiny_snapshot(domain, epochs=12))
    first = build_app(settings["a"], cluster=ray_cluster)
    second = build_app(settings["b"], cluster=ray_cluster)
    async with first, create_app(settings["a"], "probe") as probe:
        sent = await probe.publish(retrain(domain, "v1", long_run))
        await training_events(
            kafka_bootstrap,
            probe.topic(Stream.TRAINING),
            lambda s: any(isinstance(e, TrainingProgress) for e in caused_by(s, sent)),
        )
        async with second:  # joins the group mid-run: the partition may move to it
            seen = await training_events(
                kafka_bootstrap, probe.topic(Stream.TRAINING), lambda s: ended(s, sent)
            )
            await asyncio.sleep(3)  # room for a second run to show itself, if there were one
            # After the rebalance, whoever holds the partition takes the next request.
            other = f"e-{unique_name}"
            after = await probe.publish(
                retrain(other, "v1", store.put_document(tiny_snapshot(other)))
            )
            seen = await training_events(
                kafka_bootstrap,
                probe.topic(Stream.TRAINING),
                lambda s: ended(s, sent) and ended(s, after),
            )
            runs = {"a": await settled_runs(first), "b": await settled_runs(second)}
    for request in (sent, after):
        run = caused_by(seen, request)
        kinds = [type(event) for event in run if not isinstance(event, TrainingProgress)]
        assert kinds == [TrainingStarted, ModelTrained], kinds
    assert caused_by(seen, sent)[-1].train_metrics["train_steps"] == 60  # type: ignore[attr-defined]
    # The long run stayed with the instance that recorded it; nothing ran twice or got lost.
    assert [run.request_id for run in runs["a"]][:1] == [sent.id]
    assert sorted(run.request_id for run in runs["a"] + runs["b"]) == sorted([sent.id, after.id])


@pytest.mark.timeout(600)
async def test_a_run_made_stale_by_a_newer_dataset_is_cancelled(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = training_settings(
        kafka_bootstrap, unique_name, tmp_path, training_progress_every_steps=1
    )
    domain = f"d-{unique_name}"
    store = ArtifactStore(settings.artifact_root)
    slow = store.put_document(tiny_snapshot(domain, epochs=20))
    newer = store.put_document(tiny_snapshot(domain, parent_version="v1", init="base"))
    app = build_app(settings, cluster=ray_cluster)
    async with app, create_app(settings, "probe") as probe:
        first = await probe.publish(retrain(domain, "v1", slow))
        await training_events(
            kafka_bootstrap,
            probe.topic(Stream.TRAINING),
            lambda s: any(isinstance(e, TrainingProgress) for e in caused_by(s, first)),
        )
        # Ingestion announces v2, made from v1; drift asks for it.
        await probe.publish(dataset_versioned(domain, "v2", parent="v1", ref=newer))
        second = await probe.publish(retrain(domain, "v2", newer))
        seen = await training_events(
            kafka_bootstrap,
            probe.topic(Stream.TRAINING),
            lambda s: ended(s, first) and ended(s, second),
        )
        runs = await settled_runs(app)
    cancelled = caused_by(seen, first)[-1]
    assert isinstance(cancelled, TrainingFailed), cancelled
    assert cancelled.error.endswith("cancelled: superseded by dataset v2")
    assert cancelled.retryable is False
    steps = [e.step for e in caused_by(seen, first) if isinstance(e, TrainingProgress)]
    assert steps[-1] < 100  # stopped long before its 100 steps
    assert isinstance(caused_by(seen, second)[-1], ModelTrained)
    assert [run.status for run in runs] == [RunStatus.CANCELLED, RunStatus.DONE]


@pytest.mark.timeout(600)
async def test_a_killed_worker_is_replaced_and_the_run_resumes_from_its_checkpoint(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = training_settings(
        kafka_bootstrap,
        unique_name,
        tmp_path,
        training_progress_every_steps=1,
        training_checkpoint_every_steps=3,
    )
    domain = f"d-{unique_name}"
    store = ArtifactStore(settings.artifact_root)
    dataset = store.put_document(tiny_snapshot(domain, epochs=6))
    app = build_app(settings, cluster=ray_cluster)
    async with app, create_app(settings, "probe") as probe:
        sent = await probe.publish(retrain(domain, "v1", dataset))
        await eventually(lambda: checkpointed_step(app) >= 6, 300, "no checkpoint")
        [pid] = app.workers.pids()
        os.kill(pid, signal.SIGKILL)
        killed_after = checkpointed_step(app)
        seen = await training_events(
            kafka_bootstrap, probe.topic(Stream.TRAINING), lambda s: ended(s, sent)
        )
        [record] = await settled_runs(app)

    run = caused_by(seen, sent)
    assert isinstance(run[-1], ModelTrained), run
    assert sum(isinstance(event, TrainingStarted) for event in run) == 1
    steps = [event.step for event in run if isinstance(event, TrainingProgress)]
    # Progress goes up to the kill, then on from just after the last checkpoint: the run never
    # starts over from step 1, and every step is reported (some twice, when the kill came
    # after steps that no checkpoint had saved yet).
    assert steps.count(1) == 1
    assert set(steps) == set(range(1, 31))
    repeats = [i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]]
    assert len(repeats) <= 1
    for i in repeats:
        resumed_from = steps[i] - 1
        assert resumed_from >= killed_after >= 6
        assert resumed_from % 3 == 0 or resumed_from % 5 == 0  # a checkpoint: every 3, epoch ends
    assert record.attempts == 2
    assert record.status is RunStatus.DONE


@pytest.mark.timeout(600)
async def test_a_run_whose_checkpoint_fails_its_digest_fails_once_without_retrying(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = training_settings(kafka_bootstrap, unique_name, tmp_path)
    domain = f"d-{unique_name}"
    store = ArtifactStore(settings.artifact_root)
    dataset = store.put_document(tiny_snapshot(domain))
    checkpoint = store_checkpoint(
        store,
        "a" * 32,
        TrainingState(step=3, epoch=1, batches_done=3, files={"loop.json": b"{}"}),
    )
    # A run the service was in the middle of when it stopped, its checkpoint since damaged.
    app = build_app(settings, cluster=ray_cluster)
    app.runs.add(
        RunRecord(
            run_id="a" * 32,
            request_id=f"req-{unique_name}",
            request=retrain(domain, "v1", dataset),
            correlation_id=f"corr-{unique_name}",
            status=RunStatus.RUNNING,
            started_at=datetime.now(UTC),
            checkpoint=checkpoint.model_copy(update={"sha256": "0" * 64}),
            checkpoint_step=3,
        )
    )
    async with app, create_app(settings, "probe") as probe:
        seen = await training_events(
            kafka_bootstrap,
            probe.topic(Stream.TRAINING),
            lambda s: any(isinstance(e, TrainingFailed) for e, _ in s),
        )
        await asyncio.sleep(2)  # room for a retry to show itself, if there were one
        runs = await settled_runs(app)
    [failed] = [event for event, _ in seen]
    assert isinstance(failed, TrainingFailed)
    assert failed.error.startswith("ArtifactIntegrityError")
    assert failed.retryable is False
    assert [run.status for run in runs] == [RunStatus.FAILED]
    assert runs[0].attempts == 1


@pytest.mark.timeout(600)
async def test_a_base_architecture_without_known_lora_targets_fails_once(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    ray_cluster: RayCluster,
    base_model_root: Path,
) -> None:
    settings = training_settings(kafka_bootstrap, unique_name, tmp_path)
    domain = f"d-{unique_name}"
    store = ArtifactStore(settings.artifact_root)
    base = unregistered_base(base_model_root / f"squeezebert-{unique_name}")
    dataset = store.put_document(tiny_snapshot(domain, base_model=base))
    app = build_app(settings, cluster=ray_cluster)
    async with app, create_app(settings, "probe") as probe:
        sent = await probe.publish(retrain(domain, "v1", dataset))
        seen = await training_events(
            kafka_bootstrap, probe.topic(Stream.TRAINING), lambda s: ended(s, sent)
        )
        await asyncio.sleep(2)  # room for a retry to show itself, if there were one
        runs = await settled_runs(app)
    started, failed = caused_by(seen, sent)
    assert isinstance(started, TrainingStarted)
    assert isinstance(failed, TrainingFailed)
    assert failed.error.startswith("UnsupportedArchitectureError")
    assert "'squeezebert'" in failed.error
    assert "lora.target_modules" in failed.error
    assert failed.retryable is False
    assert [run.status for run in runs] == [RunStatus.FAILED]


def unregistered_base(directory: Path) -> BaseModelSpec:
    """A tiny randomly initialised SqueezeBERT (an architecture the LoRA target registry does
    not know) with MiniLM's tokenizer, saved as a local base model directory."""
    config = SqueezeBertConfig(
        hidden_size=32,
        embedding_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        q_groups=1,
        k_groups=1,
        v_groups=1,
        post_attention_groups=1,
        intermediate_groups=1,
        output_groups=1,
    )
    SqueezeBertForSequenceClassification(config).save_pretrained(directory)
    for source in resolve_base_model(BASE_MODEL).iterdir():
        if source.name.startswith(("tokenizer", "special_tokens")) or source.name == "vocab.txt":
            shutil.copy(source, directory / source.name)
    return BaseModelSpec(model_id=str(directory))


@pytest.mark.timeout(600)
async def test_two_workers_train_one_model_with_distributed_data_parallel(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = training_settings(
        kafka_bootstrap, unique_name, tmp_path, training_workers=2, training_cpus_per_worker=1
    )
    domain = f"d-{unique_name}"
    store = ArtifactStore(settings.artifact_root)
    dataset = store.put_document(tiny_snapshot(domain, epochs=2))
    app = build_app(settings, cluster=ray_cluster)
    async with app, create_app(settings, "probe") as probe:
        sent = await probe.publish(retrain(domain, "v1", dataset))
        seen = await training_events(
            kafka_bootstrap, probe.topic(Stream.TRAINING), lambda s: ended(s, sent)
        )
        assert len(app.workers.pids()) == 2
    started, *_, trained = caused_by(seen, sent)
    assert isinstance(started, TrainingStarted)
    assert started.workers == 2
    assert isinstance(trained, ModelTrained), trained
    assert trained.lineage.hyperparameters["world_size"] == 2
    # 18 examples sharded over two ranks in batches of 4: three steps an epoch on each.
    assert trained.train_metrics["train_steps"] == 6
    classifier = await asyncio.to_thread(Classifier.load, store, trained.artifact)
    predictions = await asyncio.to_thread(
        classifier.predict, ["oil prices fell again", "wheat harvest was poor"]
    )
    assert all(p.label in trained.labels for p in predictions)


async def settled_runs(app: TrainingApp) -> list[RunRecord]:
    """The app's runs once none is open: a run's last event is published just before its
    ledger row is closed, so a test that saw the event may look a moment too early."""
    await eventually(lambda: app.runs.next_open() is None, 60, f"runs still open: {app.runs.all()}")
    return app.runs.all()


def checkpointed_step(app: TrainingApp) -> int:
    return max((run.checkpoint_step for run in app.runs.all()), default=0)


def promoted(trained: ModelTrained) -> ModelReady:
    return ModelReady(
        domain=trained.domain,
        model_version=trained.model_version,
        artifact=trained.artifact,
        labels=trained.labels,
        lineage=trained.lineage,
    )


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
