"""Reference profiles: how a model answers its own eval split, for drift-sensing to compare with.

The profile keeps, per eval example, what serving's inference logs carry for a live request
(predicted label, confidence, margin, embedding sketch) plus the true label, so every drift
detector can build its reference — and simulate no-drift streams — from one document.
"""

from __future__ import annotations

from collections.abc import Sequence

from adaptmesh_ml.classifier import SKETCH_DIMENSIONS, Classifier, Prediction
from adaptmesh_schemas.documents import DatasetExample, ReferenceExample, ReferenceProfile
from adaptmesh_schemas.values import DriftPolicy


def profile_from_predictions(
    predictions: Sequence[Prediction],
    examples: Sequence[DatasetExample],
    *,
    domain: str,
    dataset_version: str,
    model_version: str,
    labels: Sequence[str],
    drift: DriftPolicy | None = None,
) -> ReferenceProfile:
    """The profile of a model whose `predictions` on `examples` (same order) are known."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    rows = tuple(
        ReferenceExample(
            example_id=example.example_id,
            label=example.label,
            predicted=prediction.label,
            confidence=min(1.0, max(0.0, prediction.confidence)),
            margin=prediction.margin,
            embedding_sketch=tuple(prediction.embedding_sketch),
        )
        for prediction, example in zip(predictions, examples, strict=True)
    )
    correct = sum(row.label == row.predicted for row in rows)
    return ReferenceProfile(
        domain=domain,
        model_version=model_version,
        dataset_version=dataset_version,
        labels=tuple(labels),
        sketch_dimensions=len(rows[0].embedding_sketch) if rows else SKETCH_DIMENSIONS,
        accuracy=correct / len(rows) if rows else 0.0,
        drift=drift or DriftPolicy(),
        examples=rows,
    )


def reference_profile(
    classifier: Classifier,
    examples: Sequence[DatasetExample],
    *,
    domain: str,
    dataset_version: str,
    drift: DriftPolicy | None = None,
) -> ReferenceProfile:
    """Score `examples` (the eval split) with `classifier` and profile the answers."""
    predictions = classifier.predict([example.text for example in examples]) if examples else []
    return profile_from_predictions(
        predictions,
        examples,
        domain=domain,
        dataset_version=dataset_version,
        model_version=classifier.model_version,
        labels=classifier.labels,
        drift=drift,
    )
