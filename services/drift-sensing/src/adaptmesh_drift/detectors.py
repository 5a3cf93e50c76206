"""Online drift detectors, calibrated to an expected run time between false alarms.

Each detector watches one stream of one domain's production model — the sampled inference
records or the feedback on them — and compares it with the model's reference profile (its
behaviour on its own eval split). It is calibrated once per promoted model, by simulating
no-drift streams drawn from that reference (`calibration.py`), so that on a stream like the
reference it raises a false alarm on average once every `budget.ert` records.

Detectors register themselves with `@register_detector("<name>")` (the PEFT pattern) and are
chosen by name in `MESH_DRIFT_DETECTORS`:

* `embedding-mmd` (inference): online MMD² between the last W embedding sketches and the
  reference sketches (Gaussian kernel, median bandwidth) — Alibi Detect's `MMDDriftOnline`;
* `prediction-shift` (inference): chi-squared distance of the last W predicted labels from the
  mix the model predicted on its eval split (black-box shift detection);
* `estimated-accuracy` (inference): the drop of the expected accuracy of the last W predictions
  (confidences calibrated by isotonic regression on the eval split, the CBPE idea) below the
  reference accuracy; alarms only beyond `drift.max_accuracy_drop`;
* `feedback-accuracy` (feedback): Bernoulli CUSUM of the errors of predictions that got ground
  truth, tuned to an accuracy loss of `drift.max_accuracy_drop`.

A detector keeps its state small and JSON-able (`state()` / `restore()`), so a restarted
service carries on mid-window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import numpy as np
from scipy import stats

from adaptmesh_drift.calibration import (
    conditional_thresholds,
    run_length_threshold,
    simulation_count,
    threshold_at,
)
from adaptmesh_drift.reference import ReferenceData
from adaptmesh_schemas.values import DriftEvidence

Watched = Literal["inference", "feedback"]
Calibration = dict[str, Any]
"""What a detector's simulation produced (thresholds and what goes with them): JSON-able, so
it can be cached per profile and not simulated again at every start."""

SIMULATION_CHUNK = 1_000  # simulations per vectorised block: bounds memory, not results
WORLD_SHRINK = 2  # see `_world_draws`
NULL_ERROR_QUANTILE = 0.95  # see FeedbackAccuracy.calibrate
JEFFREYS = 0.5  # pseudo-count per label: a label the reference never predicted is not infinite


class CannotArmError(Exception):
    """The reference cannot support this detector (e.g. too few eval examples); says why."""


@dataclass(frozen=True, slots=True)
class Budget:
    """A detector's share of the domain's false-alarm budget, and its window."""

    ert: float
    window: int


@dataclass(frozen=True, slots=True)
class Observation:
    """What detectors see of one record: an inference record, or feedback on one."""

    label: str | None = None
    confidence: float | None = None
    sketch: tuple[float, ...] = ()
    correct: bool | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """One detector's statistic after one record, against its threshold."""

    detector: str
    statistic: float
    threshold: float
    drifted: bool
    steps: int
    ert: float
    window: int
    detail: str

    def evidence(self) -> DriftEvidence:
        return DriftEvidence(
            detector=self.detector,
            statistic=self.statistic,
            threshold=self.threshold,
            window_size=max(1, min(self.steps, self.window) if self.window else self.steps),
            drifted=self.drifted,
            ert=self.ert,
            records_seen=self.steps,
            detail=self.detail,
        )

    def describe(self) -> str:
        verdict = "DRIFT" if self.drifted else "ok"
        return (
            f"{self.detector}: {self.statistic:.4g} vs {self.threshold:.4g} ({verdict}; "
            f"ERT {self.ert:g}, {self.steps} records) {self.detail}"
        ).strip()


class Detector(Protocol):
    name: ClassVar[str]
    watches: ClassVar[Watched]
    budget: Budget

    @classmethod
    def calibrate(cls, reference: ReferenceData, budget: Budget) -> Calibration:
        """Simulate no-drift streams from `reference`; raises `CannotArmError`."""
        ...

    def check(self, observation: Observation) -> None:
        """Raise `ValueError` if `observation` cannot be observed, changing nothing."""
        ...

    def observe(self, observation: Observation) -> Reading: ...

    def reading(self) -> Reading:
        """The current statistic without a new record (for evidence of the others)."""
        ...

    def reset(self) -> None:
        """Re-arm: back to the state right after calibration."""
        ...

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: Mapping[str, Any]) -> None: ...


