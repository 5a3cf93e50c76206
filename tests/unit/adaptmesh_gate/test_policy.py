"""The gate policy on hand-built evaluations."""

from __future__ import annotations

import pytest

from adaptmesh_gate.policy import Contender, decide
from adaptmesh_schemas.documents import ModelEvaluation, MustPassOutcome
from adaptmesh_schemas.events import LabelMetrics
from adaptmesh_schemas.values import GatePolicy

POLICY = GatePolicy(min_macro_f1=0.5, max_regression=0.02, require_must_pass=True)


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


def test_first_model_without_champion_is_judged_on_floor_and_cases_only() -> None:
    candidate = contender(evaluation("m1", {"gold": (0.8, 5), "trade": (0.82, 5)}))
    approved, reasons = decide(POLICY, candidate, None)
    assert approved
    assert reasons == (
        "macro-F1 0.810 >= floor 0.500",
        "no champion for this domain: regression check skipped",
        "no must-pass cases in force",
    )


def test_below_the_floor_is_rejected_even_without_champion() -> None:
    candidate = contender(evaluation("m1", {"gold": (0.4, 5), "trade": (0.5, 5)}))
    approved, reasons = decide(POLICY, candidate, None)
    assert not approved
    assert reasons[0] == "macro-F1 0.450 < floor 0.500"


def test_exactly_at_the_floor_passes() -> None:
    candidate = contender(evaluation("m1", {"gold": (0.5, 5)}, macro_f1=0.5))
    assert decide(POLICY, candidate, None).approved


def test_a_drop_beyond_the_margin_on_a_shared_label_rejects_with_one_line_per_label() -> None:
    champion = contender(evaluation("m1", {"gold": (0.9, 5), "trade": (0.8, 5), "ship": (0.7, 5)}))
    candidate = contender(evaluation("m2", {"gold": (0.7, 5), "trade": (0.9, 5), "ship": (0.6, 5)}))
    approved, reasons = decide(POLICY, candidate, champion)
    assert not approved
    assert "label gold: F1 0.700 vs champion m1 0.900, drop 0.200 > allowed 0.020" in reasons
    assert "label ship: F1 0.600 vs champion m1 0.700, drop 0.100 > allowed 0.020" in reasons
    assert not any("trade" in reason for reason in reasons)


def test_drops_within_the_margin_pass_and_the_largest_is_reported() -> None:
    champion = contender(evaluation("m1", {"gold": (0.9, 5), "trade": (0.8, 5)}))
    candidate = contender(evaluation("m2", {"gold": (0.88, 5), "trade": (0.95, 5)}))
    approved, reasons = decide(POLICY, candidate, champion)
    assert approved
    assert reasons[1] == (
        "no per-label F1 drop beyond 0.020 vs champion m1 on 2 shared label(s) with eval "
        "support (largest drop 0.020 on gold)"
    )


def test_an_improvement_everywhere_says_no_label_dropped() -> None:
    champion = contender(evaluation("m1", {"gold": (0.6, 5)}))
    candidate = contender(evaluation("m2", {"gold": (0.9, 5)}))
    approved, reasons = decide(POLICY, candidate, champion)
    assert approved
    assert "no label dropped" in reasons[1]


def test_a_candidate_worse_overall_but_within_margins_and_above_floor_passes() -> None:
    # The policy compares labels, not macro-F1: a lower macro-F1 alone does not reject.
    champion = contender(evaluation("m1", {"gold": (0.9, 5), "trade": (0.9, 5)}))
    candidate = contender(evaluation("m2", {"gold": (0.89, 5), "trade": (0.89, 5)}))
    assert decide(POLICY, candidate, champion).approved


def test_labels_without_eval_support_are_not_compared() -> None:
    champion = contender(evaluation("m1", {"gold": (0.9, 5), "grain": (0.9, 0)}))
    candidate = contender(evaluation("m2", {"gold": (0.9, 5), "grain": (0.0, 0)}))
    approved, reasons = decide(POLICY, candidate, champion)
    assert approved
    assert "not compared (no eval support): grain" in reasons
    assert "on 1 shared label(s)" in reasons[1]


def test_labels_added_by_the_candidate_are_listed_not_compared() -> None:
    # The champion predates the taxonomy change: it scores 0 on the new label (it cannot
    # predict it) but the candidate must not be compared with it there.
    champion = contender(evaluation("m1", {"gold": (0.9, 5), "copper": (0.0, 5)}), "gold", "trade")
    candidate = contender(
        evaluation("m2", {"gold": (0.9, 5), "copper": (0.6, 5)}), "gold", "trade", "copper"
    )
    approved, reasons = decide(POLICY, candidate, champion)
    assert approved
    assert "labels new in the candidate: copper" in reasons


