"""Paired statistics: properties that fail when the statistics are wrong."""

from __future__ import annotations

import numpy as np
import pytest

from adaptmesh_gate.policy import decide
from adaptmesh_gate.statistics import (
    MIN_LABEL_EXAMPLES,
    accuracy_difference,
    compare,
    decision_seed,
    mcnemar,
)
from adaptmesh_schemas.values import GatePolicy
from tests.unit.adaptmesh_gate.test_policy import checks_named, examples_of, mcnemar_line, model

POLICY = GatePolicy()


def noisy_answers(
    rng: np.random.Generator, truth: list[str], labels: list[str], accuracy: float
) -> list[str]:
    """Right with probability `accuracy`, else a uniformly drawn other label."""
    out = []
    for label in truth:
        if rng.random() < accuracy:
            out.append(label)
        else:
            out.append(str(rng.choice([other for other in labels if other != label])))
    return out


def reference_macro_f1(truth: list[str], predicted: list[str]) -> float:
    """Macro-F1 from precision and recall, over the labels with support (scikit-learn's
    definition restricted to supported labels, which is adaptmesh_ml's)."""
    scores = []
    for label in sorted(set(truth)):
        hits = sum(t == p == label for t, p in zip(truth, predicted, strict=True))
        predicted_count = predicted.count(label)
        precision = hits / predicted_count if predicted_count else 0.0
        recall = hits / truth.count(label)
        scores.append(2 * precision * recall / (precision + recall) if hits else 0.0)
    return sum(scores) / len(scores)


def test_macro_f1_is_the_mean_over_labels_with_support() -> None:
    rng = np.random.default_rng(3)
    labels = ["a", "b", "c", "d"]
    truth = [str(label) for label in rng.choice(labels[:3], size=90)]  # d: never true
    candidate = noisy_answers(rng, truth, labels, 0.7)
    champion = noisy_answers(rng, truth, labels, 0.8)
    stats = compare(truth, candidate, champion, confidence=0.95, samples=200, seed=1, margin=0.02)
    assert stats.candidate_macro_f1 == pytest.approx(reference_macro_f1(truth, candidate))
    assert stats.champion_macro_f1 == pytest.approx(reference_macro_f1(truth, champion))
    assert stats.comparison.macro_f1_difference.estimate == pytest.approx(
        stats.candidate_macro_f1 - stats.champion_macro_f1
    )
    assert set(stats.comparison.per_label) == {"a", "b", "c"}


def test_identical_answers_give_a_zero_difference_and_are_approved() -> None:
    rng = np.random.default_rng(4)
    labels = ["a", "b", "c", "d", "e"]
    truth = [str(label) for label in rng.choice(labels, size=400)]
    answers = noisy_answers(rng, truth, labels, 0.8)
    stats = compare(truth, answers, answers, confidence=0.95, samples=500, seed=1, margin=0.02)
    macro = stats.comparison.macro_f1_difference
    assert macro.low <= 0 <= macro.high
    assert (macro.low, macro.high) == (0, 0)
    assert stats.comparison.mcnemar_p_worse == stats.comparison.mcnemar_p_better == 1.0
    examples = examples_of(truth)
    decision = decide(
        POLICY, model("m2", examples, answers), model("m1", examples, answers), examples, seed=5
    )
    assert decision.approved


def less_accurate(
    n: int, extra_errors: float, seed: int = 5
) -> tuple[list[str], list[str], list[str]]:
    """True labels, a champion right on ~90% of them, and a candidate wrong on `extra_errors`
    of the examples the champion gets right (and on all it misses)."""
    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c", "d", "e"]
    truth = [str(label) for label in rng.choice(labels, size=n)]
    champion = noisy_answers(rng, truth, labels, 0.9)
    # A miss answers "a" ("b" for an example of "a").
    candidate = [
        answer if answer != label or rng.random() >= extra_errors else "ab"[label == "a"]
        for answer, label in zip(champion, truth, strict=True)
    ]
    return truth, candidate, champion