DETECTORS: dict[str, type[Any]] = {}
"""Every registered detector class by name."""

D = TypeVar("D", bound=type[Any])


def register_detector(name: str) -> Callable[[D], D]:
    """Class decorator: make a detector choosable by `name` in settings."""

    def register(cls: D) -> D:
        if name in DETECTORS and DETECTORS[name] is not cls:
            raise ValueError(f"detector {name!r} registered twice")
        cls.name = name
        DETECTORS[name] = cls
        return cls

    return register


def detector_class(name: str) -> type[Any]:
    try:
        return DETECTORS[name]
    except KeyError:
        raise ValueError(
            f"unknown drift detector {name!r}; known: {', '.join(sorted(DETECTORS))}"
        ) from None


# -- windowed detectors ------------------------------------------------------------------------


class _Windowed:
    """A statistic over the last W records, calibrated per step (Cobb et al. 2021).

    Subclasses say how a record becomes a value (`_value`), how W values become a statistic
    (`_statistics`, vectorised over simulations) and how to simulate no-drift records. The
    window starts filled with reference records; `steps` counts records since (re)arming.
    """

    name: ClassVar[str]
    watches: ClassVar[Watched] = "inference"
    window_factor: ClassVar[int] = 1
    """The detector's window is this many times the recipe's `drift.window`."""

    def __init__(self, reference: ReferenceData, budget: Budget, calibration: Calibration) -> None:
        self.reference = reference
        self.budget = budget
        self.thresholds: list[float] = [float(t) for t in calibration["thresholds"]]
        self.arming = 0
        self.window: deque[Any] = deque(self._initial_window(0), maxlen=budget.window)
        self.steps = 0

    # subclass hooks
    def _value(self, observation: Observation) -> Any:
        raise NotImplementedError

    def _statistic(self, window: Sequence[Any]) -> float:
        raise NotImplementedError

    def _detail(self) -> str:
        return ""

    def _draw_window(self, rng: np.random.Generator) -> list[Any]:
        """W reference records, as values (the window a detector starts from)."""
        raise NotImplementedError

    def _initial_window(self, arming: int) -> list[Any]:
        """A fresh window of reference records that does not itself alarm, drawn anew at
        every (re)arming: a single fixed start window would be luckier or unluckier than the
        random starts the thresholds were calibrated on, every time (as Alibi redraws its
        initial split until the first statistic is below the first threshold)."""
        rng = np.random.default_rng([self.reference.seed(self.name), arming])
        for _ in range(1000):
            window = self._draw_window(rng)
            if self._statistic(window) < self.thresholds[0]:
                return window
        raise CannotArmError("no draw of reference records stays below the first threshold")

    def check(self, observation: Observation) -> None:
        self._value(observation)

    def observe(self, observation: Observation) -> Reading:
        self.window.append(self._value(observation))
        self.steps += 1
        return self.reading()

    def reading(self) -> Reading:
        statistic = self._statistic(self.window)
        threshold = threshold_at(self.thresholds, self.steps)
        return Reading(
            self.name,
            statistic,
            threshold,
            drifted=self.steps > 0 and statistic > threshold,
            steps=self.steps,
            ert=self.budget.ert,
            window=self.budget.window,
            detail=self._detail(),
        )

    def reset(self) -> None:
        self.arming += 1
        self.window = deque(self._initial_window(self.arming), maxlen=self.budget.window)
        self.steps = 0

    def state(self) -> dict[str, Any]:
        return {"steps": self.steps, "arming": self.arming, "window": list(self.window)}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.window = deque(state["window"], maxlen=self.budget.window)
        self.steps = int(state["steps"])
        self.arming = int(state.get("arming", 0))


