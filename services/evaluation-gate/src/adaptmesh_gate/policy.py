"""The recipe's gate policy applied to a candidate and the champion it would replace.

Pure: it compares two models' answers on the same eval examples and must-pass cases. Scores
on an eval split of a few hundred examples are noisy, so comparisons with the champion are
statistical (`statistics`): a paired bootstrap interval for the macro-F1 difference, with
per-label intervals corrected for the number of labels compared. An exact McNemar test on
per-example correctness is part of the superiority check (the candidate must be right
significantly more often); under non-inferiority it is an info line that judges nothing, as
it tests "exactly as accurate" and with many eval examples would reject a candidate worse by
far less than the margin. Absolute floors (macro-F1, per-label F1, slice accuracy) and
must-pass cases are point checks. Every check yields one readable line with its numbers,
passed or failed, so the report explains an approval as well as a rejection; a check whose
metric cannot be computed fails.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from adaptmesh_gate import statistics
from adaptmesh_gate.statistics import PairedStatistics
from adaptmesh_schemas.documents import (
    CheckResult,
    DatasetExample,
    Interval,
    ModelEvaluation,
    PairedComparison,
    SliceResult,
)
from adaptmesh_schemas.values import GatePolicy

# Scores are rounded in the report lines; a score equal to its threshold must not fail
# because of float noise in the last bits.
_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Contender:
    """A model's evaluation, the labels its head knows and its answer per eval example.

    The evaluation alone cannot say which labels a model knows: an eval split may hold
    examples of labels a champion trained before a taxonomy change has never seen.
    `predictions` holds the predicted label of each eval example, in the order of the
    examples `decide` is given; without them no paired comparison can be computed.
    """

    evaluation: ModelEvaluation
    labels: Collection[str]
    predictions: tuple[str, ...] | None = None


class Decision(NamedTuple):
    """The outcome: approved only if every check passed; one line per check."""

    approved: bool
    reasons: tuple[str, ...]
    checks: tuple[CheckResult, ...]
    comparison: PairedComparison | None
    slices: tuple[SliceResult, ...]


def decide(
    policy: GatePolicy,
    candidate: Contender,
    champion: Contender | None,
    examples: Sequence[DatasetExample] = (),
    *,
    seed: int = 0,
) -> Decision:
    """Judge `candidate` against the policy's floors, the champion (if any) and the cases.

    `examples` is the eval split both contenders answered (`Contender.predictions`, same
    order); `seed` fixes the bootstrap resampling (`statistics.decision_seed`), so the same
    candidate judged again gets the same decision.
    """
    checks = [_macro_f1_floor(policy, candidate.evaluation)]
    checks += _label_floors(policy, candidate.evaluation)
    comparison: PairedComparison | None = None
    if champion is None:
        checks.append(_info("no champion for this domain: regression check skipped"))
    else:
        paired = _pair(policy, candidate, champion, examples, seed)
        if isinstance(paired, PairedStatistics):
            comparison = paired.comparison
        checks += _against_champion(policy, candidate, champion, paired)
    slices, slice_checks = _slices(policy, candidate, champion, examples, seed)
    checks += slice_checks
    checks += _must_pass(policy, candidate.evaluation)
    return Decision(
        approved=all(check.passed for check in checks),
        reasons=tuple(check.reason for check in checks),
        checks=tuple(checks),
        comparison=comparison,
        slices=slices,
    )


def _score(value: float) -> str:
    return f"{value:.3f}"


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _p(value: float) -> str:
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _percent(share: float) -> str:
    text = f"{share * 100:.2f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _check(check: str, *, passed: bool, reason: str) -> CheckResult:
    return CheckResult(check=check, passed=passed, reason=reason)


def _info(reason: str) -> CheckResult:
    return CheckResult(check="info", passed=True, reason=reason)


def _macro_f1_floor(policy: GatePolicy, candidate: ModelEvaluation) -> CheckResult:
    score, floor = _score(candidate.macro_f1), _score(policy.min_macro_f1)
    if candidate.macro_f1 + _TOLERANCE >= policy.min_macro_f1:
        return _check("floor", passed=True, reason=f"macro-F1 {score} >= floor {floor}")
    return _check("floor", passed=False, reason=f"macro-F1 {score} < floor {floor}")


def _label_floors(policy: GatePolicy, candidate: ModelEvaluation) -> Iterator[CheckResult]:
    """The candidate's F1 on each label the policy names (a label without support fails)."""
    for label, floor in sorted(policy.min_label_f1.items()):
        metrics = candidate.per_label.get(label)
        if metrics is None or metrics.support == 0:
            yield _check(
                "label-floor",
                passed=False,
                reason=f"label {label}: no eval example, so its F1 cannot be computed "
                f"(floor {_score(floor)})",
            )
        elif metrics.f1 + _TOLERANCE >= floor:
            yield _check(
                "label-floor",
                passed=True,
                reason=f"label {label}: F1 {_score(metrics.f1)} >= floor {_score(floor)}",
            )
        else:
            yield _check(
                "label-floor",
                passed=False,
                reason=f"label {label}: F1 {_score(metrics.f1)} < floor {_score(floor)}",
            )


