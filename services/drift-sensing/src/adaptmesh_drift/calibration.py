"""Thresholds calibrated to an expected run time (ERT) between false alarms, by simulation.

Windowed detectors follow Cobb et al. 2021 ("Sequential multivariate change detection with
calibrated and memoryless false detection rates"), the method behind Alibi Detect's online
detectors: simulate many no-drift *extended* windows of `2W - 1` records drawn from the
reference, compute the statistic of each of the `W` overlapping windows in them, and pick the
threshold at step `t` as the `1 - 1/ERT` quantile of the statistic among the simulations that
have not alarmed before `t`. After `W` steps the window holds only new records and the last
threshold applies from then on. A detector starts with a window of reference records (so it can
alarm from the first record); at each step the conditional false-alarm probability is then
`1/ERT`, which makes the run length until a false alarm geometric with mean ERT.

Sequential detectors without a window (CUSUM) are calibrated by their run length directly:
simulate many no-drift streams, take the first passage over a threshold in each, and solve for
the threshold whose mean run length (censored streams counted by the geometric MLE) is the ERT.
"""

from __future__ import annotations

import numpy as np

# Simulations per unit of ERT: the `1 - 1/ERT` quantile needs many draws beyond it to be stable
# (Alibi warns to keep `n_bootstraps` well above the ERT); bounded so a large ERT stays cheap.
SIMULATIONS_PER_ERT = 10
MIN_SIMULATIONS = 2_000
MAX_SIMULATIONS = 50_000


def simulation_count(ert: float) -> int:
    return int(min(MAX_SIMULATIONS, max(MIN_SIMULATIONS, SIMULATIONS_PER_ERT * ert)))


def conditional_thresholds(statistics: np.ndarray, ert: float) -> list[float]:
    """Per-step thresholds from simulated statistics `(simulations, W)` of the W windows.

    Larger statistics mean more drift. The quantile is taken, at each step, over the
    simulations that stayed below every earlier threshold (Alibi's `_configure_thresholds`).
    """
    false_alarm_rate = 1.0 / ert
    alive = np.ones(statistics.shape[0], dtype=bool)
    thresholds: list[float] = []
    for step in range(statistics.shape[1]):
        values = statistics[alive, step]
        if values.size == 0:  # every simulation alarmed: nothing left to condition on
            thresholds.append(thresholds[-1] if thresholds else float("inf"))
            continue
        threshold = float(np.quantile(values, 1.0 - false_alarm_rate, method="higher"))
        thresholds.append(threshold)
        alive &= statistics[:, step] < threshold
    return thresholds


def threshold_at(thresholds: list[float], step: int) -> float:
    """The threshold for the statistic after `step` records (Alibi's `get_threshold`)."""
    return thresholds[step] if step < len(thresholds) else thresholds[-1]


def run_length_threshold(paths: np.ndarray, ert: float) -> float:
    """The threshold on sequential statistics `paths` `(streams, steps)` whose mean run length
    to the first exceedance is `ert`.

    Each path must be what the detector computes before its first alarm (it is not reset
    here). Streams that never exceed count as censored at their length: the geometric MLE of
    the mean run length is (steps observed in all streams) / (alarms).
    """
    steps = paths.shape[1]
    running_max = np.maximum.accumulate(paths, axis=1)
    peaks = running_max[:, -1]

    def mean_run_length(threshold: float) -> float:
        crossed = peaks > threshold
        if not crossed.any():
            return float("inf")
        first = np.argmax(running_max > threshold, axis=1) + 1
        observed = np.where(crossed, first, steps).sum()
        return float(observed / crossed.sum())

    low, high = 0.0, float(peaks.max()) if peaks.size else 1.0
    if mean_run_length(low) >= ert:
        return low
    for _ in range(60):  # bisection to float precision of the statistic's scale
        middle = (low + high) / 2
        if mean_run_length(middle) < ert:
            low = middle
        else:
            high = middle
    return high