@register_detector("embedding-mmd")
class EmbeddingMMD(_Windowed):
    """Online MMD² between the last W embedding sketches and a reference subset.

    The same estimator and calibration as Alibi Detect's `MMDDriftOnline`: the reference is
    split into a sub-reference of `n - (2W - 1)` sketches (kept) and test windows; the kernel is
    Gaussian with the median heuristic bandwidth over the reference.
    """

    def __init__(self, reference: ReferenceData, budget: Budget, calibration: Calibration) -> None:
        sub = np.array(calibration["sub_reference"], dtype=int)
        self._sub_reference = reference.sketches[sub]
        # Start windows are drawn from the 2W - 1 sketches outside the sub-reference.
        self._held_out = reference.sketches[np.setdiff1d(np.arange(reference.size), sub)]
        self._gamma = float(calibration["gamma"])
        sub_kernel = _gaussian(self._sub_reference, self._sub_reference, self._gamma)
        size = len(self._sub_reference)
        self._sub_reference_term = float(
            (sub_kernel.sum() - np.trace(sub_kernel)) / (size * (size - 1))
        )
        super().__init__(reference, budget, calibration)

    @classmethod
    def calibrate(cls, reference: ReferenceData, budget: Budget) -> Calibration:
        sketches, window = reference.sketches, budget.window
        extended = 2 * window - 1
        sub_size = reference.size - extended
        if sketches.shape[1] == 0:
            raise CannotArmError("the reference profile has no embedding sketches")
        if sub_size < window:
            raise CannotArmError(
                f"{reference.size} eval examples are too few for an MMD test with window "
                f"{window}: it needs at least {3 * window - 1}"
            )
        squared = _squared_distances(sketches, sketches)
        off_diagonal = squared[~np.eye(len(squared), dtype=bool)]
        median = float(np.median(off_diagonal)) if off_diagonal.size else 1.0
        gamma = 1.0 / max(median, 1e-12)  # exp(-d^2 / (2 sigma^2)), sigma^2 = median/2 (Alibi)
        kernel = np.exp(-gamma * squared)
        rng = np.random.default_rng(reference.seed(cls.name))
        statistics = np.concatenate(
            [
                _simulate_mmd(kernel, window, sub_size, rng, count)
                for count in _chunks(simulation_count(budget.ert))
            ]
        )
        return {
            "thresholds": conditional_thresholds(statistics, budget.ert),
            "gamma": gamma,
            # The kept split; start windows come from the rest (see `_initial_window`).
            "sub_reference": np.sort(rng.permutation(reference.size)[:sub_size]).tolist(),
        }

    def _draw_window(self, rng: np.random.Generator) -> list[Any]:
        picks = rng.choice(len(self._held_out), self.budget.window, replace=False)
        window: list[Any] = self._held_out[picks].tolist()
        return window

    def _value(self, observation: Observation) -> Any:
        sketch = observation.sketch
        if len(sketch) != self._sub_reference.shape[1]:
            raise ValueError(
                f"embedding sketch of {len(sketch)} values; the reference has "
                f"{self._sub_reference.shape[1]}"
            )
        return list(sketch)

    def _detail(self) -> str:
        return (
            f"MMD² of the last {len(self.window)} embedding sketches against "
            f"{len(self._sub_reference)} eval-split sketches"
        )

    def _statistic(self, window: Sequence[Any]) -> float:
        points = np.asarray(window, dtype=float)
        return _mmd_with_reference_term(
            self._sub_reference_term,
            _gaussian(points, points, self._gamma),
            _gaussian(self._sub_reference, points, self._gamma),
        )


@register_detector("prediction-shift")
class PredictionShift(_Windowed):
    """How far the last W predicted labels are from the mix the model predicted on its eval
    split (black-box shift detection): a chi-squared distance, calibrated by simulation."""

    @classmethod
    def calibrate(cls, reference: ReferenceData, budget: Budget) -> Calibration:
        if reference.size == 0 or len(reference.labels) < 2:
            raise CannotArmError("the reference profile has fewer than two labels or no examples")
        window = budget.window
        shares = _shares(reference)
        rng = np.random.default_rng(reference.seed(cls.name))
        statistics = np.concatenate(
            [
                _windowed_statistics(
                    _world_draws(reference.predicted, window, rng, count),
                    window,
                    lambda counts: _chi2_distance(counts, shares, window),
                    categories=len(reference.labels),
                )
                for count in _chunks(simulation_count(budget.ert))
            ]
        )
        return {"thresholds": conditional_thresholds(statistics, budget.ert)}

    def __init__(self, reference: ReferenceData, budget: Budget, calibration: Calibration) -> None:
        self._shares = {
            label: float(s) for label, s in zip(reference.labels, _shares(reference), strict=True)
        }
        super().__init__(reference, budget, calibration)

    def _draw_window(self, rng: np.random.Generator) -> list[Any]:
        picks = rng.integers(0, self.reference.size, self.budget.window)
        return [self.reference.labels[int(i)] for i in self.reference.predicted[picks]]

    def _value(self, observation: Observation) -> Any:
        return observation.label

    def _statistic(self, window: Sequence[Any]) -> float:
        return _label_chi2(window, self._shares, self.budget.window)

    def _detail(self) -> str:
        counts: dict[str, int] = {}
        for label in self.window:
            counts[label] = counts.get(label, 0) + 1
        top = sorted(counts.items(), key=lambda item: -item[1])[:3]
        mix = ", ".join(
            f"{label} {count / len(self.window):.0%} (ref {self._shares.get(label, 0.0):.0%})"
            for label, count in top
        )
        return f"last {len(self.window)} predictions: {mix}"


