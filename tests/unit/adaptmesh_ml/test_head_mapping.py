"""Mapping a champion's head over taxonomy changes: the label replay and the rows it builds."""

from __future__ import annotations

import math

import pytest
import torch

from adaptmesh_ml import HeadMapping, map_head, map_labels
from adaptmesh_schemas.documents import TaxonomyStep
from adaptmesh_schemas.events import (
    LabelAdded,
    LabelRenamed,
    LabelRetired,
    LabelsMerged,
    TaxonomyOperation,
)

PARENT = ("grain", "crude", "trade")


def recipe_step(step_id: str, *labels: str) -> TaxonomyStep:
    return TaxonomyStep(step_id=step_id, kind="recipe", taxonomy_version=step_id, labels=labels)


def taxonomy_step(
    step_id: str, labels: tuple[str, ...], *operations: TaxonomyOperation
) -> TaxonomyStep:
    return TaxonomyStep(
        step_id=step_id,
        kind="taxonomy",
        taxonomy_version=step_id,
        labels=labels,
        operations=operations,
    )


START = recipe_step("r1", *PARENT)


def after_start(labels: tuple[str, ...], *operations: TaxonomyOperation) -> HeadMapping:
    """The mapping from a champion trained at the recipe over one taxonomy change."""
    history = (START, taxonomy_step("t2", labels, *operations))
    return map_labels(PARENT, "r1", history, labels)


# -- map_labels --------------------------------------------------------------------------------


def test_without_changes_every_label_keeps_its_row() -> None:
    assert map_labels(PARENT, "r1", (START,), PARENT) == {
        "grain": ("grain",),
        "crude": ("crude",),
        "trade": ("trade",),
    }


def test_a_rename_keeps_the_row_under_the_new_name() -> None:
    labels = ("grain", "oil", "trade")
    mapping = after_start(labels, LabelRenamed(op="rename", from_label="crude", to_label="oil"))
    assert mapping == {"grain": ("grain",), "oil": ("crude",), "trade": ("trade",)}
    assert list(mapping) == list(labels)


def test_a_merge_into_an_existing_label_joins_its_own_row_and_the_sources() -> None:
    mapping = after_start(
        ("grain", "trade"), LabelsMerged(op="merge", sources=("crude",), into="trade")
    )
    assert mapping == {"grain": ("grain",), "trade": ("trade", "crude")}


def test_a_merge_into_a_new_label_builds_it_from_the_sources_in_order() -> None:
    labels = ("grain", "commodities")
    mapping = after_start(
        labels, LabelsMerged(op="merge", sources=("trade", "crude"), into="commodities")
    )
    assert mapping == {"grain": ("grain",), "commodities": ("trade", "crude")}


def test_a_merge_may_name_its_surviving_label_among_the_sources() -> None:
    mapping = after_start(
        ("grain", "crude"), LabelsMerged(op="merge", sources=("trade", "crude"), into="crude")
    )
    assert mapping == {"grain": ("grain",), "crude": ("crude", "trade")}


def test_a_retired_label_has_no_row() -> None:
    mapping = after_start(("grain", "crude"), LabelRetired(op="retire", label="trade"))
    assert mapping == {"grain": ("grain",), "crude": ("crude",)}


def test_an_added_label_gets_a_new_row() -> None:
    mapping = after_start((*PARENT, "fx"), LabelAdded(op="add", label="fx"))
    assert mapping == {"grain": ("grain",), "crude": ("crude",), "trade": ("trade",), "fx": ()}


def test_a_chain_of_steps_after_the_parents_is_replayed_in_order() -> None:
    history = (
        recipe_step("r0", "grain", "crude"),
        taxonomy_step("t1", PARENT, LabelAdded(op="add", label="trade")),  # the champion's step
        taxonomy_step(
            "t2",
            ("grain", "oil", "trade"),
            LabelRenamed(op="rename", from_label="crude", to_label="oil"),
        ),
        taxonomy_step(
            "t3",
            ("grain", "energy", "fx"),
            LabelsMerged(op="merge", sources=("oil", "trade"), into="energy"),
            LabelAdded(op="add", label="fx"),
        ),
        taxonomy_step("t4", ("energy", "fx"), LabelRetired(op="retire", label="grain")),
    )
    assert map_labels(PARENT, "t1", history, ("energy", "fx")) == {
        "energy": ("crude", "trade"),
        "fx": (),
    }


def test_steps_up_to_the_parents_are_not_replayed() -> None:
    history = (
        START,
        taxonomy_step("t2", ("grain", "trade"), LabelRetired(op="retire", label="crude")),
        taxonomy_step("t3", ("grain", "trade", "crude"), LabelAdded(op="add", label="crude")),
    )
    # The champion was trained after "crude" came back as a new class: its row is the new one.
    assert map_labels(PARENT, "t3", history, PARENT) == {
        "grain": ("grain",),
        "crude": ("crude",),
        "trade": ("trade",),
    }
    # A champion from before the retire: its "crude" row is not the class "crude" is now.
    assert map_labels(PARENT, "r1", history, PARENT)["crude"] == ()


