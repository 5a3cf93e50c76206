"""The recipe's gate policy applied to a candidate and the champion it would replace.

Pure: it only compares two evaluations made on the same eval split and must-pass cases. Every
check yields one readable line, passed or failed, so the report explains an approval as well
as a rejection.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from adaptmesh_schemas.documents import ModelEvaluation
from adaptmesh_schemas.values import GatePolicy

# Scores are rounded in the report lines; a drop equal to the allowed margin must not fail
# because of float noise in the last bits.
_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Contender:
    """A model's evaluation together with the labels its head knows.

    The evaluation alone cannot say which labels a model knows: an eval split may hold
    examples of labels a champion trained before a taxonomy change has never seen.
    """

    evaluation: ModelEvaluation
    labels: Collection[str]


class Check(NamedTuple):
    passed: bool
    reason: str


class Decision(NamedTuple):
    """The outcome: approved only if every check passed; one line per check."""

    approved: bool
    reasons: tuple[str, ...]


def decide(policy: GatePolicy, candidate: Contender, champion: Contender | None) -> Decision:
    """Judge `candidate` against the policy's floor, the champion (if any) and the cases."""
    checks = [
        _macro_f1_floor(policy, candidate.evaluation),
        *_no_regression(policy, candidate, champion),
        *_must_pass(policy, candidate.evaluation),
    ]
    return Decision(all(check.passed for check in checks), tuple(c.reason for c in checks))


def _score(value: float) -> str:
    return f"{value:.3f}"


def _macro_f1_floor(policy: GatePolicy, candidate: ModelEvaluation) -> Check:
    if candidate.macro_f1 + _TOLERANCE >= policy.min_macro_f1:
        return Check(
            passed=True,
            reason=f"macro-F1 {_score(candidate.macro_f1)} >= floor {_score(policy.min_macro_f1)}",
        )
    return Check(
        passed=False,
        reason=f"macro-F1 {_score(candidate.macro_f1)} < floor {_score(policy.min_macro_f1)}",
    )


def _no_regression(
    policy: GatePolicy, candidate: Contender, champion: Contender | None
) -> Iterator[Check]:
    """Per-label F1 may not drop by more than the margin on labels both heads know.

    Only labels with eval support are compared: without examples an F1 of 0 means nothing.
    Labels only one model knows are listed, not judged (a taxonomy change added or retired
    them; the floor and the must-pass cases cover the new ones).
    """
    if champion is None:
        yield Check(passed=True, reason="no champion for this domain: regression check skipped")
        return
    name = champion.evaluation.model_version
    cand_metrics = candidate.evaluation.per_label
    champ_metrics = champion.evaluation.per_label
    shared = sorted(set(candidate.labels) & set(champion.labels))
    compared = [
        label
        for label in shared
        if label in cand_metrics and label in champ_metrics and cand_metrics[label].support > 0
    ]
    unsupported = [label for label in shared if label not in compared]
    added = sorted(set(candidate.labels) - set(champion.labels))
    dropped = sorted(set(champion.labels) - set(candidate.labels))

    regressions: list[Check] = []
    largest: tuple[float, str] | None = None
    for label in compared:
        before, after = champ_metrics[label].f1, cand_metrics[label].f1
        drop = before - after
        if largest is None or drop > largest[0]:
            largest = (drop, label)
        if drop > policy.max_regression + _TOLERANCE:
            regressions.append(
                Check(
                    passed=False,
                    reason=f"label {label}: F1 {_score(after)} vs champion {name} "
                    f"{_score(before)}, drop {_score(drop)} > allowed "
                    f"{_score(policy.max_regression)}",
                )
            )
    if regressions:
        yield from regressions
    elif largest is None:
        yield Check(
            passed=True,
            reason=f"no label shared with champion {name} has eval support: nothing to compare",
        )
    else:
        drop, label = largest
        worst = f"largest drop {_score(drop)} on {label}" if drop > 0 else "no label dropped"
        yield Check(
            passed=True,
            reason=f"no per-label F1 drop beyond {_score(policy.max_regression)} vs champion "
            f"{name} on {len(compared)} shared label(s) with eval support ({worst})",
        )
    if unsupported:
        yield Check(
            passed=True,
            reason=f"not compared (no eval support): {', '.join(unsupported)}",
        )
    if added:
        yield Check(passed=True, reason=f"labels new in the candidate: {', '.join(added)}")
    if dropped:
        yield Check(
            passed=True, reason=f"labels of the champion the candidate drops: {', '.join(dropped)}"
        )


def _must_pass(policy: GatePolicy, candidate: ModelEvaluation) -> Iterator[Check]:
    outcomes = candidate.must_pass
    total = len(outcomes)
    right = sum(outcome.passed for outcome in outcomes)
    if total == 0:
        yield Check(passed=True, reason="no must-pass cases in force")
        return
    if right == total:
        yield Check(passed=True, reason=f"must-pass {right}/{total} right")
        return
    if not policy.require_must_pass:
        yield Check(
            passed=True,
            reason=f"must-pass {right}/{total} right (the policy does not require all)",
        )
        return
    for outcome in outcomes:
        if not outcome.passed:
            yield Check(
                passed=False,
                reason=f"must-pass {right}/{total}: case {outcome.case_id} "
                f"(rule {outcome.rule_id}) expected {outcome.expected_label}, "
                f"got {outcome.predicted_label}",
            )