@register_detector("estimated-accuracy")
class EstimatedAccuracy(_Windowed):
    """Expected accuracy of the last W predictions, from confidences calibrated on the eval
    split (the CBPE idea), against the reference accuracy. The statistic is the drop; it
    alarms when the drop is both significant at the ERT and larger than the recipe tolerates.

    Its window is ten times the recipe's: an accuracy estimated from 20 predictions has a
    standard error near 0.09, far above any drop a recipe would tolerate, so over the recipe's
    window it could only ever see collapses."""

    window_factor: ClassVar[int] = 10

    @classmethod
    def calibrate(cls, reference: ReferenceData, budget: Budget) -> Calibration:
        if reference.size == 0:
            raise CannotArmError("the reference profile has no examples")
        window = budget.window
        expected = reference.expected_correct(reference.confidence)
        baseline = float(expected.mean())
        rng = np.random.default_rng(reference.seed(cls.name))
        statistics = np.concatenate(
            [
                baseline - _window_means(_world_draws(expected, window, rng, count), window)
                for count in _chunks(simulation_count(budget.ert))
            ]
        )
        floor = reference.policy.max_accuracy_drop
        return {
            "thresholds": [max(t, floor) for t in conditional_thresholds(statistics, budget.ert)],
            "baseline": baseline,
        }

    def __init__(self, reference: ReferenceData, budget: Budget, calibration: Calibration) -> None:
        self.baseline = float(calibration["baseline"])
        super().__init__(reference, budget, calibration)

    def _draw_window(self, rng: np.random.Generator) -> list[Any]:
        picks = rng.integers(0, self.reference.size, self.budget.window)
        return [float(c) for c in self.reference.confidence[picks]]

    def _value(self, observation: Observation) -> Any:
        if observation.confidence is None:
            raise ValueError("an inference observation without a confidence")
        return float(observation.confidence)

    def _statistic(self, window: Sequence[Any]) -> float:
        estimate = self.reference.expected_correct(np.asarray(window, dtype=float))
        return self.baseline - float(np.mean(estimate))

    def _detail(self) -> str:
        estimate = self.baseline - self._statistic(self.window)
        return (
            f"estimated accuracy {estimate:.3f} of the last {len(self.window)} predictions vs "
            f"{self.baseline:.3f} on the eval split"
        )


# -- sequential detectors ----------------------------------------------------------------------


