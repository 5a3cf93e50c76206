"""Bad predict requests get a 4xx with a message saying what is wrong, never a 500, and never
reach the model: oversized (declared or streamed), empty, not UTF-8, not JSON, not sent as
JSON, wrongly typed, unknown fields, texts no model can take."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from adaptmesh_serving.api import ServingRuntime, create_api
from tests.component.adaptmesh_serving.test_http_api import PREDICT, Serving
from tests.unit.adaptmesh_serving.fakes import FakeClassifier

MAX_BODY_BYTES = 4096


class Guarded(Serving):
    """`Serving` with a small body limit."""

    def __init__(self) -> None:
        super().__init__(max_text_chars=1000)
        self.ready = True
        self.classifier = FakeClassifier("v1")
        self.install(self.classifier, offset=0)
        runtime = ServingRuntime(
            registry=self.registry,
            predictions=self.predictions,
            is_ready=lambda: self.ready,
            is_healthy=self._is_healthy,
            max_batch=3,
            max_text_chars=1000,
            max_body_bytes=MAX_BODY_BYTES,
        )
        self.api = create_api(runtime)


@pytest.fixture
async def guarded() -> AsyncIterator[tuple[Guarded, httpx.AsyncClient]]:
    service = Guarded()
    transport = httpx.ASGITransport(app=service.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
        yield service, client
    await service.predictions.close()


def refused(response: httpx.Response, status: int, says: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert says in str(detail), detail


JSON = {"content-type": "application/json"}


async def test_a_body_declared_larger_than_the_limit_is_413_before_it_is_read(
    guarded: tuple[Guarded, httpx.AsyncClient],
) -> None:
    service, client = guarded
    body = b'{"text": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = await client.post(PREDICT, content=body, headers=JSON)
    refused(response, 413, f"larger than {MAX_BODY_BYTES} bytes")
    assert service.classifier.calls == []


async def test_a_streamed_body_without_a_length_is_cut_off_at_the_limit(
    guarded: tuple[Guarded, httpx.AsyncClient],
) -> None:
    service, client = guarded
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(100):
            sent.append(1)
            yield b"x" * 512
        yield b'"}'

    response = await client.post(PREDICT, content=chunks(), headers=JSON)
    refused(response, 413, "MESH_SERVING_MAX_BODY_BYTES")
    assert service.classifier.calls == []


async def test_a_body_within_the_limit_is_served(
    guarded: tuple[Guarded, httpx.AsyncClient],
) -> None:
    _, client = guarded

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": '
        yield b'"wheat"}'

    response = await client.post(PREDICT, content=chunks(), headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "v1"


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b"", JSON, 400, "the request body is empty"),
        (b"   \n", JSON, 400, "the request body is empty"),
        (b'{"text": "oil"}', {}, 415, "content-type: none"),
        (b'{"text": "caf\xe9"}', JSON, 400, "not UTF-8 (byte 13"),
        (b"\xff\xfe{\x00}\x00", JSON, 400, "not UTF-8"),
        (b'{"text": "oil"', JSON, 400, "not valid JSON"),
        (b"text=oil", JSON, 400, "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, JSON, 413, "larger than"),
        (b"[" * 1500 + b"]" * 1500, JSON, 400, "nested too deeply"),
        (b"[" * 50 + b"]" * 50, JSON, 422, "valid dictionary"),
        (b'{"text": "oil"}', {"content-type": "text/plain"}, 415, "must be JSON"),
        (
            b'{"text": "oil"}',
            {"content-type": "application/x-www-form-urlencoded"},
            415,
            "application/json",
        ),
        (b'"oil"', JSON, 422, "valid dictionary"),
        (b"[]", JSON, 422, "valid dictionary"),
        (b"null", JSON, 422, ""),
        (b'{"text": 5}', JSON, 422, "valid string"),
        (b'{"text": ["oil"]}', JSON, 422, "valid string"),
        (b'{"texts": "oil"}', JSON, 422, "valid list"),
        (b'{"texts": [1, 2]}', JSON, 422, "valid string"),
        (b'{"texts": [null]}', JSON, 422, "valid string"),
        (b'{"text": "oil", "label": "crude"}', JSON, 422, "Extra inputs"),
        (b'{"prompt": "oil"}', JSON, 422, "Extra inputs"),
        (b'{"text": "\\ud800 oil"}', JSON, 422, "unicode string"),
        (b'{"texts": ["fine", "\\udfff"]}', JSON, 422, "unicode string"),
    ],
    ids=[
        "empty",
        "blank",
        "no-content-type",
        "latin-1",
        "utf-16",
        "truncated-json",
        "form-encoded-as-json",
        "too-deep-and-too-large",
        "too-deep",
        "nested-arrays",
        "text-plain",
        "form-content-type",
        "json-string",
        "json-array",
        "json-null",
        "text-number",
        "text-list",
        "texts-string",
        "texts-numbers",
        "texts-null",
        "unknown-field",
        "only-unknown-field",
        "lone-surrogate",
        "lone-surrogate-in-batch",
    ],
)
async def test_a_bad_body_is_a_4xx_that_says_why(
    guarded: tuple[Guarded, httpx.AsyncClient],
    body: bytes,
    headers: dict[str, str],
    status: int,
    says: str,
) -> None:
    service, client = guarded
    response = await client.post(PREDICT, content=body, headers=headers)
    refused(response, status, says)
    assert service.classifier.calls == []


async def test_json_media_types_with_parameters_or_a_json_suffix_are_accepted(
    guarded: tuple[Guarded, httpx.AsyncClient],
) -> None:
    _, client = guarded
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        response = await client.post(
            PREDICT, content=b'{"text": "oil"}', headers={"content-type": content_type}
        )
        assert response.status_code == 200, response.text


async def test_a_422_names_the_field_without_echoing_the_input(
    guarded: tuple[Guarded, httpx.AsyncClient],
) -> None:
    _, client = guarded
    response = await client.post(PREDICT, json={"texts": ["fine", "x" * 1001]})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "texts", 1]
    assert "at most 1000 characters" in error["msg"]
    assert "xxxx" not in response.text


async def test_the_openapi_document_lists_the_refusals(
    guarded: tuple[Guarded, httpx.AsyncClient],
) -> None:
    _, client = guarded
    document = (await client.get("/openapi.json")).json()
    responses = document["paths"]["/v1/domains/{domain}/predict"]["post"]["responses"]
    assert {"200", "400", "404", "413", "415", "422", "429", "500", "503", "504"} <= set(responses)
