"""Loading a model.ready's model and swapping it in, or keeping the old one."""

from __future__ import annotations

import asyncio
import threading

from adaptmesh_kit import ArtifactIntegrityError
from adaptmesh_schemas.events import ModelReady
from adaptmesh_serving.loading import load_and_swap, retire
from adaptmesh_serving.registry import LoadDecision, ModelRegistry, Predictor
from tests.unit.adaptmesh_serving.fakes import DOMAIN, FakeClassifier, model_ready, origin


class Loader:
    """A `ModelSource` of fake models named by the version in the manifest path; can fail like
    the real one; remembers what it released."""

    def __init__(self, *, fail_with: Exception | None = None, version: str | None = None) -> None:
        self.loaded: list[str] = []
        self.released: list[str] = []
        self.threads: set[int] = set()
        self._fail_with = fail_with
        self._version = version

    def load(self, ready: ModelReady) -> Predictor:
        self.threads.add(threading.get_ident())
        self.loaded.append(ready.artifact.uri)
        if self._fail_with is not None:
            raise self._fail_with
        return FakeClassifier(self._version or ready.artifact.uri.split("/")[-2])

    def release(self, predictor: Predictor) -> None:
        self.released.append(predictor.model_version)


async def test_the_first_model_loads_off_the_event_loop() -> None:
    registry, loader = ModelRegistry(), Loader()
    outcome = await load_and_swap(registry, loader, model_ready("v1"), origin(0))
    assert outcome.decision is LoadDecision.LOAD
    assert outcome.served is not None
    assert outcome.failure is None
    assert registry.serving(DOMAIN) is outcome.served
    assert threading.get_ident() not in loader.threads


async def test_a_digest_mismatch_keeps_the_old_model_and_is_reported() -> None:
    registry = ModelRegistry()
    await load_and_swap(registry, Loader(), model_ready("v1"), origin(0))
    bad = Loader(fail_with=ArtifactIntegrityError("artifact x has sha256 1, expected 2"))
    outcome = await load_and_swap(registry, bad, model_ready("v2"), origin(1))
    assert outcome.served is None
    assert outcome.failure is not None
    assert "ArtifactIntegrityError" in outcome.failure.reason
    assert "expected 2" in outcome.failure.reason
    assert "v2" in outcome.failure.reason
    served = registry.serving(DOMAIN)
    assert served is not None
    assert served.model_version == "v1"
    status = registry.status(DOMAIN)
    assert status is not None
    assert status.last_error == outcome.failure


async def test_a_manifest_of_another_model_is_refused() -> None:
    registry = ModelRegistry()
    outcome = await load_and_swap(registry, Loader(version="v9"), model_ready("v1"), origin(0))
    assert outcome.failure is not None
    assert "manifest names model v9" in outcome.failure.reason
    assert registry.serving(DOMAIN) is None


async def test_a_model_loaded_but_refused_is_released_at_once() -> None:
    loader = Loader(version="v9")
    await load_and_swap(ModelRegistry(), loader, model_ready("v1"), origin(0))
    assert loader.released == ["v9"]


async def test_a_replaced_model_is_released_only_after_its_last_request() -> None:
    registry, loader = ModelRegistry(), Loader()
    first = await load_and_swap(registry, loader, model_ready("v1"), origin(0))
    assert first.served is not None
    assert first.retired is None
    first.served.enter()  # a request in flight on v1
    first.served.enter()  # and another

    second = await load_and_swap(registry, loader, model_ready("v2"), origin(1))
    assert second.retired is first.served
    retiring = asyncio.create_task(retire(loader, first.served))
    await asyncio.sleep(0.05)
    assert loader.released == []
    first.served.leave()
    await asyncio.sleep(0.05)
    assert loader.released == []  # one request still uses it
    first.served.leave()
    await asyncio.wait_for(retiring, timeout=5)
    assert loader.released == ["v1"]


async def test_labels_in_another_order_are_refused() -> None:
    registry = ModelRegistry()
    ready = model_ready("v1", labels=("grain", "crude"))
    outcome = await load_and_swap(registry, Loader(), ready, origin(0))
    assert outcome.failure is not None
    assert "labels" in outcome.failure.reason


async def test_stale_and_repeated_records_load_nothing() -> None:
    registry, loader = ModelRegistry(), Loader()
    await load_and_swap(registry, loader, model_ready("v2"), origin(5))
    stale = await load_and_swap(registry, loader, model_ready("v1"), origin(4))
    again = await load_and_swap(registry, loader, model_ready("v2"), origin(5))
    assert stale.decision is LoadDecision.STALE
    assert again.decision is LoadDecision.ALREADY_SERVING
    assert len(loader.loaded) == 1
    served = registry.serving(DOMAIN)
    assert served is not None
    assert served.model_version == "v2"