def test_a_recipe_step_resets_to_its_labels_keeping_same_named_rows() -> None:
    history = (START, recipe_step("r2", "trade", "fx", "grain"))
    assert map_labels(PARENT, "r1", history, ("trade", "fx", "grain")) == {
        "trade": ("trade",),
        "fx": (),
        "grain": ("grain",),
    }


def test_a_recipe_step_keeps_what_earlier_steps_built_and_drops_the_rest() -> None:
    history = (
        START,
        taxonomy_step(
            "t2",
            ("grain", "oil", "trade"),
            LabelRenamed(op="rename", from_label="crude", to_label="oil"),
        ),
        recipe_step("r2", "oil", "grain", "fx"),
    )
    assert map_labels(PARENT, "r1", history, ("oil", "grain", "fx")) == {
        "oil": ("crude",),
        "grain": ("grain",),
        "fx": (),
    }


def test_without_a_parent_step_the_whole_history_is_replayed() -> None:
    # The champion's dataset predates the history: everything recorded came after it.
    history = (
        taxonomy_step(
            "t5",
            ("grain", "oil", "trade"),
            LabelRenamed(op="rename", from_label="crude", to_label="oil"),
        ),
    )
    assert map_labels(PARENT, None, history, ("grain", "oil", "trade")) == {
        "grain": ("grain",),
        "oil": ("crude",),
        "trade": ("trade",),
    }


def test_an_unknown_parent_step_falls_back_to_matching_names() -> None:
    history = (
        START,
        taxonomy_step(
            "t2",
            ("grain", "oil", "trade"),
            LabelRenamed(op="rename", from_label="crude", to_label="oil"),
        ),
    )
    # Nothing is replayed: "oil" cannot be traced to "crude", and "crude" is simply dropped.
    assert map_labels(PARENT, "elsewhere", history, ("grain", "oil", "trade")) == {
        "grain": ("grain",),
        "oil": (),
        "trade": ("trade",),
    }


def test_the_keys_follow_the_labels_and_a_label_not_replayed_is_new() -> None:
    mapping = map_labels(PARENT, "r1", (START,), ("trade", "surprise", "grain", "crude"))
    assert list(mapping.items()) == [
        ("trade", ("trade",)),
        ("surprise", ()),
        ("grain", ("grain",)),
        ("crude", ("crude",)),
    ]


def test_a_learned_class_lost_without_a_retire_is_refused() -> None:
    with pytest.raises(ValueError, match=r"does not lead to the labels.*'crude' \(from crude\)"):
        map_labels(PARENT, "r1", (START,), ("grain", "trade"))
    history = (
        START,
        taxonomy_step(
            "t2",
            ("grain", "oil", "trade"),
            LabelRenamed(op="rename", from_label="crude", to_label="oil"),
        ),
    )
    with pytest.raises(ValueError, match=r"'oil' \(from crude\)"):
        map_labels(PARENT, "r1", history, ("grain", "crude", "trade"))


def test_operations_on_labels_the_parent_lacks_contribute_nothing() -> None:
    # The parent never had "fx": its rename, merge and retire have no rows to move.
    labels = ("grain", "crude", "forex", "markets")
    mapping = after_start(
        labels,
        LabelRenamed(op="rename", from_label="fx", to_label="forex"),
        LabelsMerged(op="merge", sources=("trade", "bonds"), into="markets"),
        LabelRetired(op="retire", label="equities"),
    )
    assert mapping == {
        "grain": ("grain",),
        "crude": ("crude",),
        "forex": (),
        "markets": ("trade",),
    }


def test_repeated_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="labels repeat: 'grain'"):
        map_labels(PARENT, "r1", (START,), ("grain", "grain", "crude"))
    with pytest.raises(ValueError, match="parent labels repeat"):
        map_labels(("a", "a"), None, (), ("a",))


# -- map_head ----------------------------------------------------------------------------------

PARENT_WEIGHT = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
PARENT_BIAS = torch.tensor([0.1, 0.5, -0.3])


