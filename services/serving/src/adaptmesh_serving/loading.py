"""Turning a `model.ready` record into the model serving its domain.

Where models come from is a `ModelSource`: by default `SharedBaseSource`, which keeps each base
model once per replica and every domain's model as an adapter and head on it
(`adaptmesh_ml.SharedBaseModels`); `SeparateModels` loads each model whole (tests' fakes, or a
loader of the user's). A new version is loaded beside the one serving, warmed up, switched in
atomically, and the old one is released once the requests it was answering are done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from adaptmesh_kit import ArtifactStore
from adaptmesh_kit.faults import fault_point
from adaptmesh_ml import DomainModel, SharedBaseModels
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


class ModelSource(Protocol):
    """Loads the models `model.ready` names and lets go of those no longer served."""

    def load(self, ready: ModelReady) -> Predictor:
        """The model `ready` names, every file's digest verified. Blocking."""
        ...

    def release(self, predictor: Predictor) -> None:
        """`predictor` answers nothing more: free what it holds. Blocking."""
        ...


@dataclass(frozen=True, slots=True)
class SeparateModels:
    """Each model loaded whole by `load_artifact` (e.g. `Classifier.load`); a released model
    is simply dropped."""

    load_artifact: ModelLoader

    def load(self, ready: ModelReady) -> Predictor:
        return self.load_artifact(ready.artifact)

    def release(self, predictor: Predictor) -> None:
        return None


@dataclass(frozen=True, slots=True)
class SharedBaseSource:
    """Every domain's model as an adapter and head on its base model, each base in memory
    once (`SharedBaseModels`, whose cap on resident models unloads the least recently used
    and reloads it from the store when next asked for)."""

    models: SharedBaseModels
    store: ArtifactStore

    def load(self, ready: ModelReady) -> Predictor:
        # Not activated: which version serves a domain is the registry's decision.
        return self.models.load(ready.domain, self.store, ready.artifact, activate=False)

    def release(self, predictor: Predictor) -> None:
        if isinstance(predictor, DomainModel):
            self.models.unload(predictor)


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
    retired: ServedModel | None = None
    """The model switched out: release it once its requests are done (`retire`)."""
    load_seconds: float = 0.0
    """Reading, verifying, loading and warming up the model."""
    switch_ms: float = 0.0
    """From the record read to the switch, the load excluded."""


async def load_and_swap(
    registry: ModelRegistry, source: ModelSource, ready: ModelReady, origin: ModelOrigin
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
    predictor: Predictor | None = None
    try:
        predictor = await asyncio.to_thread(source.load, ready)
        mismatch = _mismatch(predictor, ready)
        if mismatch is None:
            await asyncio.to_thread(_warm_up, predictor)
    except Exception as error:  # noqa: BLE001  (every way a load fails is reported the same way)
        mismatch = f"{type(error).__name__}: {error}"
    load_seconds = time.perf_counter() - loading_started
    if mismatch is not None:
        if predictor is not None:
            await _release(source, predictor)
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
    assert predictor is not None  # loaded without a mismatch
    fault_point("serving.loaded")  # loaded and warm, not yet switched in
    # Records are handled one at a time, but decide again: the load took a while.
    if (again := registry.decide(ready, origin)) is not LoadDecision.LOAD:
        await _release(source, predictor)
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
        retired=before,
        load_seconds=load_seconds,
        switch_ms=switch_seconds * 1000,
    )


async def retire(source: ModelSource, served: ServedModel) -> None:
    """Release a model switched out, once the requests it was given are answered: they
    finish on the model they started with."""
    await served.drained()
    await _release(source, served.predictor)
    log.info("%s: released %s", served.domain, served.model_version)


async def _release(source: ModelSource, predictor: Predictor) -> None:
    try:
        await asyncio.to_thread(source.release, predictor)
    except Exception:
        # What it held stays in memory until the process ends; serving is not affected.
        log.exception("model %s could not be released", predictor.model_version)


def _warm_up(predictor: Predictor) -> None:
    predictor.predict([WARM_UP_TEXT], batch_size=1)


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