def _pair(
    policy: GatePolicy,
    candidate: Contender,
    champion: Contender,
    examples: Sequence[DatasetExample],
    seed: int,
) -> PairedStatistics | str | None:
    """The paired statistics on the eval examples whose label both heads know; a reason why
    they cannot be computed; or None when no such example exists (nothing to compare)."""
    missing = _unanswered(candidate, champion, examples)
    if missing is not None:
        return missing
    assert candidate.predictions is not None
    assert champion.predictions is not None
    shared = set(candidate.labels) & set(champion.labels)
    # Examples of a label only the candidate knows would count against a champion that
    # cannot predict it: the floors and must-pass cases judge new labels.
    kept = [index for index, example in enumerate(examples) if example.label in shared]
    if not kept:
        return None
    return statistics.compare(
        [examples[index].label for index in kept],
        [candidate.predictions[index] for index in kept],
        [champion.predictions[index] for index in kept],
        confidence=policy.confidence,
        samples=policy.bootstrap_samples,
        seed=seed,
        margin=policy.margin,
        test=policy.test,
        labels=shared,
    )


def _unanswered(
    candidate: Contender, champion: Contender | None, examples: Sequence[DatasetExample]
) -> str | None:
    """Why the contenders' answers cannot be compared example by example, if they cannot."""
    if not examples:
        return "no eval examples"
    contenders = [("the candidate", candidate)]
    if champion is not None:
        contenders.append((f"champion {champion.evaluation.model_version}", champion))
    for name, contender in contenders:
        if contender.predictions is None:
            return f"{name}'s answers per eval example are missing"
        if len(contender.predictions) != len(examples):
            return (
                f"{name} gave {len(contender.predictions)} answers for {len(examples)} eval "
                "examples"
            )
    return None


def _against_champion(
    policy: GatePolicy,
    candidate: Contender,
    champion: Contender,
    paired: PairedStatistics | str | None,
) -> Iterator[CheckResult]:
    """The paired checks, then lines on the labels only one of the two knows."""
    name = champion.evaluation.model_version
    test = "superiority" if policy.test == "superiority" else "non-inferiority"
    if isinstance(paired, str):
        for check in (test, "label-regression"):
            yield _check(
                check,
                passed=False,
                reason=f"{check} vs champion {name} cannot be computed: {paired} (a check that "
                "cannot be computed fails)",
            )
    elif paired is None:
        yield _info(f"no label shared with champion {name} has eval support: nothing to compare")
    else:
        comparison = paired.comparison
        yield _difference_test(policy, comparison, name)
        yield _mcnemar(policy, comparison, name)
        yield from _label_regressions(policy, paired, name)
        shared = set(candidate.labels) & set(champion.labels)
        unsupported = sorted(shared - set(paired.support))
        if unsupported:
            yield _info(f"not compared (no eval support): {', '.join(unsupported)}")
        left_out = len(candidate.predictions or ()) - comparison.examples
        if left_out:
            yield _info(
                f"paired comparison on {comparison.examples} eval examples: {left_out} more "
                f"carry labels champion {name} does not know"
            )
        if comparison.too_small is not None:
            yield _info(comparison.too_small)
    added = sorted(set(candidate.labels) - set(champion.labels))
    dropped = sorted(set(champion.labels) - set(candidate.labels))
    if added:
        yield _info(f"labels new in the candidate: {', '.join(added)}")
    if dropped:
        yield _info(f"labels of the champion the candidate drops: {', '.join(dropped)}")