@pytest.mark.parametrize(("n", "extra_errors"), [(300, 0.3), (1000, 0.05)])
def test_a_candidate_wrong_on_more_examples_fails_non_inferiority_and_mcnemar_says_so(
    n: int, extra_errors: float
) -> None:
    truth, candidate, champion = less_accurate(n, extra_errors)
    examples = examples_of(truth)
    decision = decide(
        POLICY,
        model("m2", examples, candidate),
        model("m1", examples, champion),
        examples,
        seed=decision_seed("ds", "m2", "m1"),
    )
    assert not decision.approved
    failed = {check.check for check in decision.checks if not check.passed}
    assert "non-inferiority" in failed
    assert "mcnemar" not in {check.check for check in decision.checks}
    line = mcnemar_line(decision)
    assert decision.comparison is not None
    assert decision.comparison.mcnemar_p_worse <= 0.05
    assert decision.comparison.candidate_only_right == 0
    assert line.endswith(
        f"wrong on {decision.comparison.champion_only_right} eval examples champion m1 got "
        "right and right on 0 it got wrong, significantly less accurate"
    )


def test_a_candidate_less_accurate_by_less_than_the_margin_passes_though_mcnemar_is_sure() -> None:
    """On 4,000 examples a candidate wrong on 32 (0.8%) the champion gets right, right on none
    it misses: McNemar finds it less accurate beyond doubt, but the drop is well inside the
    margin (0.03), so it is approved. (While McNemar was a check it rejected such candidates:
    bench/gate's 15%-flip newsgroups model in 45% of its 1,000-example eval splits.)"""
    truth, candidate, champion = less_accurate(4000, 0.011, seed=8)
    examples = examples_of(truth)
    decision = decide(
        POLICY.model_copy(update={"bootstrap_samples": 500}),
        model("m2", examples, candidate),
        model("m1", examples, champion),
        examples,
        seed=decision_seed("ds", "m2", "m1"),
    )
    assert decision.approved
    comparison = decision.comparison
    assert comparison is not None
    assert comparison.mcnemar_p_worse < 1e-6
    assert (
        -POLICY.margin
        < comparison.macro_f1_difference.low
        < comparison.macro_f1_difference.estimate
        < 0
    )
    assert checks_named(decision, "non-inferiority")[0].endswith(
        "non-inferior on 4000 eval examples"
    )
    assert mcnemar_line(decision).endswith(", significantly less accurate")


def test_the_bounds_cover_a_known_difference_at_their_confidence() -> None:
    """Population: 4 balanced labels, errors spread evenly, so each label's F1 equals the
    model's accuracy: macro-F1 0.85 (champion) against 0.80 (candidate), difference -0.05.
    The candidate's correctness is tied to the champion's (paired, as real retrains are)."""
    rng = np.random.default_rng(11)
    labels = ["a", "b", "c", "d"]
    truth_value = -0.05
    reps, n, confidence = 200, 300, 0.95
    below = above = 0
    for rep in range(reps):
        truth = [str(label) for label in rng.choice(labels, size=n)]
        u = rng.random(n)
        v = np.where(rng.random(n) < 0.6, u, rng.random(n))
        champion = [
            t if u[i] < 0.85 else str(rng.choice([x for x in labels if x != t]))
            for i, t in enumerate(truth)
        ]
        candidate = [
            t if v[i] < 0.80 else str(rng.choice([x for x in labels if x != t]))
            for i, t in enumerate(truth)
        ]
        macro = compare(
            truth,
            candidate,
            champion,
            confidence=confidence,
            samples=1000,
            seed=rep,
            margin=0.02,
        ).comparison.macro_f1_difference
        below += macro.low <= truth_value
        above += macro.high >= truth_value
    # Each one-sided bound holds with about `confidence` (standard error ~0.015 here).
    assert below / reps == pytest.approx(confidence, abs=0.05)
    assert above / reps == pytest.approx(confidence, abs=0.05)


def test_the_same_seed_gives_the_same_bounds() -> None:
    rng = np.random.default_rng(6)
    labels = ["a", "b", "c"]
    truth = [str(label) for label in rng.choice(labels, size=200)]
    candidate = noisy_answers(rng, truth, labels, 0.8)
    champion = noisy_answers(rng, truth, labels, 0.8)

    def bounds(seed: int) -> tuple[float, float]:
        stats = compare(
            truth, candidate, champion, confidence=0.95, samples=500, seed=seed, margin=0.02
        )
        return stats.comparison.macro_f1_difference.low, stats.comparison.macro_f1_difference.high

    assert bounds(9) == bounds(9)
    assert bounds(9) != bounds(10)


