"""Which model serves each domain, and the rules for replacing it.

`mesh.models.ready.v1` is the truth: a domain is served by the model named in its latest
`model.ready` record. The registry applies that rule to what this process has read:

* a record at an earlier position of the domain's partition than the one that loaded the
  current model is stale and never rolls the domain back (a replay or a redelivery);
* the record that loaded the current model, or another one naming the same model version and
  manifest digest, changes nothing (no reload);
* anything else replaces the current model, atomically: a request holds on to the model it
  started with, the next one gets the new model.

A model version that was superseded earlier but arrives in a *newer* record is a deliberate
re-promotion and is loaded: refusing it would make replicas disagree, because a replica that
starts after compaction sees only that newer record.

Pure logic: no broker, no HTTP, no ML framework (a model is anything with `predict`).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from adaptmesh_schemas.events import ModelReady


class PredictionLike(Protocol):
    """One prediction as a model returns it (`adaptmesh_ml.Prediction` is one)."""

    @property
    def label(self) -> str: ...
    @property
    def confidence(self) -> float: ...
    @property
    def margin(self) -> float:
        """Top probability minus the runner-up's. Taken from the model library rather than
        recomputed here: drift-sensing compares it with the margins of the model's reference
        profile, which the library computed the same way."""
        ...

    @property
    def probabilities(self) -> Mapping[str, float]: ...
    @property
    def embedding_sketch(self) -> Sequence[float]: ...


class Predictor(Protocol):
    """A loaded model (`adaptmesh_ml.Classifier` is one). `predict` blocks: CPU-bound."""

    @property
    def model_version(self) -> str: ...
    @property
    def labels(self) -> tuple[str, ...]: ...
    def predict(self, texts: Sequence[str], batch_size: int = ...) -> Sequence[PredictionLike]: ...


@dataclass(frozen=True, slots=True)
class ModelOrigin:
    """The `model.ready` record a model was loaded from."""

    partition: int
    offset: int
    event_id: str
    correlation_id: str
    trace_carrier: Mapping[str, str] = field(default_factory=dict)
    """W3C trace context of the span that handled the record: the first prediction served by
    the model joins that trace."""

    def is_before(self, other: ModelOrigin) -> bool:
        """Whether this record precedes `other` in the log.

        A domain's records share one partition (key = domain), so offsets order them; records
        on different partitions (the topic was repartitioned) cannot be ordered and are not
        treated as stale.
        """
        return self.partition == other.partition and self.offset < other.offset


class ServedModel:
    """A loaded model serving one domain, with what `model.ready` said about it.

    Its `predictor` is called by serving's batching only (`batching.py`). It counts the
    requests it is answering (`enter`/`leave`) so that, once replaced, it is released only
    after the last of them (`drained`).
    """

    def __init__(
        self, predictor: Predictor, ready: ModelReady, origin: ModelOrigin, loaded_at: datetime
    ) -> None:
        self.predictor = predictor
        self.ready = ready
        self.origin = origin
        self.loaded_at = loaded_at
        self._first_prediction_claimed = False
        self.in_flight = 0
        """Requests given this model that have not been answered yet."""
        self._drained = asyncio.Event()
        self._drained.set()

    def __repr__(self) -> str:
        return f"{self.domain}:{self.model_version}"

    @property
    def domain(self) -> str:
        return self.ready.domain

    @property
    def model_version(self) -> str:
        return self.ready.model_version

    def enter(self) -> None:
        """A request was given this model (call on the event loop, right after the lookup)."""
        self.in_flight += 1
        self._drained.clear()

    def leave(self) -> None:
        """A request given this model is over, however it ended."""
        self.in_flight -= 1
        if self.in_flight == 0:
            self._drained.set()

    async def drained(self) -> None:
        """Return once no request is using this model (at once if none is)."""
        await self._drained.wait()

    def claim_first_prediction(self) -> Mapping[str, str] | None:
        """The trace context of the record that loaded this model, to the first caller only.

        Synchronous on purpose: on the event loop, checking and setting the flag cannot be
        interleaved with another request.
        """
        if self._first_prediction_claimed:
            return None
        self._first_prediction_claimed = True
        return self.origin.trace_carrier


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """A `model.ready` whose model could not be served."""

    model_version: str
    artifact_uri: str
    artifact_sha256: str
    reason: str
    event_id: str
    offset: int
    failed_at: datetime


@dataclass(frozen=True, slots=True)
class DomainStatus:
    """What serves a domain, and the last model that failed to replace it."""

    domain: str
    served: ServedModel | None
    last_error: LoadFailure | None


class LoadDecision(enum.Enum):
    """What to do with a `model.ready` record."""

    LOAD = "load"
    ALREADY_SERVING = "already-serving"
    STALE = "stale"


def _older_promotion(ready: ModelReady, current: ModelReady) -> bool:
    """Whether `ready` promotes no later than what serves: the gate numbers each domain's
    promotions, so a record numbered at or below the current one (or without a number while
    the current one has one) is a late or foreign write, never a deliberate change; a rollback
    on purpose comes as a new, higher number."""
    if current.promotion is None:
        return False
    if ready.promotion is None:
        return True
    return ready.promotion < current.promotion or (
        ready.promotion == current.promotion and ready.model_version != current.model_version
    )


class ModelRegistry:
    """The model serving each domain in this process."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._served: dict[str, ServedModel] = {}
        self._errors: dict[str, LoadFailure] = {}

    def decide(self, ready: ModelReady, origin: ModelOrigin) -> LoadDecision:
        """Whether the model in `ready` should replace what serves its domain."""
        current = self._served.get(ready.domain)
        if current is None:
            return LoadDecision.LOAD
        if origin.event_id == current.origin.event_id:
            return LoadDecision.ALREADY_SERVING
        if origin.is_before(current.origin) or _older_promotion(ready, current.ready):
            return LoadDecision.STALE
        if (
            ready.model_version == current.model_version
            and ready.artifact.sha256 == current.ready.artifact.sha256
        ):
            return LoadDecision.ALREADY_SERVING
        return LoadDecision.LOAD

    def install(self, predictor: Predictor, ready: ModelReady, origin: ModelOrigin) -> ServedModel:
        """Make `predictor` serve its domain from now on; it must be what `ready` describes.

        Raises `ValueError` if the decision for this record is no longer LOAD (a newer model
        was installed meanwhile), so a slow load can never overwrite a newer model.
        """
        decision = self.decide(ready, origin)
        if decision is not LoadDecision.LOAD:
            raise ValueError(
                f"{ready.domain}: {ready.model_version} from offset {origin.offset} is "
                f"{decision.value}; not installed"
            )
        served = ServedModel(predictor, ready, origin, self._clock())
        self._served[ready.domain] = served
        # The status describes the model now serving; an earlier failed replacement was
        # reported (log, dead letter) when it happened.
        self._errors.pop(ready.domain, None)
        return served

    def record_failure(self, ready: ModelReady, origin: ModelOrigin, reason: str) -> LoadFailure:
        """Remember that the model in `ready` could not be loaded; what serves stays."""
        failure = LoadFailure(
            model_version=ready.model_version,
            artifact_uri=ready.artifact.uri,
            artifact_sha256=ready.artifact.sha256,
            reason=reason,
            event_id=origin.event_id,
            offset=origin.offset,
            failed_at=self._clock(),
        )
        self._errors[ready.domain] = failure
        return failure

    def serving(self, domain: str) -> ServedModel | None:
        """The model serving `domain`, if any."""
        return self._served.get(domain)

    def status(self, domain: str) -> DomainStatus | None:
        """What is known about `domain`; None if no `model.ready` for it was seen."""
        served = self._served.get(domain)
        error = self._errors.get(domain)
        if served is None and error is None:
            return None
        return DomainStatus(domain, served, error)

    def domains(self) -> list[str]:
        """Every domain with a model or a failed load, sorted."""
        return sorted(self._served.keys() | self._errors.keys())

    def served(self) -> list[ServedModel]:
        """Every model serving a domain now, by domain."""
        return [self._served[domain] for domain in sorted(self._served)]
