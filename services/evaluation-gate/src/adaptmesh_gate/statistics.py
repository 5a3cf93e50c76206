"""Paired statistics of a candidate against its champion on the same eval examples.

Pure numpy/scipy. Both models answered the same eval examples, so their scores are compared
example by example:

- a **paired bootstrap**: the eval examples are resampled with replacement (the same resample
  for both models) and every statistic is recomputed on each resample; the percentiles of the
  candidate-minus-champion differences bound the true difference. Macro-F1 is computed as
  `adaptmesh_ml.evaluation.classification_metrics` defines it: the mean F1 over the labels
  that have support (true examples) in the resample, with F1 = 2·TP / (support + predicted),
  0 where a label is never predicted right;
- an **exact McNemar test** on per-example correctness: of the examples exactly one model
  got right, the candidate's share is Binomial(n, 1/2) when both are equally accurate.

Every bound is one-sided at `confidence`: an interval `[low, high]` says the difference is
at least `low` with that confidence, and at most `high` with that confidence (together it is a
two-sided interval at 2·confidence - 1). Per-label intervals use Bonferroni: with k labels
compared, each bound is at 1 - (1 - confidence)/k, so the chance that *any* label of two
equal models looks significantly worse stays at most 1 - confidence.

The resampling is seeded (`decision_seed`): judging the same candidate against the same
champion on the same dataset again reaches the same decision.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import binomtest

from adaptmesh_schemas.documents import Interval, PairedComparison

# A label with fewer eval examples than this has an F1 that moves by a large step with each
# example: the comparison says so (`too_small`).
MIN_LABEL_EXAMPLES = 5
# Bound on the size of one block of resamples (resamples x examples), to bound memory.
_BLOCK_CELLS = 2_000_000

Test = Literal["non_inferiority", "superiority"]
FloatArray = npt.NDArray[np.float64]


def decision_seed(
    dataset_version: str, candidate_version: str, champion_version: str | None
) -> int:
    """The resampling seed of one judgement: fixed by what is judged, on what, against whom.

    53 bits, so that it survives any JSON reader exactly.
    """
    key = "\n".join((dataset_version, candidate_version, champion_version or "")).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 11


def mcnemar(candidate_only_right: int, champion_only_right: int) -> tuple[float, float]:
    """Exact one-sided McNemar p-values `(p_worse, p_better)`.

    `p_worse` is the chance, were both models equally accurate, of the champion being the only
    one right this often or more among the discordant examples; `p_better` the same for the
    candidate. Without discordant examples nothing is evidence either way: both are 1.
    """
    discordant = candidate_only_right + champion_only_right
    if discordant == 0:
        return 1.0, 1.0
    worse = binomtest(champion_only_right, discordant, 0.5, alternative="greater").pvalue
    better = binomtest(candidate_only_right, discordant, 0.5, alternative="greater").pvalue
    return min(1.0, float(worse)), min(1.0, float(better))


@dataclass(frozen=True, slots=True)
class PairedStatistics:
    """The comparison as the report records it, plus the point scores the lines quote."""

    comparison: PairedComparison
    candidate_macro_f1: float
    champion_macro_f1: float
    candidate_f1: dict[str, float]
    champion_f1: dict[str, float]
    support: dict[str, int]


def compare(
    true_labels: Sequence[str],
    candidate: Sequence[str],
    champion: Sequence[str],
    *,
    confidence: float,
    samples: int,
    seed: int,
    margin: float,
    test: Test = "non_inferiority",
    labels: Collection[str] | None = None,
) -> PairedStatistics:
    """Candidate against champion on the same examples (true label and each model's answer).

    `labels` limits the per-label intervals to these labels (the labels both heads know);
    every label with support enters macro-F1. `margin` and `test` are the policy's: the
    comparison says when its interval is too wide to decide what they ask (`too_small`).
    """
    n = len(true_labels)
    if not (len(candidate) == len(champion) == n):
        raise ValueError(
            f"{n} examples but {len(candidate)} candidate and {len(champion)} champion answers"
        )
    if n == 0:
        raise ValueError("no eval examples to compare on")
    universe = list(dict.fromkeys(true_labels))
    code = {label: index for index, label in enumerate(universe)}
    size = len(universe)
    truth = np.array([code[label] for label in true_labels], dtype=np.int64)
    # A prediction of a label no example carries only counts as a miss: column `size`, dropped.
    cand = np.array([code.get(label, size) for label in candidate], dtype=np.int64)
    champ = np.array([code.get(label, size) for label in champion], dtype=np.int64)
    cand_right = (cand == truth).astype(np.float64)
    champ_right = (champ == truth).astype(np.float64)

    # Per example, its contribution to each label's counts: one-hot rows (n x labels).
    eye = np.eye(size + 1)[:, :size]
    true_hot = eye[truth]
    columns = np.hstack(
        [
            true_hot,  # support
            eye[cand],  # predicted by the candidate
            true_hot * cand_right[:, None],  # candidate's true positives
            eye[champ],
            true_hot * champ_right[:, None],
            (cand_right - champ_right)[:, None],  # accuracy difference
        ]
    )

    point = _scores(np.ones((1, n)) @ columns, size)
    draws = _scores(_bootstrap_sums(columns, samples, seed), size)

    alpha = 1.0 - confidence
    macro = _interval(point.macro_difference[0], draws.macro_difference, alpha)
    accuracy = _interval(point.accuracy_difference[0] / n, draws.accuracy_difference / n, alpha)

    support = {label: int(point.support[0, code[label]]) for label in universe}
    compared = [
        label for label in universe if labels is None or label in labels
    ]  # every label here has support: it comes from the examples
    per_label_alpha = alpha / max(1, len(compared))
    per_label = {
        label: _interval(
            point.label_difference[0, code[label]],
            draws.label_difference[:, code[label]],
            per_label_alpha,
        )
        for label in compared
    }

    only_candidate = int(np.sum((cand_right == 1) & (champ_right == 0)))
    only_champion = int(np.sum((cand_right == 0) & (champ_right == 1)))
    p_worse, p_better = mcnemar(only_candidate, only_champion)
    resolution = (macro.high - macro.low) / 2
    comparison = PairedComparison(
        examples=n,
        confidence=confidence,
        bootstrap_samples=samples,
        seed=seed,
        macro_f1_difference=macro,
        accuracy_difference=accuracy,
        candidate_only_right=only_candidate,
        champion_only_right=only_champion,
        mcnemar_p_worse=p_worse,
        mcnemar_p_better=p_better,
        per_label_confidence=1.0 - per_label_alpha,
        per_label=per_label,
        resolution=resolution,
        too_small=too_small(
            n,
            lower_reach=macro.estimate - macro.low,
            margin=margin,
            confidence=confidence,
            test=test,
            support={label: support[label] for label in compared},
        ),
    )
    return PairedStatistics(
        comparison=comparison,
        candidate_macro_f1=float(point.candidate_macro[0]),
        champion_macro_f1=float(point.champion_macro[0]),
        candidate_f1={label: float(point.candidate_f1[0, code[label]]) for label in universe},
        champion_f1={label: float(point.champion_f1[0, code[label]]) for label in universe},
        support=support,
    )


def accuracy_difference(
    candidate_right: Sequence[bool],
    champion_right: Sequence[bool],
    *,
    confidence: float,
    samples: int,
    seed: int,
) -> Interval:
    """Candidate minus champion accuracy on a set of examples (e.g. one slice), bootstrapped.

    Each bound is one-sided at `confidence`. A single example, or none right or wrong
    differently, gives a degenerate interval: the examples show no difference.
    """
    if len(candidate_right) != len(champion_right) or not candidate_right:
        raise ValueError("need the same, non-zero number of answers from both models")
    difference = np.asarray(candidate_right, dtype=np.float64) - np.asarray(
        champion_right, dtype=np.float64
    )
    n = len(difference)
    sums = _bootstrap_sums(difference[:, None], samples, seed)[:, 0]
    return _interval(float(difference.mean()), sums / n, 1.0 - confidence)


def slice_seed(seed: int, name: str) -> int:
    """A seed per slice derived from the decision's: independent of which slices exist."""
    digest = hashlib.sha256(f"{seed}\n{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 11


def too_small(
    examples: int,
    *,
    lower_reach: float,
    margin: float,
    confidence: float,
    test: Test = "non_inferiority",
    support: Mapping[str, int],
) -> str | None:
    """A sentence when the eval split cannot decide what the policy asks, else None.

    `lower_reach` is how far the lower bound lies below the estimate: a candidate exactly as
    good as its champion shows a lower bound of about -lower_reach, so when that is beyond
    the margin even an equal model fails non-inferiority (and under superiority, only an
    improvement larger than the margin by that much can be shown).
    """
    problems: list[str] = []
    if lower_reach > margin:
        known = (
            f"on {examples} eval examples the macro-F1 difference is only known to within "
            f"{lower_reach:.3f} ({_percent(confidence)} one-sided), more than the margin "
            f"{margin:.3f}"
        )
        if test == "superiority":
            problems.append(
                f"{known}: only an improvement of more than about {lower_reach:.3f} can be "
                f"shown; about {_needed(examples, lower_reach, margin)} eval examples would "
                "show one of the margin's size"
            )
        else:
            remedy = (
                f"about {_needed(examples, lower_reach, margin)} eval examples, or a margin of "
                f"at least {lower_reach:.3f},"
                if margin > 0
                else "only a margin above 0"
            )
            problems.append(
                f"{known}: even a candidate exactly as good as the champion would usually be "
                f"rejected; {remedy} would decide it"
            )
    thin = sorted(
        (label for label, count in support.items() if count < MIN_LABEL_EXAMPLES),
        key=lambda label: (support[label], label),
    )
    if thin:
        listed = ", ".join(f"{label} ({support[label]})" for label in thin)
        problems.append(
            f"label(s) with fewer than {MIN_LABEL_EXAMPLES} eval examples: {listed}; their F1 "
            "moves by a large step with each example, so only a collapse can be seen there; "
            "more eval examples of them would help"
        )
    if not problems:
        return None
    return "eval split too small: " + "; ".join(problems)


def _needed(examples: int, reach: float, margin: float) -> int | str:
    """Eval examples that would shrink `reach` to `margin` (it falls as 1/sqrt(examples))."""
    if margin <= 0:
        return "unboundedly many"
    return math.ceil(examples * (reach / margin) ** 2)


def _percent(share: float) -> str:
    text = f"{share * 100:.2f}".rstrip("0").rstrip(".")
    return f"{text}%"


@dataclass(frozen=True, slots=True)
class _Scores:
    """Scores per row of count sums (one row per resample, or one for the sample itself)."""

    support: FloatArray
    candidate_f1: FloatArray  # NaN where the label has no support
    champion_f1: FloatArray
    candidate_macro: FloatArray
    champion_macro: FloatArray
    macro_difference: FloatArray
    label_difference: FloatArray
    accuracy_difference: FloatArray


def _scores(sums: FloatArray, size: int) -> _Scores:
    """Per-label F1, macro-F1 and their differences from summed columns (see `compare`)."""
    support = sums[:, :size]
    cand_pred, cand_tp = sums[:, size : 2 * size], sums[:, 2 * size : 3 * size]
    champ_pred, champ_tp = sums[:, 3 * size : 4 * size], sums[:, 4 * size : 5 * size]
    supported = support > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        cand_f1 = np.where(supported, 2 * cand_tp / (support + cand_pred), np.nan)
        champ_f1 = np.where(supported, 2 * champ_tp / (support + champ_pred), np.nan)
    labels_present = supported.sum(axis=1)
    cand_macro = np.nansum(cand_f1, axis=1) / labels_present
    champ_macro = np.nansum(champ_f1, axis=1) / labels_present
    return _Scores(
        support=support,
        candidate_f1=cand_f1,
        champion_f1=champ_f1,
        candidate_macro=cand_macro,
        champion_macro=champ_macro,
        macro_difference=cand_macro - champ_macro,
        label_difference=cand_f1 - champ_f1,
        accuracy_difference=sums[:, 5 * size],
    )


def _bootstrap_sums(columns: FloatArray, samples: int, seed: int) -> FloatArray:
    """Column sums over `samples` resamples (with replacement) of the rows of `columns`.

    Each resample is a vector of counts (how often each example was drawn); the sums are
    counts @ columns, computed a block of resamples at a time.
    """
    n = columns.shape[0]
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)
    out = np.empty((samples, columns.shape[1]))
    for start in range(0, samples, block):
        rows = min(block, samples - start)
        drawn = rng.integers(0, n, size=(rows, n))
        flat = (np.arange(rows)[:, None] * n + drawn).ravel()
        counts = np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)
        out[start : start + rows] = counts @ columns
    return out


def _interval(estimate: float, draws: FloatArray, alpha: float) -> Interval:
    """Percentile bounds, each one-sided at 1 - alpha; resamples where it is undefined (a
    label absent from the resample) are left out."""
    defined = draws[~np.isnan(draws)]
    if defined.size == 0:
        return Interval(estimate=float(estimate), low=-1.0, high=1.0)
    low, high = np.quantile(defined, [alpha, 1.0 - alpha])
    # Bounds never exclude the estimate (percentiles of a skewed, discrete resampling may).
    return Interval(
        estimate=float(estimate), low=float(min(low, estimate)), high=float(max(high, estimate))
    )
