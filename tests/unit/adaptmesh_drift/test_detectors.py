"""The registered detectors on synthetic windows."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
from scipy import stats

from adaptmesh_drift.detectors import (
    DETECTORS,
    MIN_EXPECTED_COUNT,
    DetectorThresholds,
    Finding,
    Reference,
    WindowSummary,
    build_detectors,
    register_detector,
)

REFERENCE = Reference({"acq": 500, "crude": 250, "earn": 150, "grain": 100})
LABELS = list(REFERENCE.per_label)
SHARES = np.array(list(REFERENCE.per_label.values()), dtype=float) / 1000
WINDOW = 200


def drawn(rng: np.random.Generator, shares: np.ndarray, size: int = WINDOW) -> WindowSummary:
    counts = rng.multinomial(size, shares)
    return WindowSummary(
        {label: int(c) for label, c in zip(LABELS, counts, strict=True) if c}, 0.9 * size
    )


def test_both_detectors_are_registered_under_their_names() -> None:
    assert {"label-chi2", "confidence-drop"} <= set(DETECTORS)
    detectors = build_detectors(["confidence-drop", "label-chi2"], DetectorThresholds())
    assert [d.name for d in detectors] == ["confidence-drop", "label-chi2"]


def test_an_unknown_detector_name_is_refused() -> None:
    with pytest.raises(ValueError, match="no-such-test"):
        build_detectors(["no-such-test"], DetectorThresholds())


def test_a_name_cannot_be_registered_by_two_detectors() -> None:
    with pytest.raises(ValueError, match="twice"):

        @register_detector("label-chi2")
        class Impostor:
            name: ClassVar[str]

            def __init__(self, thresholds: DetectorThresholds) -> None: ...

            def examine(self, window: WindowSummary, reference: Reference) -> Finding:
                raise NotImplementedError


def test_windows_drawn_from_the_reference_rarely_fire_and_p_values_are_uniform() -> None:
    [detector] = build_detectors(["label-chi2"], DetectorThresholds(p_value=0.001))
    rng = np.random.default_rng(7)
    findings = [detector.examine(drawn(rng, SHARES), REFERENCE) for _ in range(1000)]
    p_values = np.array([f.p_value for f in findings])
    # Under the null the p-values are uniform: about 5% below 0.05, about half below 0.5,
    # and (at p < 0.001) about one window in a thousand fires.
    assert 0.03 < (p_values < 0.05).mean() < 0.07
    assert 0.45 < (p_values < 0.5).mean() < 0.55
    assert sum(f.drifted for f in findings) <= 4


def test_a_skewed_window_fires_with_a_tiny_p_value() -> None:
    [detector] = build_detectors(["label-chi2"], DetectorThresholds(p_value=0.001))
    skewed = np.array([0.1, 0.1, 0.1, 0.7])  # grain, rare in the reference, dominates
    finding = detector.examine(drawn(np.random.default_rng(3), skewed), REFERENCE)
    assert finding.drifted
    assert finding.p_value is not None
    assert finding.p_value < 1e-20
    assert finding.detector == "label-chi2"
    assert finding.window_size == WINDOW
    evidence = finding.evidence()
    assert evidence.detector == "label-chi2"
    assert evidence.threshold == 0.001
    assert evidence.window_size == WINDOW


def test_the_statistic_is_pearsons_chi_squared_against_scaled_reference_counts() -> None:
    [detector] = build_detectors(["label-chi2"], DetectorThresholds())
    window = WindowSummary({"acq": 90, "crude": 60, "earn": 30, "grain": 20}, 150.0)
    finding = detector.examine(window, REFERENCE)
    expected = SHARES * 200
    observed = np.array([90, 60, 30, 20])
    statistic = float(((observed - expected) ** 2 / expected).sum())
    assert finding.statistic == pytest.approx(statistic)
    assert finding.p_value == pytest.approx(float(stats.chi2.sf(statistic, df=3)))


def test_labels_without_reference_mass_do_not_break_the_test() -> None:
    [detector] = build_detectors(["label-chi2"], DetectorThresholds(p_value=0.001))
    with_empty = Reference({**REFERENCE.per_label, "retired": 0, "new": 0})
    healthy = drawn(np.random.default_rng(11), SHARES)
    finding = detector.examine(healthy, with_empty)
    assert finding.p_value is not None
    assert np.isfinite(finding.statistic)
    assert not finding.drifted

    # One stray prediction of a label the reference never saw: finite, no alarm...
    stray = WindowSummary({**healthy.label_counts, "retired": 1}, 0.9 * (WINDOW + 1))
    assert np.isfinite(detector.examine(stray, with_empty).statistic)
    assert not detector.examine(stray, with_empty).drifted
    # ...but a label the reference never saw taking a tenth of the predictions is drift.
    counts = dict(healthy.label_counts)
    counts["acq"] -= 20
    taken_over = WindowSummary({**counts, "retired": 20}, 0.9 * WINDOW)
    assert detector.examine(taken_over, with_empty).drifted
    assert MIN_EXPECTED_COUNT > 0


def test_a_single_category_cannot_be_tested() -> None:
    [detector] = build_detectors(["label-chi2"], DetectorThresholds())
    finding = detector.examine(WindowSummary({"acq": 200}, 180.0), Reference({"acq": 10}))
    assert finding.p_value == 1.0
    assert not finding.drifted


def test_confidence_drop_fires_below_the_floor_only() -> None:
    [detector] = build_detectors(["confidence-drop"], DetectorThresholds(min_mean_confidence=0.5))
    sure = WindowSummary.of([("acq", 0.8)] * 100 + [("earn", 0.4)] * 100)
    unsure = WindowSummary.of([("acq", 0.45)] * 150 + [("earn", 0.6)] * 50)
    assert detector.examine(sure, REFERENCE).statistic == pytest.approx(0.6)
    assert not detector.examine(sure, REFERENCE).drifted
    finding = detector.examine(unsure, REFERENCE)
    assert finding.drifted
    assert finding.statistic == pytest.approx(0.4875)
    assert finding.p_value is None
    assert finding.evidence().p_value is None
    assert "0.4875" in finding.describe()