def test_the_decision_seed_is_fixed_by_dataset_candidate_and_champion() -> None:
    seed = decision_seed("ds-1", "m2", "m1")
    assert seed == decision_seed("ds-1", "m2", "m1")
    others = {
        decision_seed("ds-2", "m2", "m1"),
        decision_seed("ds-1", "m3", "m1"),
        decision_seed("ds-1", "m2", "m0"),
        decision_seed("ds-1", "m2", None),
    }
    assert seed not in others
    assert len(others) == 4
    assert 0 <= seed < 2**53


def test_exact_mcnemar_matches_the_binomial_by_hand() -> None:
    # 15 discordant examples, 12 of them the champion's: P(X >= 12) for X ~ Binomial(15, 1/2).
    p_worse, p_better = mcnemar(candidate_only_right=3, champion_only_right=12)
    assert p_worse == pytest.approx((455 + 105 + 15 + 1) / 2**15)
    assert p_better == pytest.approx(1 - (1 + 15 + 105) / 2**15)
    assert mcnemar(0, 0) == (1.0, 1.0)


def test_a_small_eval_split_says_it_is_too_small_and_a_large_one_does_not() -> None:
    labels = ["a", "b", "c", "d", "e"]

    def too_small(n: int, discordant: int) -> str | None:
        """Equal models on n examples: each is the only one right on discordant/2 of them."""
        truth = [labels[index % 5] for index in range(n)]
        champion, candidate = list(truth), list(truth)
        for index in range(0, discordant, 2):
            champion[index] = labels[(index + 1) % 5]
            candidate[index + 1] = labels[(index + 2) % 5]
        return compare(
            truth, candidate, champion, confidence=0.95, samples=1000, seed=1, margin=0.02
        ).comparison.too_small

    small = too_small(100, 8)
    assert small is not None
    assert "on 100 eval examples the macro-F1 difference is only known to within" in small
    assert "more than the margin 0.020: even a candidate exactly as good" in small
    assert "would decide it" in small
    assert too_small(4000, 320) is None


def test_a_label_with_too_few_eval_examples_is_named() -> None:
    truth = ["a"] * 50 + ["b"] * 50 + ["c"] * (MIN_LABEL_EXAMPLES - 2)
    stats = compare(truth, truth, truth, confidence=0.95, samples=200, seed=1, margin=0.02)
    assert stats.comparison.too_small is not None
    assert f"fewer than {MIN_LABEL_EXAMPLES} eval examples: c (3)" in stats.comparison.too_small


def test_bonferroni_keeps_equal_models_on_twenty_noisy_labels_from_label_regressions() -> None:
    """Two equally good models, each wrong on a random 20% of 400 examples over 20 labels:
    per-label F1 moves by ~0.1 by chance. Unadjusted 95% bounds would flag some label in
    about half of the trials; Bonferroni keeps it at most about 5%."""
    rng = np.random.default_rng(12)
    labels = [f"label-{index:02}" for index in range(20)]
    trials, flagged = 100, 0
    policy = POLICY.model_copy(update={"bootstrap_samples": 500})
    for trial in range(trials):
        truth = [label for label in labels for _ in range(20)]
        examples = examples_of(truth)
        decision = decide(
            policy,
            model("m2", examples, noisy_answers(rng, truth, labels, 0.8)),
            model("m1", examples, noisy_answers(rng, truth, labels, 0.8)),
            examples,
            seed=trial,
        )
        assert decision.comparison is not None
        assert decision.comparison.per_label_confidence == pytest.approx(1 - 0.05 / 20)
        flagged += any(
            not check.passed for check in decision.checks if check.check == "label-regression"
        )
    assert flagged / trials <= 0.1


def test_a_slice_accuracy_difference_is_paired() -> None:
    same = accuracy_difference(
        [True, False, True], [True, False, True], confidence=0.95, samples=500, seed=1
    )
    assert (same.estimate, same.low, same.high) == (0, 0, 0)
    # 10 of 40 examples lost, none gained: a difference of -0.25, clearly below zero.
    lost = accuracy_difference(
        [False] * 10 + [True] * 30, [True] * 40, confidence=0.95, samples=2000, seed=1
    )
    assert lost.estimate == -0.25
    assert lost.low < -0.25 < lost.high < 0
