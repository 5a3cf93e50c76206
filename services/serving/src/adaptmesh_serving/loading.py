"""Turning a `model.ready` record into the model serving its domain."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from adaptmesh_schemas.events import ModelReady
from adaptmesh_schemas.values import ArtifactRef
from adaptmesh_serving.registry import (
    LoadDecision,
    LoadFailure,
    ModelOrigin,
    ModelRegistry,
    Predictor,
    ServedModel,
)

log = logging.getLogger(__name__)

ModelLoader = Callable[[ArtifactRef], Predictor]
"""Loads (and digest-verifies) the model behind a manifest reference; blocking."""

WARM_UP_TEXT = "warm-up"
"""Answered once by every freshly loaded model before it serves: the first call of a model
pays for lazy initialisation (kernels, caches), which no user request should."""


@dataclass(frozen=True, slots=True)
class SwapOutcome:
    """What became of one `model.ready` record."""

    decision: LoadDecision
    served: ServedModel | None = None
    """The model installed from this record, when it was."""
    failure: LoadFailure | None = None
    """Why the model could not be loaded, when it could not; the old model keeps serving."""
    replaced: str | None = None
    """The version the domain served before the switch (or still serves, after a failure)."""
    load_seconds: float = 0.0
    """Reading, verifying, loading and warming up the model."""
    switch_ms: float = 0.0
    """From the record read to the switch, the load excluded."""


async def load_and_swap(
    registry: ModelRegistry, load: ModelLoader, ready: ModelReady, origin: ModelOrigin
) -> SwapOutcome:
    """Load the model `ready` names, off the event loop, and swap it in if it is still due.

    A model that cannot be loaded (missing file, digest mismatch, a manifest that names
    another model) leaves the current one serving and is recorded in the domain's status.
    """
    read_at = time.perf_counter()
    decision = registry.decide(ready, origin)
    if decision is not LoadDecision.LOAD:
        log.info(
            "%s: %s from offset %d is %s; nothing to load",
            ready.domain,
            ready.model_version,
            origin.offset,
            decision.value,
        )
        return SwapOutcome(decision)
    loading_started = time.perf_counter()
    try:
        predictor = await asyncio.to_thread(_load_and_warm_up, load, ready.artifact)
        mismatch = _mismatch(predictor, ready)
    except Exception as error:  # noqa: BLE001  (every way a load fails is reported the same way)
        mismatch = f"{type(error).__name__}: {error}"
    load_seconds = time.perf_counter() - loading_started
    if mismatch is not None:
        reason = f"model {ready.model_version} from {ready.artifact.uri} not loaded: {mismatch}"
        failure = registry.record_failure(ready, origin, reason)
        current = registry.serving(ready.domain)
        log.error(
            "%s; %s keeps serving",
            reason,
            current.model_version if current else "no model",
        )
        return SwapOutcome(
            decision,
            failure=failure,
            replaced=current.model_version if current else None,
            load_seconds=load_seconds,
        )
    # Records are handled one at a time, but decide again: the load took a while.
    if (again := registry.decide(ready, origin)) is not LoadDecision.LOAD:
        return SwapOutcome(again)
    before = registry.serving(ready.domain)
    served = registry.install(predictor, ready, origin)
    switch_seconds = time.perf_counter() - read_at - load_seconds
    log.info(
        "%s: now serving %s (labels %s)", ready.domain, ready.model_version, ", ".join(ready.labels)
    )
    return SwapOutcome(
        decision,
        served=served,
        replaced=before.model_version if before else None,
        load_seconds=load_seconds,
        switch_ms=switch_seconds * 1000,
    )


def _load_and_warm_up(load: ModelLoader, artifact: ArtifactRef) -> Predictor:
    predictor = load(artifact)
    predictor.predict([WARM_UP_TEXT], batch_size=1)
    return predictor


def _mismatch(predictor: Predictor, ready: ModelReady) -> str | None:
    """Why the loaded model is not the one the event describes, if it is not.

    The digest only proves the files are the ones the manifest lists; a manifest of another
    version, or a head whose labels are in another order, would mislabel every prediction.
    """
    if predictor.model_version != ready.model_version:
        return f"the manifest names model {predictor.model_version}"
    if tuple(predictor.labels) != tuple(ready.labels):
        return (
            f"the model's labels {list(predictor.labels)} differ from the event's "
            f"{list(ready.labels)}"
        )
    return None
