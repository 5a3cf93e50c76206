"""Serving replicas on a real broker: rollouts every replica confirms, a tampered model that
fails on each while the old one serves, and many domains on one copy of a base model."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import torch
from aiokafka import AIOKafkaProducer

from adaptmesh_cli.rollout import watch_rollout
from adaptmesh_kit import ArtifactStore, provision_topics
from adaptmesh_ml import (
    ADAPTER_WEIGHTS_FILE,
    Classifier,
    DomainModel,
    TrainedModel,
    save_model,
    train_classifier,
)
from adaptmesh_schemas import Stream, decode_event, read_envelope, topic_name
from adaptmesh_schemas.documents import DatasetExample, DatasetSnapshot
from adaptmesh_schemas.events import ModelLoaded, ModelLoadFailed, ModelReady, RecipeChanged
from adaptmesh_schemas.values import Lineage, TrainingSettings
from adaptmesh_serving.app import ServingApp, build_app
from adaptmesh_serving.settings import ServingSettings
from tests.integration.adaptmesh_serving.conftest import BASE_MODEL, DOMAIN, saved_model_ready
from tests.integration.adaptmesh_serving.test_serving_on_kafka import Gate, poll
from tests.meshtest import mesh_settings, read_records

pytestmark = pytest.mark.kafka
PREDICT = f"/v1/domains/{DOMAIN}/predict"
MODEL = f"/v1/domains/{DOMAIN}/model"


@asynccontextmanager
async def replica(settings: ServingSettings) -> AsyncIterator[tuple[ServingApp, httpx.AsyncClient]]:
    """One serving replica in this process (its lifespan runs its broker), with a client."""
    serving = build_app(settings)
    async with serving.http.router.lifespan_context(serving.http):
        transport = httpx.ASGITransport(app=serving.http)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            yield serving, client


async def serving_version(client: httpx.AsyncClient, domain: str, version: str) -> None:
    async def serves() -> bool | None:
        response = await client.get(f"/v1/domains/{domain}/model")
        ok = response.status_code == 200 and response.json()["model_version"] == version
        return ok or None

    await poll(serves, 120, f"{domain} never served {version}")


async def rollout_reports(
    bootstrap: str, topic: str, count: int, version: str
) -> list[ModelLoaded | ModelLoadFailed]:
    """The first `count` model.loaded / model.load_failed reports about `version`."""

    def about_version(record: Any) -> bool:
        event = decode_event(read_envelope(record.headers), record.value)
        return isinstance(event, ModelLoaded | ModelLoadFailed) and event.model_version == version

    records = await read_records(bootstrap, topic, count, timeout=60, where=about_version)
    events = [decode_event(read_envelope(r.headers), r.value) for r in records]
    return [e for e in events if isinstance(e, ModelLoaded | ModelLoadFailed)]


def tamper_with_weights(store_root: Path, ready: ModelReady) -> None:
    """Flip a byte of the adapter's weights in the store, as a corrupted copy or an attacker
    with write access to the artifact store would."""
    manifest = Path(urlparse(ready.artifact.uri).path)
    weights = manifest.parent / ADAPTER_WEIGHTS_FILE
    assert weights.is_file(), f"no {ADAPTER_WEIGHTS_FILE} beside {manifest}"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


@pytest.mark.timeout(600)
async def test_two_replicas_confirm_a_rollout_and_each_keeps_the_old_model_when_one_is_tampered(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, trained_model: TrainedModel
) -> None:
    base = mesh_settings(kafka_bootstrap, unique_name, tmp_path)
    await provision_topics(base)
    store = ArtifactStore(base.artifact_root)
    v1 = saved_model_ready(store, trained_model, "v1")
    v2 = saved_model_ready(store, trained_model, "v2", parent="v1")
    v3 = saved_model_ready(store, trained_model, "v3", parent="v2")
    tamper_with_weights(tmp_path / "artifacts", v3)
    rollout_topic = topic_name(Stream.ROLLOUT, base.topic_prefix)
    lines: list[str] = []
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(producer.stop)
        gate = Gate(producer, topic_name(Stream.MODELS_READY, base.topic_prefix))
        await gate.announce(v1)
        clients = []
        for name in ("replica-a", "replica-b"):
            settings = ServingSettings(
                **base.model_dump(),
                serving_replica_id=name,
                serving_status_interval_seconds=1.0,
            )
            _, client = await stack.enter_async_context(replica(settings))
            clients.append(client)
        for client in clients:
            await serving_version(client, DOMAIN, "v1")
        watcher = asyncio.create_task(watch_rollout(base, say=lines.append))
        stack.callback(watcher.cancel)

        await gate.announce(v2)

        loaded = await rollout_reports(kafka_bootstrap, rollout_topic, 2, "v2")
        assert {(type(e), e.replica_id) for e in loaded} == {
            (ModelLoaded, "replica-a"),
            (ModelLoaded, "replica-b"),
        }
        for report in loaded:
            assert isinstance(report, ModelLoaded)
            assert report.replaced_version == "v1"
            assert report.artifact == v2.artifact
            assert report.load_seconds > 0
            assert 0 <= report.switch_ms < report.load_seconds * 1000
        await poll(
            lambda: _async(any("v2" in line and "2/2 replicas serve it" in line for line in lines)),
            30,
            f"watch rollout never showed v2 complete: {lines}",
        )
        for client in clients:
            answer = await client.post(PREDICT, json={"text": "wheat harvest grew"})
            assert answer.json()["model_version"] == "v2"

        await gate.announce(v3)

        failed = await rollout_reports(kafka_bootstrap, rollout_topic, 2, "v3")
        assert {(type(e), e.replica_id) for e in failed} == {
            (ModelLoadFailed, "replica-a"),
            (ModelLoadFailed, "replica-b"),
        }
        for report in failed:
            assert isinstance(report, ModelLoadFailed)
            assert report.still_serving == "v2"
            assert "ArtifactIntegrityError" in report.reason
        for client in clients:
            status = (await client.get(MODEL)).json()
            assert status["model_version"] == "v2"
            assert status["last_error"]["model_version"] == "v3"
            answer = await client.post(PREDICT, json={"text": "oil prices rose"})
            assert answer.status_code == 200
            assert answer.json()["model_version"] == "v2"
        await poll(
            lambda: _async(any("v3" in line and "0/2 replicas" in line for line in lines)),
            30,
            f"watch rollout never showed the failed v3: {lines}",
        )
        [v3_line] = [line for line in lines if "v3" in line and "0/2" in line][-1:]
        assert "replica-a failed" in v3_line
        assert "replica-b failed" in v3_line
        assert "serves v2" in v3_line


async def _async(value: bool) -> bool | None:
    return value or None


def _trained(domain: str, texts: dict[str, list[str]], seed: int) -> TrainedModel:
    examples = tuple(
        DatasetExample(
            example_id=f"{label}-{index}",
            text=f"{text} {index}",
            label=label,
            split="train",
            source_event_id="test",
        )
        for label, items in texts.items()
        for index, text in enumerate(items * 4)
    )
    labels = tuple(texts)
    recipe = RecipeChanged(
        domain=domain,
        recipe_version="r1",
        base_model=BASE_MODEL,
        labels=labels,
        training=TrainingSettings(epochs=1, batch_size=8, max_length=32, seed=seed),
    )
    snapshot = DatasetSnapshot(
        domain=domain,
        recipe=recipe,
        base_model=BASE_MODEL,
        taxonomy_version="t1",
        labels=labels,
        examples=examples,
    )
    return train_classifier(snapshot)


def _announce(store: ArtifactStore, trained: TrainedModel, domain: str) -> ModelReady:
    lineage = Lineage(
        dataset_version="ds-1",
        dataset_sha256="a" * 64,
        recipe_version="r1",
        base_model=BASE_MODEL,
        code_version="test",
        seed=trained.seed,
        correlation_id=f"change-{domain}",
    )
    ref, manifest = save_model(store, trained, domain=domain, model_version="v1", lineage=lineage)
    return ModelReady(
        domain=domain,
        model_version="v1",
        artifact=ref,
        labels=manifest.labels,
        lineage=manifest.lineage,
    )


def _live_instances(class_name: str) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj).__name__ == class_name)


@pytest.fixture(scope="module")
def three_domains(trained_model: TrainedModel) -> dict[str, TrainedModel]:
    """Three domains on MiniLM with label sets of their own (2, 2 and 3 labels)."""
    weather = {"rain": ["heavy rain", "showers later", "wet day"], "sun": ["sunny", "clear sky"]}
    sport = {
        "goal": ["he scored", "a late goal", "header in"],
        "foul": ["red card", "a foul"],
        "save": ["great save", "keeper dives"],
    }
    return {
        DOMAIN: trained_model,
        "weather": _trained("weather", weather, seed=3),
        "sport": _trained("sport", sport, seed=4),
    }


TEXTS = {DOMAIN: "wheat harvest grew", "weather": "showers later", "sport": "a late goal"}


def assert_answered_by_its_domain(domain: str, text: str, trained: TrainedModel, body: Any) -> None:
    assert body["domain"] == domain
    expected = Classifier.from_trained(trained, BASE_MODEL, "v1").predict([text])[0]
    assert body["label"] == expected.label
    for label, probability in expected.probabilities.items():
        assert body["probabilities"][label] == pytest.approx(probability, abs=1e-4)


@pytest.mark.timeout(600)
async def test_three_domains_are_served_from_one_copy_of_their_base_and_share_a_batch(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, three_domains: dict[str, TrainedModel]
) -> None:
    models = three_domains
    base = mesh_settings(kafka_bootstrap, unique_name, tmp_path)
    # A long wait lets the three concurrent requests below meet in one batch.
    settings = ServingSettings(**base.model_dump(), serving_max_wait_ms=1000.0)
    await provision_topics(settings)
    store = ArtifactStore(settings.artifact_root)
    announced = {domain: _announce(store, trained, domain) for domain, trained in models.items()}
    texts = TEXTS
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        gate = Gate(producer, topic_name(Stream.MODELS_READY, settings.topic_prefix))
        async with replica(settings) as (serving, client):
            await gate.announce(announced[DOMAIN])
            await serving_version(client, DOMAIN, "v1")
            assert serving.models is not None
            [only] = serving.models.bases()
            backbones_with_one_domain = _live_instances(only.backbone_class)

            await gate.announce(announced["weather"])
            await gate.announce(announced["sport"])
            for domain in ("weather", "sport"):
                await serving_version(client, domain, "v1")

            # One copy of the base in this process, holding the three domains' adapters.
            [shared] = serving.models.bases()
            assert shared.model_id == only.model_id
            assert {adapter.key for adapter in shared.adapters} == set(models)
            assert _live_instances(shared.backbone_class) == backbones_with_one_domain
            # Each adapter and head costs a sliver of the base.
            for adapter in shared.adapters:
                assert adapter.parameter_bytes < shared.parameter_bytes / 20

            forward_rows: list[int] = []

            def count_rows(
                _module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any
            ) -> None:
                input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
                forward_rows.append(int(input_ids.shape[0]))

            hook = serving.models.backbone(BASE_MODEL).register_forward_hook(
                count_rows, with_kwargs=True
            )
            try:
                answers = await asyncio.gather(
                    *(
                        client.post(f"/v1/domains/{domain}/predict", json={"text": text})
                        for domain, text in texts.items()
                    )
                )
            finally:
                hook.remove()

            # Three domains, one batch: one forward pass of the base over the three rows.
            assert forward_rows == [3]
            for (domain, text), answer in zip(texts.items(), answers, strict=True):
                assert answer.status_code == 200, answer.text
                assert_answered_by_its_domain(domain, text, models[domain], answer.json())
    finally:
        await producer.stop()


@pytest.mark.timeout(600)
async def test_past_the_cap_the_least_recently_used_domain_is_unloaded_and_reloaded_on_demand(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, three_domains: dict[str, TrainedModel]
) -> None:
    base = mesh_settings(kafka_bootstrap, unique_name, tmp_path)
    settings = ServingSettings(**base.model_dump(), serving_max_resident_models=2)
    await provision_topics(settings)
    store = ArtifactStore(settings.artifact_root)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        gate = Gate(producer, topic_name(Stream.MODELS_READY, settings.topic_prefix))
        for domain, trained in three_domains.items():
            await gate.announce(_announce(store, trained, domain))
        async with replica(settings) as (serving, client):
            for domain in three_domains:
                await serving_version(client, domain, "v1")
            assert serving.models is not None
            assert len(serving.models.resident()) == 2

            for _ in range(2):  # round robin over three domains with room for two
                for domain, text in TEXTS.items():
                    answer = await client.post(f"/v1/domains/{domain}/predict", json={"text": text})
                    assert answer.status_code == 200, answer.text
                    assert_answered_by_its_domain(
                        domain, text, three_domains[domain], answer.json()
                    )
                    assert len(serving.models.resident()) == 2

            reloads = {}
            for domain in three_domains:
                served = serving.registry.serving(domain)
                assert served is not None
                assert isinstance(served.predictor, DomainModel)
                reloads[domain] = served.predictor.reloads
            assert sum(reloads.values()) >= 4, reloads  # every request but the first two
    finally:
        await producer.stop()
