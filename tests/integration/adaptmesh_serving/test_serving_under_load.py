"""Serving under load on a real broker: 16 concurrent clients while two model.ready records
arrive, overload, and the throughput batching buys on a model with a fixed cost per call.

The swaps are run twice: with real models (LoRA adapters on one shared MiniLM, loaded beside
the serving version and released after their last request) and with fakes whose `predict`
sleeps a fixed time per call plus a share per text (like a transformer's overhead and its
per-text work), which make the timing of a swap under load, and the throughput figures,
about batching rather than the CPU.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from adaptmesh_kit import ArtifactStore, provision_topics
from adaptmesh_ml import TrainedModel
from adaptmesh_schemas import Stream, topic_name
from adaptmesh_schemas.events import ModelReady
from adaptmesh_schemas.values import ArtifactRef
from adaptmesh_serving.app import ServingApp, build_app
from adaptmesh_serving.registry import ModelOrigin, Predictor, ServedModel
from adaptmesh_serving.settings import ServingSettings
from tests.integration.adaptmesh_serving.conftest import saved_model_ready
from tests.integration.adaptmesh_serving.test_serving_on_kafka import Gate, poll
from tests.meshtest import mesh_settings
from tests.unit.adaptmesh_serving.fakes import DOMAIN, FakeClassifier, model_ready

pytestmark = pytest.mark.kafka
PREDICT = f"/v1/domains/{DOMAIN}/predict"
CLIENTS = 16
SECONDS_PER_CALL = 0.02
SECONDS_PER_TEXT = 0.001


def costly_model(_store: ArtifactStore, ref: ArtifactRef) -> Predictor:
    """The fake model a manifest names (its version is in the path), costing time per call."""
    return FakeClassifier(
        ref.uri.split("/")[-2],
        seconds_per_call=SECONDS_PER_CALL,
        seconds_per_text=SECONDS_PER_TEXT,
    )


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    status: int
    version: str | None
    retry_after: str | None


@asynccontextmanager
async def serving_with(
    settings: ServingSettings, monkeypatch: pytest.MonkeyPatch, *, real_models: bool = False
) -> AsyncIterator[tuple[ServingApp, list[tuple[float, str]]]]:
    """Serving in this process, and when (event-loop time) each model was installed."""
    serving = build_app(settings, load_model=None if real_models else costly_model)
    installed: list[tuple[float, str]] = []
    install = serving.registry.install

    def recording(predictor: Predictor, ready: ModelReady, origin: ModelOrigin) -> ServedModel:
        served = install(predictor, ready, origin)
        installed.append((asyncio.get_running_loop().time(), served.model_version))
        return served

    monkeypatch.setattr(serving.registry, "install", recording)
    async with serving.http.router.lifespan_context(serving.http):
        yield serving, installed


def clients(serving: ServingApp, count: int) -> list[httpx.AsyncClient]:
    return [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=serving.http), base_url="http://serving", timeout=60
        )
        for _ in range(count)
    ]


async def keep_asking(client: httpx.AsyncClient, stop: asyncio.Event, into: list[Answer]) -> None:
    loop = asyncio.get_running_loop()
    number = 0
    while not stop.is_set():
        number += 1
        started = loop.time()
        response = await client.post(PREDICT, json={"text": f"wheat crop {number}"})
        body: dict[str, Any] = response.json()
        into.append(
            Answer(
                started,
                loop.time(),
                response.status_code,
                body.get("model_version"),
                response.headers.get("retry-after"),
            )
        )
        if response.status_code == 429:
            # Back off a little, as a client over a network would: in process, a refusal
            # never leaves the event loop, and 64 clients retrying at once would starve it.
            await asyncio.sleep(0.01)


async def watch_health(client: httpx.AsyncClient, stop: asyncio.Event, into: list[float]) -> None:
    """Every 50 ms: /health's status must be 204; records how long it took."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        response = await client.get("/health")
        assert response.status_code == 204, response.text
        into.append(loop.time() - started)
        await asyncio.sleep(0.05)


