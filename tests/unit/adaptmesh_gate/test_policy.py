"""The gate policy on hand-built evaluations and answers per eval example."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from adaptmesh_gate.policy import Contender, Decision, decide
from adaptmesh_schemas.documents import DatasetExample, ModelEvaluation, MustPassOutcome
from adaptmesh_schemas.events import LabelMetrics
from adaptmesh_schemas.values import ExampleSource, GatePolicy, SliceThreshold

POLICY = GatePolicy(min_macro_f1=0.5, margin=0.02, max_regression=0.02, require_must_pass=True)
SEED = 7


def evaluation(
    version: str,
    f1: dict[str, tuple[float, int]],
    *,
    macro_f1: float | None = None,
    cases: tuple[MustPassOutcome, ...] = (),
) -> ModelEvaluation:
    """An evaluation with the given (F1, support) per label; macro-F1 over supported labels."""
    supported = [score for score, support in f1.values() if support > 0]
    return ModelEvaluation(
        model_version=version,
        macro_f1=macro_f1 if macro_f1 is not None else sum(supported) / len(supported),
        accuracy=0.0,
        per_label={
            label: LabelMetrics(precision=score, recall=score, f1=score, support=support)
            for label, (score, support) in f1.items()
        },
        confusion={},
        must_pass=cases,
    )


def case(case_id: str, expected: str, got: str) -> MustPassOutcome:
    return MustPassOutcome(
        rule_id="MiFID-II/Art-24",
        case_id=case_id,
        expected_label=expected,
        predicted_label=got,
        passed=expected == got,
    )


def contender(evaluation: ModelEvaluation, *labels: str) -> Contender:
    return Contender(evaluation, labels or tuple(evaluation.per_label))


def examples_of(
    labels: Sequence[str],
    *,
    source: ExampleSource | None = None,
    source_name: str | None = None,
    start: int = 0,
) -> tuple[DatasetExample, ...]:
    """Eval examples with these true labels (ids from `start`)."""
    return tuple(
        DatasetExample(
            example_id=f"ex-{start + index}",
            text=f"text {start + index}",
            label=label,
            split="eval",
            source_event_id="batch-1",
            source=source,
            source_name=source_name,
        )
        for index, label in enumerate(labels)
    )


def model(
    version: str,
    examples: Sequence[DatasetExample],
    predictions: Sequence[str],
    *labels: str,
    cases: tuple[MustPassOutcome, ...] = (),
) -> Contender:
    """A contender whose evaluation is computed from its answers, as adaptmesh_ml does:
    F1 = 2 TP / (support + predicted), macro-F1 over the labels with support."""
    truth = [example.label for example in examples]
    head = labels or tuple(dict.fromkeys(truth))
    every = list(dict.fromkeys([*head, *truth, *predictions]))
    per_label = {}
    for label in every:
        support = truth.count(label)
        predicted = list(predictions).count(label)
        hits = sum(t == p == label for t, p in zip(truth, predictions, strict=True))
        f1 = 2 * hits / (support + predicted) if support + predicted else 0.0
        precision = hits / predicted if predicted else 0.0
        recall = hits / support if support else 0.0
        per_label[label] = LabelMetrics(precision=precision, recall=recall, f1=f1, support=support)
    supported = [m.f1 for m in per_label.values() if m.support > 0]
    right = sum(t == p for t, p in zip(truth, predictions, strict=True))
    return Contender(
        ModelEvaluation(
            model_version=version,
            macro_f1=sum(supported) / len(supported) if supported else 0.0,
            accuracy=right / len(truth) if truth else 0.0,
            per_label=per_label,
            confusion={},
            must_pass=cases,
        ),
        head,
        tuple(predictions),
    )


def answers(
    examples: Sequence[DatasetExample], wrong: dict[str, tuple[int, str]] | None = None
) -> list[str]:
    """Right answers, except the first n examples of a label answered as another label."""
    wrong = wrong or {}
    left = {label: count for label, (count, _) in wrong.items()}
    out = []
    for example in examples:
        if left.get(example.label, 0) > 0:
            left[example.label] -= 1
            out.append(wrong[example.label][1])
        else:
            out.append(example.label)
    return out


def checks_named(decision: Decision, name: str) -> list[str]:
    return [check.reason for check in decision.checks if check.check == name]


def mcnemar_line(decision: Decision) -> str:
    """The McNemar line: an info line (it judges nothing) of the comparison with the champion."""
    [line] = [check for check in decision.checks if check.reason.startswith("McNemar exact")]
    assert (line.check, line.passed) == ("info", True)
    return line.reason


def balanced(*labels: str, each: int) -> tuple[DatasetExample, ...]:
    return examples_of([label for _ in range(each) for label in labels])


# --- without champion: floor and must-pass cases ----------------------------------------------


def test_first_model_without_champion_is_judged_on_floor_and_cases_only() -> None:
    candidate = contender(evaluation("m1", {"gold": (0.8, 5), "trade": (0.82, 5)}))
    decision = decide(POLICY, candidate, None)
    assert decision.approved
    assert decision.reasons == (
        "macro-F1 0.810 >= floor 0.500",
        "no champion for this domain: regression check skipped",
        "no must-pass cases in force",
    )
    assert decision.reasons == tuple(check.reason for check in decision.checks)
    assert [check.check for check in decision.checks] == ["floor", "info", "must-pass"]
    assert decision.comparison is None
    assert decision.slices == ()


def test_below_the_floor_is_rejected_even_without_champion() -> None:
    candidate = contender(evaluation("m1", {"gold": (0.4, 5), "trade": (0.5, 5)}))
    approved, reasons, *_ = decide(POLICY, candidate, None)
    assert not approved
    assert reasons[0] == "macro-F1 0.450 < floor 0.500"


def test_exactly_at_the_floor_passes() -> None:
    candidate = contender(evaluation("m1", {"gold": (0.5, 5)}, macro_f1=0.5))
    assert decide(POLICY, candidate, None).approved


# --- against the champion: paired statistics ---------------------------------------------------


def test_an_equal_candidate_passes_every_paired_check_with_numbers() -> None:
    examples = balanced("gold", "trade", "ship", each=40)
    champion = model("m1", examples, answers(examples, {"gold": (4, "trade")}))
    candidate = model("m2", examples, answers(examples, {"gold": (4, "trade")}))
    decision = decide(POLICY, candidate, champion, examples, seed=SEED)
    assert decision.approved
    [line] = checks_named(decision, "non-inferiority")
    assert line == (
        "macro-F1 difference +0.000 vs champion m1, 95% bounds [+0.000, +0.000]: lower bound "
        ">= -0.020 (margin), non-inferior on 120 eval examples"
    )
    assert mcnemar_line(decision) == (
        "McNemar exact p=1.000 that the candidate is less accurate: the candidate is wrong on 0 "
        "eval examples champion m1 got right and right on 0 it got wrong, not significantly less "
        "accurate"
    )
    assert not checks_named(decision, "mcnemar"), "McNemar is no check of its own"
    [line] = checks_named(decision, "label-regression")
    assert line == (
        "no label significantly more than 0.020 below champion m1 on 3 shared label(s) with "
        "eval support (98.33% bounds, Bonferroni; no label dropped)"
    )
    assert decision.comparison is not None
    assert decision.comparison.examples == 120
    assert decision.comparison.seed == SEED


def test_a_significant_drop_on_one_label_rejects_with_one_line_for_that_label() -> None:
    # misc: both heads know it, no eval example carries it (it takes the candidate's misses).
    examples = balanced("gold", "trade", "ship", each=40)
    champion = model("m1", examples, answers(examples), "gold", "trade", "ship", "misc")
    candidate = model(
        "m2", examples, answers(examples, {"gold": (20, "misc")}), "gold", "trade", "ship", "misc"
    )
    decision = decide(POLICY, candidate, champion, examples, seed=SEED)
    assert not decision.approved
    [line] = checks_named(decision, "label-regression")
    assert line == (
        "label gold: F1 0.667 vs champion m1 1.000 on 40 eval examples, drop 0.333 "
        "(98.33% lower bound 0.194) > allowed 0.020: significantly worse"
    )
    assert "not compared (no eval support): misc" in decision.reasons
    # 20 discordant examples, all the champion's: McNemar p = 2**-20, stated, judging nothing.
    assert mcnemar_line(decision) == (
        "McNemar exact p=9.5e-07 that the candidate is less accurate: the candidate is wrong on "
        "20 eval examples champion m1 got right and right on 0 it got wrong, significantly less "
        "accurate"
    )
    failed = [check.check for check in decision.checks if not check.passed]
    assert failed == ["non-inferiority", "label-regression"]


def test_a_drop_of_one_example_is_noise_not_a_regression() -> None:
    # The old point rule rejected this: one gold example answered trade drops gold's F1 by
    # 0.043 and trade's by 0.040, both beyond 0.02.
    examples = balanced("gold", "trade", "ship", "grain", "crude", each=12)
    champion = model("m1", examples, answers(examples))
    candidate = model("m2", examples, answers(examples, {"gold": (1, "trade")}))
    decision = decide(POLICY, candidate, champion, examples, seed=SEED)
    [line] = checks_named(decision, "label-regression")
    assert line.startswith("no label significantly more than 0.020 below champion m1 on 5 ")
    assert "largest drop 0.043 on gold, upper bound +0.000" in line
    assert mcnemar_line(decision).startswith("McNemar exact p=0.500 that the candidate is less")
    assert mcnemar_line(decision).endswith(", not significantly less accurate")
    # 60 examples cannot show non-inferiority within 0.02: the report says so.
    assert decision.comparison is not None
    too_small = decision.comparison.too_small
    assert too_small is not None
    assert too_small.startswith("eval split too small: on 60 eval examples the macro-F1")
    assert too_small in decision.reasons


def test_an_improvement_everywhere_says_no_label_dropped() -> None:
    examples = balanced("gold", "trade", each=30)
    champion = model("m1", examples, answers(examples, {"gold": (10, "trade")}))
    candidate = model("m2", examples, answers(examples))
    decision = decide(POLICY, candidate, champion, examples, seed=SEED)
    assert decision.approved
    assert "no label dropped" in checks_named(decision, "label-regression")[0]


def test_a_candidate_much_worse_overall_is_rejected_by_non_inferiority() -> None:
    # Wrong on 10% of the examples the champion gets right, spread over every label.
    examples = balanced("gold", "trade", "ship", "grain", each=60)
    champion = model("m1", examples, answers(examples))
    wrong = {"gold": (6, "trade"), "trade": (6, "ship"), "ship": (6, "grain"), "grain": (6, "gold")}
    candidate = model("m2", examples, answers(examples, wrong))
    decision = decide(POLICY, candidate, champion, examples, seed=SEED)
    assert not decision.approved
    [line] = checks_named(decision, "non-inferiority")
    assert line.startswith("macro-F1 difference -0.100 vs champion m1, 95% bounds [")
    assert line.endswith(
        "lower bound < -0.020 (margin), not shown non-inferior on 240 eval examples"
    )


def test_a_candidate_significantly_but_slightly_less_accurate_is_non_inferior() -> None:
    """McNemar asks "exactly as accurate?": on 2,000 examples it is sure a candidate wrong on
    1% more of them is less accurate, but 0.01 is inside the margin, so it is approved; the
    McNemar line still says what it found."""
    labels = ("gold", "trade", "ship", "grain", "crude")
    examples = balanced(*labels, each=400)
    champion = model("m1", examples, answers(examples))
    # 4 errors a label, each sent to the next label: every label's F1 drops by 0.01.
    wrong = {label: (4, labels[(index + 1) % 5]) for index, label in enumerate(labels)}
    candidate = model("m2", examples, answers(examples, wrong))
    decision = decide(POLICY, candidate, champion, examples, seed=SEED)
    assert decision.approved
    [line] = checks_named(decision, "non-inferiority")
    assert line.startswith("macro-F1 difference -0.010 vs champion m1, 95% bounds [")
    assert line.endswith("lower bound >= -0.020 (margin), non-inferior on 2000 eval examples")
    assert mcnemar_line(decision) == (
        "McNemar exact p=9.5e-07 that the candidate is less accurate: the candidate is wrong on "
        "20 eval examples champion m1 got right and right on 0 it got wrong, significantly less "
        "accurate"
    )


def test_superiority_asks_for_a_better_candidate() -> None:
    superiority = POLICY.model_copy(update={"test": "superiority"})
    examples = balanced("gold", "trade", each=100)
    champion = model("m1", examples, answers(examples, {"gold": (30, "trade")}))
    better = model("m2", examples, answers(examples))
    decision = decide(superiority, better, champion, examples, seed=SEED)
    assert decision.approved
    [line] = checks_named(decision, "superiority")
    assert "lower bound > 0 and McNemar exact p=9.3e-10 <= 0.050 that it is more accurate" in line
    assert line.endswith("superior on 200 eval examples")
    equal = model("m3", examples, answers(examples, {"gold": (30, "trade")}))
    decision = decide(superiority, equal, champion, examples, seed=SEED)
    assert not decision.approved
    [line] = checks_named(decision, "superiority")
    assert "lower bound <= 0 and McNemar exact p=1.000 > 0.050" in line


def test_superiority_needs_mcnemar_as_well_as_a_higher_macro_f1() -> None:
    """The candidate fixes the champion's misses on a small label and makes as many on a large
    one: macro-F1 rises clearly (the lower bound is above 0), accuracy does not, so McNemar
    finds no evidence that it is right more often and the candidate is not superior."""
    superiority = POLICY.model_copy(update={"test": "superiority"})
    examples = examples_of(["earn"] * 1000 + ["trade"] * 100)
    champion = model("m1", examples, answers(examples, {"trade": (60, "earn")}))
    candidate = model("m2", examples, answers(examples, {"earn": (60, "trade")}))
    decision = decide(superiority, candidate, champion, examples, seed=SEED)
    assert not decision.approved
    assert decision.comparison is not None
    assert decision.comparison.macro_f1_difference.low > 0
    assert decision.comparison.candidate_only_right == decision.comparison.champion_only_right
    [line] = checks_named(decision, "superiority")
    assert line == (
        "macro-F1 difference +0.098 vs champion m1, 95% bounds [+0.046, +0.151]: lower bound > 0 "
        "and McNemar exact p=0.536 > 0.050 that it is more accurate, not shown superior on 1100 "
        "eval examples"
    )
    failed = [check.check for check in decision.checks if not check.passed]
    assert failed == ["superiority"]
    assert mcnemar_line(decision).endswith(", not significantly less accurate")


def test_labels_without_eval_support_are_not_compared() -> None:
    examples = balanced("gold", each=10)
    champion = model("m1", examples, answers(examples), "gold", "grain")
    candidate = model("m2", examples, answers(examples), "gold", "grain")
    decision = decide(POLICY, candidate, champion, examples, seed=SEED)
    assert decision.approved
    assert "not compared (no eval support): grain" in decision.reasons
    assert "on 1 shared label(s)" in checks_named(decision, "label-regression")[0]


def test_labels_added_by_the_candidate_are_listed_not_compared() -> None:
    # The champion predates the taxonomy change: it cannot predict copper, and its examples
    # are left out of the paired comparison instead of counting against the champion.
    examples = examples_of(["gold"] * 20 + ["trade"] * 20 + ["copper"] * 10)
    champion = model("m1", examples, [*answers(examples[:40]), *["gold"] * 10], "gold", "trade")
    candidate = model("m2", examples, answers(examples), "gold", "trade", "copper")
    decision = decide(POLICY, candidate, champion, examples, seed=SEED)
    assert decision.approved
    assert "labels new in the candidate: copper" in decision.reasons
    assert (
        "paired comparison on 40 eval examples: 10 more carry labels champion m1 does not know"
        in decision.reasons
    )
    assert decision.comparison is not None
    assert set(decision.comparison.per_label) == {"gold", "trade"}
    assert decision.comparison.macro_f1_difference.estimate == 0


def test_a_new_label_is_not_compared_even_if_the_champion_scored_on_it() -> None:
    # Evaluations list every label seen in the data; only the heads' labels count as known.
    examples = examples_of(["gold"] * 20 + ["copper"] * 20)
    champion = model("m1", examples, answers(examples), "gold")
    candidate = model("m2", examples, answers(examples, {"copper": (18, "gold")}), "gold", "copper")
    decision = decide(POLICY, candidate, champion, examples, seed=SEED)
    assert decision.comparison is not None
    assert set(decision.comparison.per_label) == {"gold"}
    assert not checks_named(decision, "label-regression")[0].startswith("label copper")


def test_labels_retired_by_the_candidate_are_listed_not_compared() -> None:
    # A retired label's examples leave the dataset, so the eval split no longer has it.
    examples = balanced("gold", each=10)
    champion = model("m1", examples, answers(examples), "gold", "ship")
    candidate = model("m2", examples, answers(examples), "gold")
    decision = decide(POLICY, candidate, champion, examples, seed=SEED)
    assert decision.approved
    assert "labels of the champion the candidate drops: ship" in decision.reasons


def test_no_shared_label_with_support_says_there_was_nothing_to_compare() -> None:
    examples = balanced("trade", each=10)
    champion = model("m1", examples, ["gold"] * 10, "gold")
    candidate = model("m2", examples, answers(examples), "trade")
    decision = decide(POLICY, candidate, champion, examples, seed=SEED)
    assert decision.approved
    assert "no label shared with champion m1 has eval support: nothing to compare" in (
        decision.reasons
    )
    assert decision.comparison is None


# --- what cannot be computed fails -------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate_answers", "champion_answers", "why"),
    [
        (None, "right", "the candidate's answers per eval example are missing"),
        ("right", None, "champion m1's answers per eval example are missing"),
        ("short", "right", "the candidate gave 9 answers for 10 eval examples"),
    ],
)
def test_missing_answers_fail_the_paired_checks(
    candidate_answers: str | None, champion_answers: str | None, why: str
) -> None:
    examples = balanced("gold", "trade", each=5)
    right = tuple(answers(examples))
    given = {"right": right, "short": right[:-1], None: None}
    champion = model("m1", examples, right)
    candidate = model("m2", examples, right)
    champion = Contender(champion.evaluation, champion.labels, given[champion_answers])
    candidate = Contender(candidate.evaluation, candidate.labels, given[candidate_answers])
    decision = decide(POLICY, candidate, champion, examples, seed=SEED)
    assert not decision.approved
    assert decision.comparison is None
    failed = [check for check in decision.checks if not check.passed]
    assert [check.check for check in failed] == ["non-inferiority", "label-regression"]
    assert failed[0].reason == (
        f"non-inferiority vs champion m1 cannot be computed: {why} (a check that cannot be "
        "computed fails)"
    )
    assert not [reason for reason in decision.reasons if reason.startswith("McNemar")]


def test_a_champion_without_eval_examples_to_compare_on_fails() -> None:
    champion = contender(evaluation("m1", {"gold": (0.9, 5)}))
    candidate = contender(evaluation("m2", {"gold": (0.9, 5)}))
    decision = decide(POLICY, candidate, champion)
    assert not decision.approved
    failed = [check.check for check in decision.checks if not check.passed]
    assert failed == ["non-inferiority", "label-regression"]
    assert decision.reasons[2] == (
        "label-regression vs champion m1 cannot be computed: no eval examples (a check that "
        "cannot be computed fails)"
    )


# --- per-label floors ----------------------------------------------------------------------------


def test_label_floors_pass_fail_and_fail_without_support() -> None:
    floors = POLICY.model_copy(update={"min_label_f1": {"gold": 0.8, "trade": 0.9, "ship": 0.5}})
    candidate = contender(evaluation("m1", {"gold": (0.8, 5), "trade": (0.85, 5), "ship": (0, 0)}))
    decision = decide(floors, candidate, None)
    assert not decision.approved
    assert checks_named(decision, "label-floor") == [
        "label gold: F1 0.800 >= floor 0.800",
        "label ship: no eval example, so its F1 cannot be computed (floor 0.500)",
        "label trade: F1 0.850 < floor 0.900",
    ]


# --- slices --------------------------------------------------------------------------------------


def sliced_examples() -> tuple[DatasetExample, ...]:
    batch = examples_of(["gold", "trade"] * 50, source="data-batch", source_name="b-1")
    rule = examples_of(
        ["gold", "trade"] * 10, source="regulation", source_name="MiFID-II/Art-24", start=100
    )
    return (*batch, *rule)


def test_every_slice_present_gets_a_result_and_only_thresholds_are_judged() -> None:
    examples = sliced_examples()
    policy = POLICY.model_copy(
        update={"slices": {"regulation": SliceThreshold(min_accuracy=0.9, max_accuracy_drop=0.1)}}
    )
    champion = model("m1", examples, answers(examples))
    candidate = model("m2", examples, answers(examples))
    decision = decide(policy, candidate, champion, examples, seed=SEED)
    assert decision.approved
    assert [result.slice for result in decision.slices] == [
        "data-batch",
        "data-batch:b-1",
        "regulation",
        "regulation:MiFID-II/Art-24",
    ]
    judged = {result.slice: result.passed for result in decision.slices}
    assert judged == {
        "data-batch": None,
        "data-batch:b-1": None,
        "regulation": True,
        "regulation:MiFID-II/Art-24": None,
    }
    regulation = decision.slices[2]
    assert (regulation.examples, regulation.candidate_accuracy) == (20, 1.0)
    assert regulation.accuracy_difference is not None
    assert checks_named(decision, "slice") == [
        "slice regulation (20 eval examples): accuracy 1.000 >= floor 0.900; accuracy "
        "difference +0.000 vs champion m1, 95% lower bound +0.000 >= -0.100 (allowed drop)"
    ]


def test_a_slice_regression_rejects_even_when_the_whole_split_looks_fine() -> None:
    examples = sliced_examples()
    policy = POLICY.model_copy(
        update={
            "margin": 0.1,
            "slices": {"regulation:MiFID-II/Art-24": SliceThreshold(max_accuracy_drop=0.05)},
        }
    )
    champion = model("m1", examples, answers(examples))
    # Wrong on 8 of the 20 regulation examples only.
    candidate_answers = answers(examples)
    for index in range(100, 108):
        candidate_answers[index] = "trade" if examples[index].label == "gold" else "gold"
    candidate = model("m2", examples, candidate_answers)
    decision = decide(policy, candidate, champion, examples, seed=SEED)
    assert not decision.approved
    [line] = checks_named(decision, "slice")
    assert line.startswith(
        "slice regulation:MiFID-II/Art-24 (20 eval examples): accuracy difference -0.400 vs "
        "champion m1, 95% lower bound "
    )
    assert "< -0.050 (allowed drop)" in line
    failed = [check.check for check in decision.checks if not check.passed]
    assert "slice" in failed


def test_a_named_slice_without_examples_fails() -> None:
    examples = sliced_examples()
    policy = POLICY.model_copy(update={"slices": {"feedback": SliceThreshold(min_accuracy=0.5)}})
    candidate = model("m1", examples, answers(examples))
    decision = decide(policy, candidate, None, examples, seed=SEED)
    assert not decision.approved
    assert checks_named(decision, "slice") == [
        "slice feedback: no eval example, so it cannot be judged"
    ]
    [feedback] = [result for result in decision.slices if result.slice == "feedback"]
    assert (feedback.examples, feedback.passed) == (0, False)


def test_without_champion_a_slice_drop_is_not_judged() -> None:
    examples = sliced_examples()
    policy = POLICY.model_copy(
        update={"slices": {"regulation": SliceThreshold(max_accuracy_drop=0.05)}}
    )
    candidate = model("m1", examples, answers(examples))
    decision = decide(policy, candidate, None, examples, seed=SEED)
    assert decision.approved
    assert "slice regulation (20 eval examples): no champion, accuracy drop not judged" in (
        decision.reasons
    )
    [regulation] = [result for result in decision.slices if result.slice == "regulation"]
    assert regulation.passed is None
    assert regulation.champion_accuracy is None


def test_a_slice_floor_without_the_candidate_answers_fails() -> None:
    examples = sliced_examples()
    policy = POLICY.model_copy(update={"slices": {"regulation": SliceThreshold(min_accuracy=0.5)}})
    right = model("m1", examples, answers(examples))
    candidate = Contender(right.evaluation, right.labels, None)
    decision = decide(policy, candidate, None, examples, seed=SEED)
    assert not decision.approved
    assert checks_named(decision, "slice") == [
        "slice regulation (20 eval examples): accuracy cannot be computed: the candidate's "
        "answers per eval example are missing"
    ]


# --- must-pass cases -----------------------------------------------------------------------------


def test_a_wrong_must_pass_case_rejects_with_the_case_in_the_reason() -> None:
    cases = (
        case("gold-1", "gold", "gold"),
        case("gold-2", "gold", "gold"),
        case("gold-3", "gold", "trade"),
        case("trade-1", "trade", "trade"),
        case("trade-2", "trade", "trade"),
    )
    candidate = contender(evaluation("m1", {"gold": (0.9, 5)}, cases=cases))
    approved, reasons, *_ = decide(POLICY, candidate, None)
    assert not approved
    assert reasons[-1] == (
        "must-pass 4/5: case gold-3 (rule MiFID-II/Art-24) expected gold, got trade"
    )


def test_every_failed_case_gets_its_own_line() -> None:
    cases = (case("a", "gold", "trade"), case("b", "trade", "gold"), case("c", "gold", "gold"))
    candidate = contender(evaluation("m1", {"gold": (0.9, 5)}, cases=cases))
    reasons = decide(POLICY, candidate, None).reasons
    assert [r for r in reasons if r.startswith("must-pass")] == [
        "must-pass 1/3: case a (rule MiFID-II/Art-24) expected gold, got trade",
        "must-pass 1/3: case b (rule MiFID-II/Art-24) expected trade, got gold",
    ]


def test_all_cases_right_is_a_passed_line() -> None:
    cases = (case("a", "gold", "gold"), case("b", "trade", "trade"))
    candidate = contender(evaluation("m1", {"gold": (0.9, 5)}, cases=cases))
    approved, reasons, *_ = decide(POLICY, candidate, None)
    assert approved
    assert reasons[-1] == "must-pass 2/2 right"


def test_wrong_cases_pass_when_the_policy_does_not_require_them() -> None:
    lenient = POLICY.model_copy(update={"require_must_pass": False})
    cases = (case("a", "gold", "trade"), case("b", "trade", "trade"))
    candidate = contender(evaluation("m1", {"gold": (0.9, 5)}, cases=cases))
    approved, reasons, *_ = decide(lenient, candidate, None)
    assert approved
    assert reasons[-1] == "must-pass 1/2 right (the policy does not require all)"


def test_a_must_pass_failure_rejects_whatever_the_statistics_say() -> None:
    examples = balanced("gold", "trade", each=200)
    champion = model("m1", examples, answers(examples, {"gold": (60, "trade")}))
    candidate = model("m2", examples, answers(examples), cases=(case("a", "gold", "trade"),))
    decision = decide(POLICY, candidate, champion, examples, seed=SEED)
    assert not decision.approved
    failed = [check for check in decision.checks if not check.passed]
    assert [check.check for check in failed] == ["must-pass"]
    assert decision.comparison is not None
    assert decision.comparison.macro_f1_difference.low > 0.1


def test_every_failing_check_is_reported_together() -> None:
    examples = balanced("gold", "trade", each=40)
    champion = model("m1", examples, answers(examples))
    candidate = model(
        "m2",
        examples,
        answers(examples, {"gold": (30, "trade"), "trade": (30, "gold")}),
        cases=(case("a", "gold", "trade"),),
    )
    decision = decide(POLICY, candidate, champion, examples, seed=SEED)
    assert not decision.approved
    failed = [check.check for check in decision.checks if not check.passed]
    assert failed == [
        "floor",
        "non-inferiority",
        "label-regression",
        "label-regression",
        "must-pass",
    ]
    # 60 discordant examples, all the champion's: reported, though it judges nothing.
    assert mcnemar_line(decision).startswith("McNemar exact p=8.7e-19 that the candidate is ")
    assert mcnemar_line(decision).endswith(", significantly less accurate")
    assert decision.reasons[0] == "macro-F1 0.250 < floor 0.500"
    assert decision.reasons[-1] == (
        "must-pass 0/1: case a (rule MiFID-II/Art-24) expected gold, got trade"
    )