def _difference_test(policy: GatePolicy, comparison: PairedComparison, name: str) -> CheckResult:
    """Non-inferiority (lower bound >= -margin) or superiority (lower bound > 0 and McNemar)."""
    macro = comparison.macro_f1_difference
    alpha = 1 - policy.confidence
    stated = (
        f"macro-F1 difference {_signed(macro.estimate)} vs champion {name}, "
        f"{_percent(policy.confidence)} bounds [{_signed(macro.low)}, {_signed(macro.high)}]"
    )
    on = f"on {comparison.examples} eval examples"
    if policy.test == "non_inferiority":
        bound = -policy.margin
        passed = macro.low + _TOLERANCE >= bound
        verdict = "non-inferior" if passed else "not shown non-inferior"
        return _check(
            "non-inferiority",
            passed=passed,
            reason=f"{stated}: lower bound {'>=' if passed else '<'} {_signed(bound)} "
            f"(margin), {verdict} {on}",
        )
    above = macro.low > 0
    significant = comparison.mcnemar_p_better <= alpha + _TOLERANCE
    passed = above and significant
    return _check(
        "superiority",
        passed=passed,
        reason=f"{stated}: lower bound {'>' if above else '<='} 0 and McNemar exact "
        f"p={_p(comparison.mcnemar_p_better)} {'<=' if significant else '>'} {_score(alpha)} "
        f"that it is more accurate, {'superior' if passed else 'not shown superior'} {on}",
    )


def _mcnemar(policy: GatePolicy, comparison: PairedComparison, name: str) -> CheckResult:
    """McNemar's exact test that the candidate is less accurate, as an info line.

    It judges nothing. Under superiority the test's other side (is the candidate more
    accurate?) is part of the superiority check (`_difference_test`). Under non-inferiority it
    judges nothing either: it tests "exactly as accurate", and with enough examples it would
    reject a candidate worse by far less than the margin the policy accepts.
    """
    alpha = 1 - policy.confidence
    p = comparison.mcnemar_p_worse
    counts = (
        f"the candidate is wrong on {comparison.champion_only_right} eval examples champion "
        f"{name} got right and right on {comparison.candidate_only_right} it got wrong"
    )
    verdict = (
        "significantly less accurate"
        if p <= alpha + _TOLERANCE
        else "not significantly less accurate"
    )
    return _info(
        f"McNemar exact p={_p(p)} that the candidate is less accurate: {counts}, {verdict}"
    )


def _label_regressions(
    policy: GatePolicy, paired: PairedStatistics, name: str
) -> Iterator[CheckResult]:
    """A label fails only when its F1 is significantly more than `max_regression` below the
    champion's: the upper bound of the difference (Bonferroni over the labels compared) is
    below -max_regression."""
    comparison = paired.comparison
    level = _percent(comparison.per_label_confidence)
    allowed = -policy.max_regression
    failed = False
    largest: tuple[float, str] | None = None
    for label, interval in sorted(comparison.per_label.items()):
        drop = -interval.estimate
        if largest is None or drop > largest[0]:
            largest = (drop, label)
        if interval.high + _TOLERANCE < allowed:
            failed = True
            yield _check(
                "label-regression",
                passed=False,
                reason=f"label {label}: F1 {_score(paired.candidate_f1[label])} vs champion {name} "
                f"{_score(paired.champion_f1[label])} on {paired.support[label]} eval examples, "
                f"drop {_score(-interval.estimate)} ({level} lower bound {_score(-interval.high)}) "
                f"> allowed {_score(policy.max_regression)}: significantly worse",
            )
    if failed or largest is None:
        return
    drop, label = largest
    high = comparison.per_label[label].high
    worst = (
        f"largest drop {_score(drop)} on {label}, upper bound {_signed(high)}"
        if drop > 0
        else "no label dropped"
    )
    yield _check(
        "label-regression",
        passed=True,
        reason=f"no label significantly more than {_score(policy.max_regression)} below champion "
        f"{name} on {len(comparison.per_label)} shared label(s) with eval support "
        f"({level} bounds, Bonferroni; {worst})",
    )


def _slices(
    policy: GatePolicy,
    candidate: Contender,
    champion: Contender | None,
    examples: Sequence[DatasetExample],
    seed: int,
) -> tuple[tuple[SliceResult, ...], list[CheckResult]]:
    """Every slice present in the eval split, and every slice the policy names, judged on
    accuracy (per-example correctness) where the policy sets a threshold."""
    members: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        for name in example.slices:
            members.setdefault(name, []).append(index)
    for name in policy.slices:
        members.setdefault(name, [])
    results: list[SliceResult] = []
    checks: list[CheckResult] = []
    for name in sorted(members):
        result, lines = _slice(
            policy,
            name,
            members[name],
            candidate=candidate,
            champion=champion,
            examples=examples,
            seed=seed,
        )
        results.append(result)
        checks += lines
    return tuple(results), checks