def production_at(moment: float, installed: list[tuple[float, str]]) -> str | None:
    current = None
    for at, version in installed:
        if at <= moment:
            current = version
    return current


def summary(answers: list[Answer], seconds: float) -> str:
    latencies = sorted(a.ended - a.started for a in answers)
    p50 = statistics.median(latencies) * 1000
    p95 = latencies[int(0.95 * (len(latencies) - 1))] * 1000
    return (
        f"{len(answers)} requests in {seconds:.1f}s = {len(answers) / seconds:.0f} req/s, "
        f"p50 {p50:.0f} ms, p95 {p95:.0f} ms"
    )


async def settings_for(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, **serving: Any
) -> ServingSettings:
    base = mesh_settings(kafka_bootstrap, unique_name, tmp_path)
    settings = ServingSettings(**base.model_dump(), **serving)
    await provision_topics(settings)
    return settings


@asynccontextmanager
async def gate_for(settings: ServingSettings) -> AsyncIterator[Gate]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        yield Gate(producer, topic_name(Stream.MODELS_READY, settings.topic_prefix))
    finally:
        await producer.stop()


async def until_ready(client: httpx.AsyncClient) -> None:
    async def ready() -> bool | None:
        return (await client.get("/ready")).status_code == 200 or None

    await poll(ready, 60, "serving never became ready")


async def until_installed(installed: list[tuple[float, str]], version: str) -> float:
    async def found() -> float | None:
        return next((at for at, v in installed if v == version), None)

    return await poll(found, 60, f"{version} was never installed")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("models", ["real", "fake"])
async def test_sixteen_clients_through_two_swaps_lose_nothing_and_follow_production(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    trained_model: TrainedModel,
    models: str,
) -> None:
    settings = await settings_for(kafka_bootstrap, unique_name, tmp_path)
    store = ArtifactStore(settings.artifact_root)

    def announced(version: str, promotion: int) -> ModelReady:
        if models == "fake":
            return model_ready(version, promotion=promotion)
        ready = saved_model_ready(store, trained_model, version)
        return ready.model_copy(update={"promotion": promotion})

    loop = asyncio.get_running_loop()
    async with gate_for(settings) as gate, AsyncExitStack() as stack:
        await gate.announce(announced("v1", 1))
        serving, installed = await stack.enter_async_context(
            serving_with(settings, monkeypatch, real_models=models == "real")
        )
        users = [await stack.enter_async_context(c) for c in clients(serving, CLIENTS)]
        [operator] = [await stack.enter_async_context(c) for c in clients(serving, 1)]
        await until_ready(operator)
        assert (await operator.get(f"/v1/domains/{DOMAIN}/model")).json()["model_version"] == "v1"

        stop = asyncio.Event()
        answers: list[Answer] = []
        health: list[float] = []
        began = loop.time()
        load = [asyncio.create_task(keep_asking(user, stop, answers)) for user in users]
        watcher = asyncio.create_task(watch_health(operator, stop, health))
        published: dict[str, float] = {}
        switched: dict[str, float] = {}
        for version, promotion in (("v2", 2), ("v3", 3)):
            await asyncio.sleep(1.0)
            published[version] = loop.time()
            await gate.announce(announced(version, promotion))
            switched[version] = await until_installed(installed, version)
            status = (await operator.get(f"/v1/domains/{DOMAIN}/model")).json()
            assert status["model_version"] == version
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*load, watcher)
        seconds = loop.time() - began
        if serving.models is not None:
            # The versions switched out were released once their last requests were done.
            async def only_v3_resident() -> bool | None:
                [base] = serving.models.bases() if serving.models else ()
                return [a.model_version for a in base.adapters] == ["v3"] or None

            await poll(only_v3_resident, 30, "replaced versions are still in memory")

    print(
        f"\n{CLIENTS} clients through two swaps ({models} models): {summary(answers, seconds)}; "
        + ", ".join(
            f"{v} published +{published[v] - began:.2f}s, serving +{switched[v] - began:.2f}s"
            for v in published
        )
        + f"; /health answered {len(health)} times, slowest {max(health) * 1000:.0f} ms"
    )
    failed = [a for a in answers if a.status != 200]
    assert failed == [], f"{len(failed)} requests failed, e.g. {failed[:3]}"
    for answer in answers:
        # The model a request is pinned to is chosen between its start and its end.
        possible = {production_at(answer.started, installed)} | {
            version for at, version in installed if answer.started <= at <= answer.ended
        }
        assert answer.version in possible, (answer, installed)
    after_last = [a for a in answers if a.started > switched["v3"]]
    assert after_last, "the load went on after the last swap"
    assert {a.version for a in after_last} == {"v3"}
    after_first = [a for a in answers if a.started > switched["v2"]]
    assert "v1" not in {a.version for a in after_first}, "no request went back to v1"
    assert {a.version for a in answers} == {"v1", "v2", "v3"}
    assert max(health) < 1.0, "health answers while the models work"


