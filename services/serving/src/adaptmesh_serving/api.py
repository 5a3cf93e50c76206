"""The HTTP API: predictions, what is loaded, health and readiness.

`create_api` takes everything it serves from (`ServingRuntime`) as an argument, so tests drive
it with a registry of their own and no broker.

A predict request's body is checked before FastAPI reads it (`_GuardedBody`): its size against
`max_body_bytes` (the declared Content-Length first, then what actually arrives), then that it
is JSON at all (media type, empty, UTF-8, syntax), each with a 4xx saying what is wrong; the
request model then checks fields and types (422).
"""

# No `from __future__ import annotations` here: FastAPI resolves the request model, which is
# built per app from the limits in settings, from the endpoint's annotations at definition time.

import json
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Self

from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIRouter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from starlette.types import Message

from adaptmesh_schemas.values import ArtifactRef, Lineage, Rollback
from adaptmesh_serving.batching import (
    DeadlineExceeded,
    ModelCallError,
    Overloaded,
    ShuttingDown,
)
from adaptmesh_serving.predictions import NoModelError, PredictionService, ServedPrediction
from adaptmesh_serving.registry import DomainStatus, ModelRegistry

STARTING_RETRY_AFTER_SECONDS = 2
"""Retry-After of a 503 for a domain without a model while the start-up read goes on."""


@dataclass(frozen=True, slots=True)
class ServingRuntime:
    """What the API answers from."""

    registry: ModelRegistry
    predictions: PredictionService
    is_ready: Callable[[], bool]
    """Whether the start-up read of `mesh.models.ready.v1` has caught up."""
    is_healthy: Callable[[], Awaitable[bool]]
    """Whether Kafka answers."""
    max_batch: int = 64
    max_text_chars: int = 20_000
    max_body_bytes: int = 2 * 1024 * 1024


class PredictionResponse(BaseModel):
    """One prediction."""

    prediction_id: str = Field(description="Id of this prediction (quote it in feedback).")
    domain: str = Field(description="The domain asked.")
    model_version: str = Field(description="The model that answered.")
    label: str = Field(description="Predicted label.")
    confidence: float = Field(description="Probability of the predicted label.")
    probabilities: dict[str, float] = Field(description="Probability of every label.")

    @classmethod
    def of(cls, answer: ServedPrediction) -> Self:
        return cls(
            prediction_id=answer.prediction_id,
            domain=answer.domain,
            model_version=answer.model_version,
            label=answer.label,
            confidence=answer.confidence,
            probabilities=dict(answer.probabilities),
        )


class BatchPredictionResponse(BaseModel):
    """Predictions for `texts`, in order."""

    predictions: list[PredictionResponse] = Field(description="One per text, in order.")


class ReadyRecordView(BaseModel):
    """The `model.ready` record the model was loaded from."""

    event_id: str = Field(description="Its ce_id.")
    correlation_id: str = Field(description="The change event that led to this model.")
    partition: int = Field(description="Partition of mesh.models.ready.v1.")
    offset: int = Field(description="Offset in that partition.")


class LoadErrorView(BaseModel):
    """The last model that could not replace the one serving."""

    model_version: str = Field(description="The model that failed to load.")
    artifact: ArtifactRef = Field(description="Its manifest reference.")
    reason: str = Field(description="Why it was not loaded.")
    event_id: str = Field(description="ce_id of its model.ready record.")
    offset: int = Field(description="Offset of that record.")
    failed_at: datetime = Field(description="When loading failed.")