def _slice(
    policy: GatePolicy,
    name: str,
    indices: list[int],
    *,
    candidate: Contender,
    champion: Contender | None,
    examples: Sequence[DatasetExample],
    seed: int,
) -> tuple[SliceResult, list[CheckResult]]:
    threshold = policy.slices.get(name)
    count = len(indices)
    result = SliceResult(slice=name, examples=count, threshold=threshold)
    head = f"slice {name} ({count} eval examples)"
    if not indices:
        # Only a slice the policy names can be empty.
        return result.model_copy(update={"passed": False}), [
            _check(
                "slice",
                passed=False,
                reason=f"slice {name}: no eval example, so it cannot be judged",
            )
        ]
    truth = [examples[index].label for index in indices]
    cand_right = _right(candidate, truth, indices, examples)
    champ_right = _right(champion, truth, indices, examples) if champion is not None else None
    difference = None
    if cand_right is not None and champ_right is not None:
        difference = statistics.accuracy_difference(
            cand_right,
            champ_right,
            confidence=policy.confidence,
            samples=policy.bootstrap_samples,
            seed=statistics.slice_seed(seed, name),
        )
    result = result.model_copy(
        update={
            "candidate_accuracy": _mean(cand_right),
            "champion_accuracy": _mean(champ_right),
            "accuracy_difference": difference,
        }
    )
    if threshold is None:
        return result, []
    lines: list[CheckResult] = []
    parts: list[tuple[bool, str]] = []
    if threshold.min_accuracy is not None:
        if cand_right is None:
            why = _unanswered(candidate, None, examples)
            parts.append((False, f"accuracy cannot be computed: {why}"))
        else:
            accuracy = sum(cand_right) / count
            above = accuracy + _TOLERANCE >= threshold.min_accuracy
            parts.append(
                (
                    above,
                    f"accuracy {_score(accuracy)} {'>=' if above else '<'} floor "
                    f"{_score(threshold.min_accuracy)}",
                )
            )
    if threshold.max_accuracy_drop is not None:
        if champion is None:
            lines.append(_info(f"{head}: no champion, accuracy drop not judged"))
        elif difference is None:
            why = _unanswered(candidate, champion, examples)
            parts.append((False, f"accuracy difference cannot be computed: {why}"))
        else:
            parts.append(_slice_drop(policy, threshold.max_accuracy_drop, champion, difference))
    if not parts:
        return result, lines
    passed = all(ok for ok, _ in parts)
    judged = _check(
        "slice", passed=passed, reason=f"{head}: {'; '.join(text for _, text in parts)}"
    )
    return result.model_copy(update={"passed": passed}), [judged, *lines]


def _slice_drop(
    policy: GatePolicy, max_drop: float, champion: Contender, difference: Interval
) -> tuple[bool, str]:
    """The slice's non-inferiority on accuracy: the lower bound of the paired difference."""
    allowed = -max_drop
    ok = difference.low + _TOLERANCE >= allowed
    text = (
        f"accuracy difference {_signed(difference.estimate)} vs champion "
        f"{champion.evaluation.model_version}, {_percent(policy.confidence)} lower bound "
        f"{_signed(difference.low)} {'>=' if ok else '<'} {_signed(allowed)} (allowed drop)"
    )
    reach = difference.estimate - difference.low
    if not ok and reach > max_drop:
        text += f", too few examples to show it (the bound lies {_score(reach)} below)"
    return ok, text


def _right(
    contender: Contender, truth: list[str], indices: list[int], examples: Sequence[DatasetExample]
) -> list[bool] | None:
    """Per slice example whether the contender answered right; None without its answers."""
    predictions = contender.predictions
    if predictions is None or len(predictions) != len(examples):
        return None
    return [predictions[index] == label for index, label in zip(indices, truth, strict=True)]


def _mean(right: list[bool] | None) -> float | None:
    return None if not right else sum(right) / len(right)


def _must_pass(policy: GatePolicy, candidate: ModelEvaluation) -> Iterator[CheckResult]:
    outcomes = candidate.must_pass
    total = len(outcomes)
    right = sum(outcome.passed for outcome in outcomes)
    if total == 0:
        yield _check("must-pass", passed=True, reason="no must-pass cases in force")
        return
    if right == total:
        yield _check("must-pass", passed=True, reason=f"must-pass {right}/{total} right")
        return
    if not policy.require_must_pass:
        yield _check(
            "must-pass",
            passed=True,
            reason=f"must-pass {right}/{total} right (the policy does not require all)",
        )
        return
    for outcome in outcomes:
        if not outcome.passed:
            yield _check(
                "must-pass",
                passed=False,
                reason=f"must-pass {right}/{total}: case {outcome.case_id} "
                f"(rule {outcome.rule_id}) expected {outcome.expected_label}, "
                f"got {outcome.predicted_label}",
            )