def fresh(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.arange(rows * 2, dtype=torch.float32).reshape(rows, 2) / 100
    return weight, torch.full((rows,), 9.0)


def test_rows_are_copied_merged_and_freshly_made() -> None:
    mapping: HeadMapping = {
        "oil": ("crude",),
        "mixed": ("crude", "trade"),
        "fx": (),
        "g": ("grain",),
    }
    fresh_weight, fresh_bias = fresh(4)
    weight, bias = map_head(PARENT_WEIGHT, PARENT_BIAS, PARENT, mapping, fresh_weight, fresh_bias)
    assert bias is not None
    assert weight.shape == (4, 2)
    assert torch.equal(weight[0], PARENT_WEIGHT[1])
    assert torch.equal(weight[1], torch.tensor([4.0, 5.0]))
    assert torch.equal(weight[2], fresh_weight[2])
    assert torch.equal(weight[3], PARENT_WEIGHT[0])
    assert bias[0].item() == pytest.approx(0.5)
    assert bias[1].item() == pytest.approx(math.log(math.exp(0.5) + math.exp(-0.3)))
    # the mean bias of the copied rows (crude, grain): neither favoured nor suppressed
    assert bias[2].item() == pytest.approx((0.5 + 0.1) / 2)
    assert bias[3].item() == pytest.approx(0.1)


def test_a_merge_of_rows_with_equal_weights_gets_exactly_their_probability_mass() -> None:
    parent_weight = torch.tensor([[1.0, -1.0], [0.5, 2.0], [0.5, 2.0]])
    parent_bias = torch.tensor([0.2, 1.0, -1.5])
    mapping: HeadMapping = {"grain": ("grain",), "energy": ("crude", "trade")}
    weight, bias = map_head(parent_weight, parent_bias, PARENT, mapping, *fresh(2))
    assert bias is not None
    for hidden in (torch.tensor([0.3, -0.7]), torch.tensor([2.0, 1.0])):
        before = torch.softmax(parent_weight @ hidden + parent_bias, dim=0)
        after = torch.softmax(weight @ hidden + bias, dim=0)
        assert after[0].item() == pytest.approx(before[0].item())
        assert after[1].item() == pytest.approx((before[1] + before[2]).item())


def test_a_merge_of_equal_biases_adds_log_k_to_them() -> None:
    parent_bias = torch.tensor([0.4, 0.4, 0.4])
    mapping: HeadMapping = {"all": PARENT, "new": ()}
    _, bias = map_head(PARENT_WEIGHT, parent_bias, PARENT, mapping, *fresh(2))
    assert bias is not None
    assert bias[0].item() == pytest.approx(0.4 + math.log(3))
    # no row copied: a new row takes the mean bias of all the parent's rows
    assert bias[1].item() == pytest.approx(0.4)


def test_a_head_without_bias_maps_its_weights_only() -> None:
    mapping: HeadMapping = {"trade": ("trade",), "rest": ("grain", "crude")}
    weight, bias = map_head(PARENT_WEIGHT, None, PARENT, mapping, fresh(2)[0], None)
    assert bias is None
    assert torch.equal(weight, torch.tensor([[5.0, 6.0], [2.0, 3.0]]))


def test_the_result_is_new_tensors_in_the_parents_dtype_without_autograd_history() -> None:
    parent_weight = torch.nn.Parameter(PARENT_WEIGHT.double())
    parent_bias = torch.nn.Parameter(PARENT_BIAS.double())
    fresh_weight, fresh_bias = fresh(2)
    mapping: HeadMapping = {"grain": ("grain",), "fx": ()}
    weight, bias = map_head(parent_weight, parent_bias, PARENT, mapping, fresh_weight, fresh_bias)
    assert bias is not None
    assert weight.dtype == bias.dtype == torch.float64
    assert not weight.requires_grad
    assert not bias.requires_grad
    weight[1, 0] = 42.0
    assert fresh_weight[1, 0].item() != 42.0


def test_map_labels_feeds_map_head() -> None:
    labels = ("grain", "energy", "fx")
    mapping = after_start(
        labels,
        LabelsMerged(op="merge", sources=("crude", "trade"), into="energy"),
        LabelAdded(op="add", label="fx"),
    )
    weight, _ = map_head(PARENT_WEIGHT, PARENT_BIAS, PARENT, mapping, *fresh(3))
    assert torch.equal(weight[:2], torch.tensor([[1.0, 2.0], [4.0, 5.0]]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"parent_weight": PARENT_WEIGHT[:2]}, r"parent weight must be .*\(3 x H\), got \(2, 2\)"),
        ({"parent_weight": torch.zeros(3)}, r"parent weight must be"),
        ({"fresh_weight": torch.zeros(2, 3)}, r"fresh weight must be .*\(2 x 2\), got \(2, 3\)"),
        ({"parent_bias": torch.zeros(2)}, r"parent bias must have shape \(3,\), got \(2,\)"),
        ({"fresh_bias": torch.zeros(1, 2)}, r"fresh bias must have shape \(2,\)"),
        ({"fresh_bias": None}, "both have a bias or both have none"),
        ({"mapping": {"a": ("grain",), "b": ("gold",)}}, r"'b' is mapped from 'gold', not among"),
        ({"mapping": {"a": ("grain",), "b": ("crude", "crude")}}, r"sources of 'b' repeat"),
    ],
)
def test_mismatched_inputs_are_refused_with_a_clear_reason(
    change: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {
        "parent_weight": PARENT_WEIGHT,
        "parent_bias": PARENT_BIAS,
        "parent_labels": PARENT,
        "mapping": {"a": ("grain",), "b": ()},
        "fresh_weight": fresh(2)[0],
        "fresh_bias": fresh(2)[1],
    }
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        map_head(**arguments)  # type: ignore[arg-type]
