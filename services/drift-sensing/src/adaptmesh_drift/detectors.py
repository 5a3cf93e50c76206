"""Statistical drift detectors, registered by name and chosen in settings.

A detector looks at a summary of the last N inference records of a domain (`WindowSummary`)
and at the domain's reference distribution (its latest dataset version) and returns a
`Finding`: the statistic, the p-value when the test has one, the threshold and whether the
window drifted. Detectors register themselves with `@register_detector("<name>")` (the PEFT
pattern), so adding one is a new class here and a name in `MESH_DRIFT_DETECTORS`, not another
branch somewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeVar

import numpy as np
from scipy import stats

from adaptmesh_schemas.values import DriftEvidence

# A label the reference never saw still gets half an observation's worth of expected count in
# the window (the Jeffreys pseudo-count, in window units): without it the chi-squared statistic
# is infinite for a single stray prediction, with it a few strays do not fire but a label that
# takes a real share of the predictions does.
MIN_EXPECTED_COUNT = 0.5


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """What a detector may know about a window of inference records."""

    label_counts: Mapping[str, int]
    confidence_sum: float

    @property
    def size(self) -> int:
        return sum(self.label_counts.values())

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.size if self.size else 0.0

    @classmethod
    def of(cls, records: Sequence[tuple[str, float]]) -> WindowSummary:
        """Summarise (label, confidence) pairs; handy for tests and one-off checks."""
        counts: dict[str, int] = {}
        for label, _ in records:
            counts[label] = counts.get(label, 0) + 1
        return cls(counts, sum(confidence for _, confidence in records))


@dataclass(frozen=True, slots=True)
class Reference:
    """The distribution a healthy window is expected to follow: examples per label."""

    per_label: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Finding:
    """One detector's verdict on one window."""

    detector: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool
    window_size: int

    def evidence(self) -> DriftEvidence:
        return DriftEvidence(
            detector=self.detector,
            statistic=self.statistic,
            p_value=self.p_value,
            threshold=self.threshold,
            window_size=self.window_size,
        )

    def describe(self) -> str:
        """One line for people: what was measured against what."""
        if self.p_value is None:
            return (
                f"{self.detector}: statistic {self.statistic:.4g} vs threshold "
                f"{self.threshold:.4g} over {self.window_size} predictions"
            )
        return (
            f"{self.detector}: statistic {self.statistic:.4g}, p={self.p_value:.3g} vs "
            f"threshold {self.threshold:.3g} over {self.window_size} predictions"
        )


@dataclass(frozen=True, slots=True)
class DetectorThresholds:
    """Decision thresholds, from settings; each detector reads the one it needs."""

    p_value: float = 0.001
    min_mean_confidence: float = 0.5


class Detector(Protocol):
    name: ClassVar[str]

    def examine(self, window: WindowSummary, reference: Reference) -> Finding: ...


DetectorFactory = Callable[[DetectorThresholds], Detector]
DETECTORS: dict[str, DetectorFactory] = {}
"""Every registered detector by name."""

D = TypeVar("D", bound=type[Detector])


def register_detector(name: str) -> Callable[[D], D]:
    """Class decorator: make a detector choosable by `name` in settings."""

    def register(cls: D) -> D:
        if name in DETECTORS and DETECTORS[name] is not cls:
            raise ValueError(f"detector {name!r} registered twice")
        cls.name = name
        DETECTORS[name] = cls
        return cls

    return register


def build_detectors(names: Sequence[str], thresholds: DetectorThresholds) -> list[Detector]:
    """The detectors named, in that order (the first that fires is the one reported)."""
    unknown = [name for name in names if name not in DETECTORS]
    if unknown:
        raise ValueError(
            f"unknown drift detector(s) {', '.join(unknown)}; known: {', '.join(sorted(DETECTORS))}"
        )
    return [DETECTORS[name](thresholds) for name in names]


@register_detector("label-chi2")
class LabelChiSquared:
    """Chi-squared goodness of fit of the predicted-label counts against the reference.

    The categories are the labels the reference has examples for plus any label predicted in
    the window; expected counts are the reference proportions scaled to the window, floored at
    `MIN_EXPECTED_COUNT` and renormalised. Labels with neither reference mass nor predictions
    add nothing but degrees of freedom, so they are left out.
    """

    name: ClassVar[str]

    def __init__(self, thresholds: DetectorThresholds) -> None:
        self.threshold = thresholds.p_value

    def examine(self, window: WindowSummary, reference: Reference) -> Finding:
        size = window.size
        labels = sorted(
            {label for label, count in reference.per_label.items() if count > 0}
            | {label for label, count in window.label_counts.items() if count > 0}
        )
        if size == 0 or len(labels) < 2:  # a test needs two categories
            return Finding(self.name, 0.0, 1.0, self.threshold, drifted=False, window_size=size)
        observed = np.array([window.label_counts.get(label, 0) for label in labels], dtype=float)
        reference_counts = np.array(
            [max(reference.per_label.get(label, 0), 0) for label in labels], dtype=float
        )
        total = reference_counts.sum()
        shares = reference_counts / total if total > 0 else np.full(len(labels), 1 / len(labels))
        expected = np.maximum(shares * size, MIN_EXPECTED_COUNT)
        expected *= size / expected.sum()
        result = stats.chisquare(observed, expected)
        statistic, p_value = float(result.statistic), float(result.pvalue)
        return Finding(
            self.name,
            statistic,
            p_value,
            self.threshold,
            drifted=p_value < self.threshold,
            window_size=size,
        )


@register_detector("confidence-drop")
class ConfidenceDrop:
    """The window's mean confidence fell below a floor: the model is unsure of what it sees."""

    name: ClassVar[str]

    def __init__(self, thresholds: DetectorThresholds) -> None:
        self.threshold = thresholds.min_mean_confidence

    def examine(self, window: WindowSummary, reference: Reference) -> Finding:
        mean = window.mean_confidence
        return Finding(
            self.name,
            mean,
            None,
            self.threshold,
            drifted=window.size > 0 and mean < self.threshold,
            window_size=window.size,
        )
