"""A production model's reference: its reference profile as arrays the detectors compute with.

The gate writes a `ReferenceProfile` when it promotes a model: per eval example the predicted
label, confidence, margin and embedding sketch (what serving's inference logs carry) and the
true label. Every detector takes its reference from here and simulates no-drift streams by
drawing from it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy.optimize import isotonic_regression

from adaptmesh_schemas.documents import ReferenceProfile
from adaptmesh_schemas.values import DriftPolicy

FloatArray = np.ndarray


@dataclass(frozen=True)
class ReferenceData:
    """The arrays of one profile, indexed by eval example."""

    profile_sha256: str
    domain: str
    model_version: str
    dataset_version: str
    labels: tuple[str, ...]
    policy: DriftPolicy
    sketches: FloatArray  # (n, d)
    predicted: np.ndarray  # (n,) index into `labels`
    confidence: FloatArray  # (n,)
    correct: np.ndarray  # (n,) bool
    calibration_x: FloatArray  # increasing confidences ...
    calibration_y: FloatArray  # ... and the fitted probability of being right at each

    @classmethod
    def of(cls, profile: ReferenceProfile, profile_sha256: str) -> ReferenceData:
        index = {label: i for i, label in enumerate(profile.labels)}
        rows = [row for row in profile.examples if row.predicted in index]
        dimensions = {len(row.embedding_sketch) for row in rows}
        if len(dimensions) > 1:
            raise ValueError(f"profile of {profile.model_version}: sketches of sizes {dimensions}")
        confidence = np.array([row.confidence for row in rows], dtype=float)
        correct = np.array([row.label == row.predicted for row in rows], dtype=bool)
        calibration_x, calibration_y = _isotonic_calibration(confidence, correct)
        return cls(
            profile_sha256=profile_sha256,
            domain=profile.domain,
            model_version=profile.model_version,
            dataset_version=profile.dataset_version,
            labels=tuple(profile.labels),
            policy=profile.drift,
            sketches=np.array([row.embedding_sketch for row in rows], dtype=float).reshape(
                len(rows), -1
            ),
            predicted=np.array([index[row.predicted] for row in rows], dtype=np.int64),
            confidence=confidence,
            correct=correct,
            calibration_x=calibration_x,
            calibration_y=calibration_y,
        )

    @property
    def size(self) -> int:
        return len(self.confidence)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if self.size else 0.0

    def expected_correct(self, confidence: FloatArray | float) -> FloatArray:
        """The probability that a prediction made with `confidence` is right (isotonic fit on
        the eval split: the CBPE idea — confidences are calibrated before they are averaged)."""
        if self.calibration_x.size == 0:
            return np.asarray(confidence, dtype=float)
        return np.asarray(np.interp(confidence, self.calibration_x, self.calibration_y))

    def seed(self, purpose: str) -> int:
        """A seed every instance derives alike from the profile, so calibrations agree."""
        digest = hashlib.sha256(f"{self.profile_sha256}:{purpose}".encode()).digest()
        return int.from_bytes(digest[:8], "big")


def _isotonic_calibration(
    confidence: FloatArray, correct: np.ndarray
) -> tuple[FloatArray, FloatArray]:
    """Monotone map confidence -> P(correct), as knots for `np.interp` (distinct x)."""
    if confidence.size == 0:
        return np.empty(0), np.empty(0)
    order = np.argsort(confidence, kind="stable")
    fitted = isotonic_regression(correct[order].astype(float), increasing=True).x
    knots, first = np.unique(confidence[order], return_index=True)
    # Tied confidences share one fitted value (isotonic pools them); take the pool's mean.
    ends = np.append(first[1:], len(order))
    values = np.array([fitted[start:end].mean() for start, end in zip(first, ends, strict=True)])
    return knots, values