class ModelStatusResponse(BaseModel):
    """What serves a domain in this replica. Model fields are null when none loaded."""

    domain: str = Field(description="The domain.")
    model_version: str | None = Field(description="The model serving it.")
    labels: list[str] = Field(description="Its labels, in head order.")
    artifact: ArtifactRef | None = Field(description="Its manifest: URI and sha256.")
    lineage: Lineage | None = Field(
        description="Dataset version, recipe version, base model, parent model, seed, ..."
    )
    gate_report: ArtifactRef | None = Field(description="The report that approved it.")
    promotion: int | None = Field(
        default=None, description="The domain's promotion number of this model.ready."
    )
    rollback: Rollback | None = Field(
        default=None, description="Set when it was put back by a rollback: of what, who, why."
    )
    loaded_at: datetime | None = Field(description="When this replica loaded it.")
    ready_record: ReadyRecordView | None = Field(description="Where it was announced.")
    last_error: LoadErrorView | None = Field(
        description="The last model.ready whose model could not be loaded since this one."
    )

    @classmethod
    def of(cls, state: DomainStatus) -> Self:
        served, failure = state.served, state.last_error
        return cls(
            domain=state.domain,
            model_version=served.model_version if served else None,
            labels=list(served.ready.labels) if served else [],
            artifact=served.ready.artifact if served else None,
            lineage=served.ready.lineage if served else None,
            gate_report=served.ready.gate_report if served else None,
            promotion=served.ready.promotion if served else None,
            rollback=served.ready.rollback if served else None,
            loaded_at=served.loaded_at if served else None,
            ready_record=ReadyRecordView(
                event_id=served.origin.event_id,
                correlation_id=served.origin.correlation_id,
                partition=served.origin.partition,
                offset=served.origin.offset,
            )
            if served
            else None,
            last_error=LoadErrorView(
                model_version=failure.model_version,
                artifact=ArtifactRef(uri=failure.artifact_uri, sha256=failure.artifact_sha256),
                reason=failure.reason,
                event_id=failure.event_id,
                offset=failure.offset,
                failed_at=failure.failed_at,
            )
            if failure
            else None,
        )


class ReadinessResponse(BaseModel):
    ready: bool = Field(description="Whether the start-up read of model.ready caught up.")
    domains: list[str] = Field(description="Domains with a model (or a failed load).")


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be longer than `max_bytes`."""
    too_large = (
        f"the request body is larger than {max_bytes} bytes (MESH_SERVING_MAX_BODY_BYTES); "
        "send fewer or shorter texts"
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="invalid Content-Length")
        if int(declared) > max_bytes:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def _check_json(request: Request, body: bytes) -> None:
    """A 4xx unless `body` is a JSON document (whatever its shape: the model checks that)."""
    content_type = request.headers.get("content-type")
    if content_type is None or not _is_json(content_type):
        sent = "none" if content_type is None else repr(content_type.split(";", 1)[0].strip())
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"the request body must be JSON, sent with content-type application/json "
            f"(content-type: {sent})",
        )
    if not body.strip():
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail='the request body is empty: send {"text": "..."} or {"texts": [...]}',
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"the request body is not UTF-8 (byte {error.start}: {error.reason})",
        ) from None
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"the request body is not valid JSON: {error.msg} at line {error.lineno} "
            f"column {error.colno}",
        ) from None
    except RecursionError:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail="the request body is nested too deeply"
        ) from None


def _replaying(request: Request, body: bytes) -> Request:
    """`request` with its body read: the route reads it again from memory."""
    replayed = False

    async def receive() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()  # e.g. a disconnect

    return Request(request.scope, receive)


def _guarded_body(max_body_bytes: int) -> type[APIRoute]:
    """A route class whose requests' bodies are checked before FastAPI parses them."""

    class GuardedBody(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                body = await _read_body(request, max_body_bytes)
                _check_json(request, body)
                return await handler(_replaying(request, body))

            return guarded

    return GuardedBody


async def _invalid_request(_: Request, error: Exception) -> JSONResponse:
    """422 with what is wrong where, without echoing the input: a text can be long, and one
    that is not valid Unicode could not even be written into the answer."""
    errors = error.errors() if isinstance(error, RequestValidationError) else []
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content={
            "detail": [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in errors]
        },
    )


def _refusal(code: int, detail: str, retry_after: int) -> HTTPException:
    return HTTPException(code, detail=detail, headers={"Retry-After": str(retry_after)})