@register_detector("feedback-accuracy")
class FeedbackAccuracy:
    """Page's CUSUM on the errors of predictions that received ground truth.

    Tuned to detect the error rate rising from the reference's to that plus
    `drift.max_accuracy_drop` (at least `MIN_SHIFT`); the threshold is calibrated to the ERT by
    simulating Bernoulli streams whose error rate is drawn from the reference's posterior (so a
    small eval split's uncertainty about the true accuracy is part of the calibration).
    """

    name: ClassVar[str]
    watches: ClassVar[Watched] = "feedback"
    MIN_SHIFT: ClassVar[float] = 0.02

    def __init__(self, reference: ReferenceData, budget: Budget, calibration: Calibration) -> None:
        self.reference = reference
        self.budget = budget
        self.threshold = float(calibration["threshold"])
        self.on_error = float(calibration["on_error"])
        self.on_correct = float(calibration["on_correct"])
        self.reference_accuracy = float(calibration["reference_accuracy"])
        self.cusum = 0.0
        self.steps = 0
        self.recent: deque[bool] = deque(maxlen=budget.window)

    @classmethod
    def calibrate(cls, reference: ReferenceData, budget: Budget) -> Calibration:
        if reference.size == 0:
            raise CannotArmError("the reference profile has no examples")
        errors = int((~reference.correct).sum())
        error_rate = (errors + JEFFREYS) / (reference.size + 2 * JEFFREYS)
        shifted = min(error_rate + max(reference.policy.max_accuracy_drop, cls.MIN_SHIFT), 0.999)
        on_error = float(np.log(shifted / error_rate))
        on_correct = float(np.log((1 - shifted) / (1 - error_rate)))
        rng = np.random.default_rng(reference.seed(cls.name))
        streams, steps = 400, int(min(200_000, max(2_000, 4 * budget.ert)))
        # The no-drift error rate simulated is a pessimistic one — the 95th percentile of the
        # reference's posterior — not a draw per stream: the mean run length over worlds of
        # differing error rates is dominated by the good worlds, whose false alarms are rare,
        # and would let the likely world alarm more often than promised. Measured with an
        # eval split of 216 examples at 96.8% accuracy served at 94.2% (bench-drift, Reuters):
        # the 80th percentile gave 4.4 false alarms per 1,000 at ERT 500, the 95th 2.3; an
        # accuracy loss of 5 points past that is found after 89 records instead of 61.
        null_error_rate = float(
            stats.beta.ppf(
                NULL_ERROR_QUANTILE, errors + JEFFREYS, reference.size - errors + JEFFREYS
            )
        )
        rates = np.full(streams, null_error_rate)
        paths = np.empty((streams, steps))
        cusum = np.zeros(streams)
        for step in range(steps):
            wrong = rng.random(streams) < rates
            cusum = np.maximum(0.0, cusum + np.where(wrong, on_error, on_correct))
            paths[:, step] = cusum
        return {
            "threshold": run_length_threshold(paths, budget.ert),
            "on_error": on_error,
            "on_correct": on_correct,
            "reference_accuracy": reference.accuracy,
        }

    def check(self, observation: Observation) -> None:
        if observation.correct is None:
            raise ValueError("a feedback observation without correctness")

    def observe(self, observation: Observation) -> Reading:
        self.check(observation)
        correct = observation.correct is True
        self.cusum = max(0.0, self.cusum + (self.on_correct if correct else self.on_error))
        self.steps += 1
        self.recent.append(correct)
        return self.reading()

    def reading(self) -> Reading:
        accuracy = sum(self.recent) / len(self.recent) if self.recent else float("nan")
        return Reading(
            self.name,
            self.cusum,
            self.threshold,
            drifted=self.cusum > self.threshold,
            steps=self.steps,
            ert=self.budget.ert,
            window=self.budget.window,
            detail=(
                f"accuracy {accuracy:.3f} on the last {len(self.recent)} labelled predictions "
                f"vs {self.reference_accuracy:.3f} on the eval split"
            ),
        )

    def reset(self) -> None:
        self.cusum, self.steps = 0.0, 0
        self.recent.clear()

    def state(self) -> dict[str, Any]:
        return {"cusum": self.cusum, "steps": self.steps, "recent": list(self.recent)}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.cusum, self.steps = float(state["cusum"]), int(state["steps"])
        self.recent = deque((bool(x) for x in state["recent"]), maxlen=self.budget.window)


# -- numerics ----------------------------------------------------------------------------------


def _chunks(total: int) -> list[int]:
    return [min(SIMULATION_CHUNK, total - start) for start in range(0, total, SIMULATION_CHUNK)]


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared: np.ndarray = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    clipped: np.ndarray = np.maximum(squared, 0.0)  # rounding can make a distance negative
    return clipped