def test_a_new_label_is_not_compared_even_if_the_champion_scored_on_it() -> None:
    # Evaluations list every label seen in the data; only the heads' labels count as known.
    champion = contender(evaluation("m1", {"gold": (0.9, 5), "copper": (0.9, 5)}), "gold")
    candidate = contender(
        evaluation("m2", {"gold": (0.9, 5), "copper": (0.1, 5)}), "gold", "copper"
    )
    assert decide(POLICY, candidate, champion).approved


def test_labels_retired_by_the_candidate_are_listed_not_compared() -> None:
    # A retired label's examples leave the dataset, so the eval split no longer has it.
    champion = contender(evaluation("m1", {"gold": (0.9, 5)}), "gold", "ship")
    candidate = contender(evaluation("m2", {"gold": (0.9, 5)}), "gold")
    approved, reasons = decide(POLICY, candidate, champion)
    assert approved
    assert "labels of the champion the candidate drops: ship" in reasons


def test_no_shared_label_with_support_says_there_was_nothing_to_compare() -> None:
    champion = contender(evaluation("m1", {"gold": (0.9, 5)}), "gold")
    candidate = contender(evaluation("m2", {"trade": (0.9, 5)}), "trade")
    approved, reasons = decide(POLICY, candidate, champion)
    assert approved
    assert "no label shared with champion m1 has eval support: nothing to compare" in reasons


def test_a_wrong_must_pass_case_rejects_with_the_case_in_the_reason() -> None:
    cases = (
        case("gold-1", "gold", "gold"),
        case("gold-2", "gold", "gold"),
        case("gold-3", "gold", "trade"),
        case("trade-1", "trade", "trade"),
        case("trade-2", "trade", "trade"),
    )
    candidate = contender(evaluation("m1", {"gold": (0.9, 5)}, cases=cases))
    approved, reasons = decide(POLICY, candidate, None)
    assert not approved
    assert reasons[-1] == (
        "must-pass 4/5: case gold-3 (rule MiFID-II/Art-24) expected gold, got trade"
    )


def test_every_failed_case_gets_its_own_line() -> None:
    cases = (case("a", "gold", "trade"), case("b", "trade", "gold"), case("c", "gold", "gold"))
    candidate = contender(evaluation("m1", {"gold": (0.9, 5)}, cases=cases))
    _, reasons = decide(POLICY, candidate, None)
    assert [r for r in reasons if r.startswith("must-pass")] == [
        "must-pass 1/3: case a (rule MiFID-II/Art-24) expected gold, got trade",
        "must-pass 1/3: case b (rule MiFID-II/Art-24) expected trade, got gold",
    ]


def test_all_cases_right_is_a_passed_line() -> None:
    cases = (case("a", "gold", "gold"), case("b", "trade", "trade"))
    candidate = contender(evaluation("m1", {"gold": (0.9, 5)}, cases=cases))
    approved, reasons = decide(POLICY, candidate, None)
    assert approved
    assert reasons[-1] == "must-pass 2/2 right"


def test_wrong_cases_pass_when_the_policy_does_not_require_them() -> None:
    lenient = POLICY.model_copy(update={"require_must_pass": False})
    cases = (case("a", "gold", "trade"), case("b", "trade", "trade"))
    candidate = contender(evaluation("m1", {"gold": (0.9, 5)}, cases=cases))
    approved, reasons = decide(lenient, candidate, None)
    assert approved
    assert reasons[-1] == "must-pass 1/2 right (the policy does not require all)"


@pytest.mark.parametrize(
    ("champion_f1", "candidate_f1", "approved"),
    [(0.9, 0.88, True), (0.9, 0.8799, False), (0.5, 0.48, True), (1.0, 0.97, False)],
)
def test_the_margin_is_inclusive(champion_f1: float, candidate_f1: float, approved: bool) -> None:
    champion = contender(evaluation("m1", {"gold": (champion_f1, 5)}, macro_f1=0.9))
    candidate = contender(evaluation("m2", {"gold": (candidate_f1, 5)}, macro_f1=0.9))
    assert decide(POLICY, candidate, champion).approved is approved


def test_every_failing_check_is_reported_together() -> None:
    champion = contender(evaluation("m1", {"gold": (0.9, 5), "trade": (0.9, 5)}))
    candidate = contender(
        evaluation("m2", {"gold": (0.2, 5), "trade": (0.3, 5)}, cases=(case("a", "gold", "trade"),))
    )
    approved, reasons = decide(POLICY, candidate, champion)
    assert not approved
    assert reasons == (
        "macro-F1 0.250 < floor 0.500",
        "label gold: F1 0.200 vs champion m1 0.900, drop 0.700 > allowed 0.020",
        "label trade: F1 0.300 vs champion m1 0.900, drop 0.600 > allowed 0.020",
        "must-pass 0/1: case a (rule MiFID-II/Art-24) expected gold, got trade",
    )