def create_api(runtime: ServingRuntime, *, lifespan: Lifespan | None = None) -> FastAPI:
    """The FastAPI app answering from `runtime`."""
    # A lone surrogate ("\\ud800" in JSON) is not a valid string here: no tokenizer takes one,
    # and one such text would fail every request batched with it.
    text_type = Annotated[str, StringConstraints(min_length=1, max_length=runtime.max_text_chars)]

    class PredictRequest(BaseModel):
        """Either one `text` or a batch of `texts`."""

        model_config = ConfigDict(extra="forbid")

        text: text_type | None = Field(default=None, description="One text to classify.")
        texts: list[text_type] | None = Field(
            default=None,
            min_length=1,
            max_length=runtime.max_batch,
            description=f"Up to {runtime.max_batch} texts to classify in one call.",
        )

        @model_validator(mode="after")
        def _one_of(self) -> Self:
            if (self.text is None) == (self.texts is None):
                raise ValueError("give exactly one of `text` or `texts`")
            return self

    api = FastAPI(
        title="adaptmesh serving",
        summary="Predictions from each domain's production model.",
        lifespan=lifespan,
    )
    api.add_exception_handler(RequestValidationError, _invalid_request)

    # Its own router: only the predict route's bodies go through the guard.
    predicting = APIRouter(route_class=_guarded_body(runtime.max_body_bytes))

    @predicting.post(
        "/v1/domains/{domain}/predict",
        responses={
            400: {"description": "The body is empty, not UTF-8 or not JSON."},
            404: {"description": "No model serves this domain."},
            413: {"description": "The body is larger than MESH_SERVING_MAX_BODY_BYTES."},
            415: {"description": "The body is not sent as application/json."},
            429: {"description": "Too many texts waiting for this model: see Retry-After."},
            500: {"description": "The model call of this request's batch failed."},
            503: {
                "description": "Starting (no model for the domain yet) or shutting down: "
                "see Retry-After."
            },
            504: {"description": "No answer within MESH_SERVING_REQUEST_TIMEOUT_MS."},
        },
    )
    async def predict(
        domain: str, body: PredictRequest, request: Request
    ) -> PredictionResponse | BatchPredictionResponse:
        """Classify `text` (one answer) or `texts` (one answer each, in order), with the model
        serving `domain` when the request arrives; every answer names that model."""
        texts = [body.text] if body.text is not None else list(body.texts or [])
        try:
            answers = await runtime.predictions.predict(domain, texts, dict(request.headers))
        except NoModelError as error:
            if not runtime.is_ready():
                raise _refusal(
                    status.HTTP_503_SERVICE_UNAVAILABLE,
                    f"serving is starting: {error}; the start-up read of model.ready goes on",
                    STARTING_RETRY_AFTER_SECONDS,
                ) from None
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(error)) from None
        except Overloaded as error:
            raise _refusal(
                status.HTTP_429_TOO_MANY_REQUESTS, str(error), error.retry_after
            ) from None
        except ShuttingDown as error:
            raise _refusal(
                status.HTTP_503_SERVICE_UNAVAILABLE, str(error), error.retry_after
            ) from None
        except DeadlineExceeded as error:
            raise HTTPException(status.HTTP_504_GATEWAY_TIMEOUT, detail=str(error)) from None
        except ModelCallError as error:
            raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, detail=str(error)) from None
        if body.text is not None:
            return PredictionResponse.of(answers[0])
        return BatchPredictionResponse(predictions=[PredictionResponse.of(a) for a in answers])

    api.include_router(predicting)

    @api.get(
        "/v1/domains/{domain}/model",
        responses={404: {"description": "No model.ready has been seen for this domain."}},
    )
    async def model(domain: str) -> ModelStatusResponse:
        """The model serving `domain` in this replica, its lineage, and the last load error."""
        state = runtime.registry.status(domain)
        if state is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                detail=f"no model.ready has been seen for domain {domain!r}",
            )
        return ModelStatusResponse.of(state)

    @api.get("/health", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
    async def health() -> Response:
        """204 when Kafka answers, 503 when it does not."""
        if await runtime.is_healthy():
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        return Response(status_code=status.HTTP_503_SERVICE_UNAVAILABLE)

    @api.get(
        "/ready",
        responses={503: {"model": ReadinessResponse, "description": "Still catching up."}},
    )
    async def ready(response: Response) -> ReadinessResponse:
        """200 once every model.ready present at start-up has been read, 503 before."""
        is_ready = runtime.is_ready()
        if not is_ready:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return ReadinessResponse(ready=is_ready, domains=runtime.registry.domains())

    return api
