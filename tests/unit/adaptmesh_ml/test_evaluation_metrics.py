from __future__ import annotations

import pytest

from adaptmesh_ml import classification_metrics


def test_metrics_match_hand_computed_values() -> None:
    true = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", "c", "c"]
    per_label, macro_f1, accuracy, confusion = classification_metrics(
        true, predicted, ["a", "b", "c"]
    )
    # a: 2 right of 3 true, 2 predicted; b: 1 of 2, 2 predicted; c: 1 of 1, 2 predicted.
    assert per_label["a"].precision == 1.0
    assert per_label["a"].recall == pytest.approx(2 / 3)
    assert per_label["a"].f1 == pytest.approx(0.8)
    assert (per_label["b"].precision, per_label["b"].recall, per_label["b"].f1) == (0.5, 0.5, 0.5)
    assert per_label["c"].precision == 0.5
    assert per_label["c"].recall == 1.0
    assert per_label["c"].f1 == pytest.approx(2 / 3)
    assert [per_label[label].support for label in "abc"] == [3, 2, 1]
    assert macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert accuracy == pytest.approx(4 / 6)
    assert confusion == {
        "a": {"a": 2, "b": 1, "c": 0},
        "b": {"a": 0, "b": 1, "c": 1},
        "c": {"a": 0, "b": 0, "c": 1},
    }


def test_labels_without_support_are_reported_but_left_out_of_macro_f1() -> None:
    per_label, macro_f1, _, _ = classification_metrics(["a", "a"], ["a", "b"], ["a", "b", "c"])
    for label in ("b", "c"):
        assert per_label[label].model_dump() == {
            "precision": 0.0,
            "recall": 0.0,
            "f1": 0.0,
            "support": 0,
        }
    # Only `a` has support: P = 1, R = 1/2.
    assert macro_f1 == pytest.approx(2 / 3)


def test_a_true_label_outside_the_label_set_counts_as_a_miss() -> None:
    per_label, macro_f1, accuracy, confusion = classification_metrics(
        ["a", "new"], ["a", "a"], ["a"]
    )
    assert per_label["new"].support == 1
    assert per_label["new"].recall == 0.0
    assert macro_f1 == pytest.approx((2 / 3 + 0.0) / 2)
    assert accuracy == 0.5
    assert confusion["new"] == {"a": 1, "new": 0}


def test_empty_inputs_score_zero() -> None:
    per_label, macro_f1, accuracy, confusion = classification_metrics([], [], ["a", "b"])
    assert macro_f1 == 0.0
    assert accuracy == 0.0
    assert per_label["a"].support == 0
    assert confusion == {"a": {"a": 0, "b": 0}, "b": {"a": 0, "b": 0}}


def test_sequences_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="2 true labels but 1 predictions"):
        classification_metrics(["a", "b"], ["a"], ["a", "b"])