@pytest.mark.timeout(300)
async def test_overload_is_refused_with_retry_after_and_nothing_is_lost(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = await settings_for(
        kafka_bootstrap,
        unique_name,
        tmp_path,
        serving_max_batch=4,
        serving_max_batch_size=4,
        serving_max_queue=8,
    )
    async with gate_for(settings) as gate, AsyncExitStack() as stack:
        await gate.announce(model_ready("v1", promotion=1))
        serving, _ = await stack.enter_async_context(serving_with(settings, monkeypatch))
        users = [await stack.enter_async_context(c) for c in clients(serving, 64)]
        [operator] = [await stack.enter_async_context(c) for c in clients(serving, 1)]
        await until_ready(operator)
        stop = asyncio.Event()
        answers: list[Answer] = []
        health: list[float] = []
        load = [asyncio.create_task(keep_asking(user, stop, answers)) for user in users]
        watcher = asyncio.create_task(watch_health(operator, stop, health))
        await asyncio.sleep(3.0)
        stop.set()
        await asyncio.gather(*load, watcher)

    by_status: dict[int, int] = {}
    for answer in answers:
        by_status[answer.status] = by_status.get(answer.status, 0) + 1
    print(f"\n64 clients, a queue of 8 texts: answers by status {by_status}")
    assert set(by_status) == {200, 429}, "every request is answered or refused, none fails"
    assert all(int(a.retry_after or 0) >= 1 for a in answers if a.status == 429)
    assert all(a.version == "v1" for a in answers if a.status == 200)
    assert max(health) < 1.0


@pytest.mark.timeout(300)
async def test_batching_multiplies_throughput_on_a_model_with_a_fixed_cost_per_call(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evidence: one model call per request (what a per-model lock gave) against batches."""
    results: dict[int, str] = {}
    throughput: dict[int, float] = {}
    for max_batch_size in (1, 64):
        name = f"{unique_name}-{max_batch_size}"
        settings = await settings_for(
            kafka_bootstrap, name, tmp_path / name, serving_max_batch_size=max_batch_size
        )
        loop = asyncio.get_running_loop()
        async with gate_for(settings) as gate, AsyncExitStack() as stack:
            await gate.announce(model_ready("v1", promotion=1))
            serving, _ = await stack.enter_async_context(serving_with(settings, monkeypatch))
            users = [await stack.enter_async_context(c) for c in clients(serving, CLIENTS)]
            await until_ready(users[0])
            stop = asyncio.Event()
            answers: list[Answer] = []
            began = loop.time()
            load = [asyncio.create_task(keep_asking(user, stop, answers)) for user in users]
            await asyncio.sleep(3.0)
            stop.set()
            await asyncio.gather(*load)
            seconds = loop.time() - began
        assert {a.status for a in answers} == {200}
        results[max_batch_size] = summary(answers, seconds)
        throughput[max_batch_size] = len(answers) / seconds
    print(
        f"\n{CLIENTS} clients, model {SECONDS_PER_CALL * 1000:.0f} ms/call + "
        f"{SECONDS_PER_TEXT * 1000:.0f} ms/text: one call per request: {results[1]}; "
        f"batched (up to 64): {results[64]}"
    )
    assert throughput[64] > 3 * throughput[1]
