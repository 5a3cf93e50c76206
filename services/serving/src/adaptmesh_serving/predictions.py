"""Answering predictions: the model call, its span, and the sampled inference log.

A request is answered by the model serving its domain when it starts: its texts join that
model's batch queue (`batching.py`) with the model pinned to each of them, so a swap meanwhile
changes nothing for it, and its answers name the model that computed them.

Tracing rule: the first prediction a model serves in this process continues the trace of the
`model.ready` record that loaded it (its span is a child of that record's consume span), so one
trace runs from the user's change event to the first prediction of the model it produced, and
the `inference.logged` record published for that prediction carries the same trace id. Every
later prediction gets its own trace: a server span continuing the caller's W3C `traceparent`
when the request has one, else a new root.

Inference logs are published fire-and-forget: the answer does not depend on them, so a slow or
unreachable broker must not slow predictions down. Failures are logged; `drain()` waits for
what is still in flight at shutdown.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Tracer

from adaptmesh_ml import DomainModel, SharedBaseModels
from adaptmesh_schemas.events import InferenceLogged
from adaptmesh_schemas.events.inference import MAX_LOGGED_TEXT_CHARS
from adaptmesh_schemas.values import BaseModelSpec
from adaptmesh_serving.batching import Batching, BatchLimits
from adaptmesh_serving.registry import ModelOrigin, ModelRegistry, PredictionLike, ServedModel

log = logging.getLogger(__name__)

InferencePublisher = Callable[[InferenceLogged, ModelOrigin | None], Awaitable[object]]
"""Publishes one inference log; the origin is given for a model's first prediction, whose
log belongs to the chain of the change that produced the model."""


class NoModelError(LookupError):
    """No model serves the domain (yet)."""

    def __init__(self, domain: str, reason: str) -> None:
        super().__init__(reason)
        self.domain = domain


@dataclass(frozen=True, slots=True)
class ServedPrediction:
    """One answer, with the ids a caller needs to refer to it later (feedback)."""

    prediction_id: str
    domain: str
    model_version: str
    label: str
    confidence: float
    probabilities: Mapping[str, float]


class PredictionService:
    """Predicts with the model serving a domain, traces it and logs a sample."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        tracer: Tracer,
        publish: InferencePublisher,
        sample_rate: float,
        limits: BatchLimits | None = None,
        log_texts: bool = True,
        sampler: random.Random | None = None,
        calls_per_base: int = 1,
    ) -> None:
        self._registry = registry
        self._tracer = tracer
        self._publish = publish
        self._sample_rate = sample_rate
        self._log_texts = log_texts
        limits = limits or BatchLimits()

        def is_live(key: Hashable) -> bool:
            return any(batch_key(served) == key for served in registry.served())

        # One batcher (queue, worker, thread) per base model, so the requests of every domain
        # on a base share its batches (or per model, for models loaded whole); a batcher whose
        # models were all swapped out goes once its last requests are answered.
        self.batching: Batching[Hashable, ServedModel, PredictionLike] = Batching(
            functools.partial(predict_rows, batch_size=limits.max_batch_size),
            limits,
            key_of=batch_key,
            is_live=is_live,
            name_of=str,
            # SharedBaseModels runs calls from several threads at once; a whole model, one.
            concurrency_of=lambda key: calls_per_base if isinstance(key, SharedBase) else 1,
        )
        # Sampling is statistical, not a secret: a plain PRNG is right.
        self._sampler = sampler or random.Random()
        self._pending: set[asyncio.Task[None]] = set()

    async def predict(
        self, domain: str, texts: Sequence[str], request_headers: Mapping[str, str]
    ) -> list[ServedPrediction]:
        """Predict `texts` with the model serving `domain` now.

        Raises `NoModelError`, or from batching `Overloaded`/`ShuttingDown` (before anything
        was queued), `DeadlineExceeded` or `ModelCallError`.
        """
        served = self._registry.serving(domain)
        if served is None:
            raise NoModelError(domain, self._no_model_reason(domain))
        # Counted from the lookup (no await in between): a model switched out is released only
        # once the requests it was given are over.
        served.enter()
        try:
            return await self._predict(served, texts, request_headers)
        finally:
            served.leave()

    async def _predict(
        self, served: ServedModel, texts: Sequence[str], request_headers: Mapping[str, str]
    ) -> list[ServedPrediction]:
        domain = served.domain
        # Queued before the first-prediction claim: a refused request is no prediction.
        pending = self.batching.submit(served, texts)
        first_of = served.claim_first_prediction()
        caller = propagate.extract(request_headers)
        caller_span = trace.get_current_span(caller).get_span_context()
        if first_of is not None:
            parent = propagate.extract(first_of)
            links = [Link(caller_span)] if caller_span.is_valid else []
        else:
            parent, links = caller, []
        with self._tracer.start_as_current_span(
            f"predict {domain}",
            context=parent,
            kind=SpanKind.SERVER,
            links=links,
            attributes={
                "adaptmesh.domain": domain,
                "adaptmesh.model_version": served.model_version,
                "adaptmesh.batch_size": len(texts),
                "adaptmesh.first_prediction": first_of is not None,
            },
        ):
            predictions = await pending.result()
            answers = [self._answer(served, prediction) for prediction in predictions]
            # Inside the span: each task copies the current context, so the publish span
            # (and the record's traceparent) belongs to this trace.
            for text, answer, prediction in zip(texts, answers, predictions, strict=True):
                if self._sampled():
                    self._log_inference(
                        served,
                        text,
                        answer,
                        prediction,
                        served.origin if first_of is not None else None,
                    )
        return answers

    async def drain(self) -> None:
        """Wait for the inference logs still being published."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self, grace_seconds: float = 0.0) -> None:
        """Stop batching (queued requests get up to `grace_seconds`, then `ShuttingDown`),
        then wait for the inference logs still being published."""
        await self.batching.close(grace_seconds)
        await self.drain()

    def _no_model_reason(self, domain: str) -> str:
        status = self._registry.status(domain)
        if status is None or status.last_error is None:
            return f"no model serves domain {domain!r}: no model.ready has been seen for it"
        return f"no model serves domain {domain!r}: {status.last_error.reason}"

    def _answer(self, served: ServedModel, prediction: PredictionLike) -> ServedPrediction:
        return ServedPrediction(
            prediction_id=str(uuid.uuid4()),
            domain=served.domain,
            model_version=served.model_version,
            label=prediction.label,
            confidence=prediction.confidence,
            probabilities=dict(prediction.probabilities),
        )

    def _sampled(self) -> bool:
        return self._sample_rate >= 1.0 or self._sampler.random() < self._sample_rate

    def _log_inference(
        self,
        served: ServedModel,
        text: str,
        answer: ServedPrediction,
        prediction: PredictionLike,
        origin: ModelOrigin | None,
    ) -> None:
        task = asyncio.create_task(self._publish_logged(served, text, answer, prediction, origin))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish_logged(
        self,
        served: ServedModel,
        text: str,
        answer: ServedPrediction,
        prediction: PredictionLike,
        origin: ModelOrigin | None,
    ) -> None:
        try:
            event = InferenceLogged(
                domain=served.domain,
                prediction_id=answer.prediction_id,
                model_version=answer.model_version,
                label=answer.label,
                # Clamped: float rounding must not turn a valid answer into an invalid log.
                confidence=min(1.0, max(0.0, answer.confidence)),
                margin=min(1.0, max(0.0, prediction.margin)),
                embedding_sketch=tuple(prediction.embedding_sketch),
                text=text[:MAX_LOGGED_TEXT_CHARS] if self._log_texts else None,
            )
            await self._publish(event, origin)
        except Exception:
            # The caller has its answer; a log that cannot be built or sent must not undo it.
            log.exception("inference log for prediction %s not published", answer.prediction_id)


@dataclass(frozen=True, slots=True)
class SharedBase:
    """The batch key of every model on one base model of one `SharedBaseModels`."""

    models: SharedBaseModels
    base: BaseModelSpec

    def __str__(self) -> str:
        return f"base {self.base.model_id}"


def batch_key(served: ServedModel) -> Hashable:
    """Which batches a model's rows may join: those of its base model when it shares one
    (rows of several domains then run in one forward pass), else its own."""
    predictor = served.predictor
    if isinstance(predictor, DomainModel):
        return SharedBase(predictor.owner, predictor.base_key)
    return served


def predict_rows(rows: Sequence[tuple[ServedModel, str]], batch_size: int) -> list[PredictionLike]:
    """Batching's executor: the rows of models on a shared base in one mixed-adapter call
    (`SharedBaseModels.predict_mixed`), those of a model loaded whole in one `predict` call;
    answers in row order. Blocking."""
    groups: dict[Hashable, list[int]] = {}
    for index, (served, _) in enumerate(rows):
        groups.setdefault(batch_key(served), []).append(index)
    answers: list[PredictionLike | None] = [None] * len(rows)
    for key, indices in groups.items():
        predictions: Sequence[PredictionLike]
        if isinstance(key, SharedBase):
            mixed = [(_domain_model(rows[index][0]), rows[index][1]) for index in indices]
            predictions = key.models.predict_mixed(mixed, batch_size=batch_size)
        else:
            served = rows[indices[0]][0]
            texts = [rows[index][1] for index in indices]
            predictions = served.predictor.predict(texts, batch_size=batch_size)
        if len(predictions) != len(indices):
            raise RuntimeError(
                f"{key} answered {len(predictions)} predictions for {len(indices)} texts"
            )
        for index, prediction in zip(indices, predictions, strict=True):
            answers[index] = prediction
    return [answer for answer in answers if answer is not None]


def _domain_model(served: ServedModel) -> DomainModel:
    predictor = served.predictor
    assert isinstance(predictor, DomainModel)  # its batch key says so
    return predictor