def _gaussian(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    kernel: np.ndarray = np.exp(-gamma * _squared_distances(a, b))
    return kernel


def _mmd_with_reference_term(reference_term: float, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """The unbiased within-sample terms and the cross term, as Alibi's online estimator."""
    w = len(k_yy)
    return (
        reference_term
        + float((k_yy.sum() - np.trace(k_yy)) / (w * (w - 1)))
        - 2 * float(k_xy.mean())
    )


def _simulate_mmd(
    kernel: np.ndarray, window: int, sub_size: int, rng: np.random.Generator, count: int
) -> np.ndarray:
    """MMD² of the W windows of `count` simulated extended windows (Alibi's bootstrap)."""
    n = len(kernel)
    extended = 2 * window - 1
    permutations = np.argsort(rng.random((count, n)), axis=1)
    sub, test = permutations[:, :sub_size], permutations[:, sub_size:]
    k_full = kernel.sum() - np.trace(kernel)
    k_test = kernel[test[:, :, None], test[:, None, :]]  # (count, 2W-1, 2W-1)
    cross_columns = kernel[sub[:, :, None], test[:, None, :]].sum(1)  # (count, 2W-1)
    diagonal = np.trace(k_test, axis1=1, axis2=2)
    k_sub = (k_full - (k_test.sum((1, 2)) - diagonal) - 2 * cross_columns.sum(1)) / (
        sub_size * (sub_size - 1)
    )
    # Window sums of the test block by 2-D prefix sums: window w spans test[w : w + W].
    prefix = np.zeros((count, extended + 1, extended + 1))
    prefix[:, 1:, 1:] = k_test.cumsum(1).cumsum(2)
    cross_prefix = np.concatenate([np.zeros((count, 1)), cross_columns.cumsum(1)], axis=1)
    statistics = np.empty((count, window))
    for w in range(window):
        end = w + window
        block = prefix[:, end, end] - prefix[:, w, end] - prefix[:, end, w] + prefix[:, w, w]
        within = (block - window) / (window * (window - 1))  # a Gaussian kernel's diagonal is 1
        cross = (cross_prefix[:, end] - cross_prefix[:, w]) / (sub_size * window)
        statistics[:, w] = k_sub + within - 2 * cross
    return statistics


def _world_draws(
    values: np.ndarray, window: int, rng: np.random.Generator, count: int
) -> np.ndarray:
    """`count` simulated extended windows (2W - 1 records) of no-drift values.

    Each simulation first resamples the reference (the bootstrap's stand-in for the world the
    reference was itself a sample of), then draws its records from that resample: thresholds
    then allow for the reference's own sampling error, which a small eval split makes large.
    The resample has half the reference's size, doubling that allowance: a plain bootstrap
    makes the ERT hold on average over reference draws, but one unlucky eval split then
    alarms twice as often as promised (measured on synthetic 5-label streams, eval split of
    300: 1.8 to 3.4 false alarms per 1,000 at ERT 500 over three draws).
    """
    n = len(values)
    world_size = max(1, n // WORLD_SHRINK)
    worlds = rng.integers(0, n, (count, world_size))
    picks = rng.integers(0, world_size, (count, 2 * window - 1))
    return values[np.take_along_axis(worlds, picks, axis=1)]


def _window_means(draws: np.ndarray, window: int) -> np.ndarray:
    prefix = np.concatenate([np.zeros((len(draws), 1)), draws.cumsum(1)], axis=1)
    return np.stack(
        [(prefix[:, w + window] - prefix[:, w]) / window for w in range(window)], axis=1
    )


def _windowed_statistics(
    draws: np.ndarray,
    window: int,
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    categories: int,
) -> np.ndarray:
    """Per-window statistics of categorical draws, from per-window category counts."""
    one_hot = np.zeros((*draws.shape, categories))
    np.put_along_axis(one_hot, draws[..., None], 1.0, axis=2)
    prefix = np.concatenate([np.zeros((len(draws), 1, categories)), one_hot.cumsum(1)], axis=1)
    return np.stack(
        [statistic(prefix[:, w + window] - prefix[:, w]) for w in range(window)], axis=1
    )


def _shares(reference: ReferenceData) -> np.ndarray:
    counts = np.bincount(reference.predicted, minlength=len(reference.labels)).astype(float)
    shares: np.ndarray = (counts + JEFFREYS) / (counts.sum() + JEFFREYS * len(counts))
    return shares


def _chi2_distance(counts: np.ndarray, shares: np.ndarray, window: int) -> np.ndarray:
    expected = shares * window
    distance: np.ndarray = ((counts - expected) ** 2 / expected).sum(-1)
    return distance


def _label_chi2(window: Sequence[Any], shares: Mapping[str, float], size: int) -> float:
    """The chi-squared distance of a window of labels from `shares` (labels outside the
    reference — a head label the profile lacks — get the Jeffreys share of one label)."""
    counts: dict[str, int] = {}
    for label in window:
        counts[label] = counts.get(label, 0) + 1
    floor = min(shares.values()) if shares else 1.0
    total = 0.0
    for label, share in shares.items():
        expected = share * size
        total += (counts.get(label, 0) - expected) ** 2 / expected
    for label, count in counts.items():
        if label not in shares:
            expected = floor * size
            total += (count - expected) ** 2 / expected
    return total
