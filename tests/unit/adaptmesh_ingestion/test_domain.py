"""State transitions of a domain: every change kind, every taxonomy operation, every rejection."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from adaptmesh_ingestion.domain import (
    Change,
    ChangeRejected,
    DomainState,
    apply_change,
    change_kind,
    default_example_id,
)
from adaptmesh_schemas.events import LabelAdded, LabelRenamed, LabelRetired, LabelsMerged
from adaptmesh_schemas.values import BaseModelSpec
from tests.unit.adaptmesh_ingestion.factories import (
    DOMAIN,
    MINILM,
    base_model,
    batch,
    case,
    example,
    feedback,
    recipe,
    regulation,
    taxonomy,
)

_ids = itertools.count(1)


def apply(state: DomainState | None, *changes: Change) -> DomainState:
    for change in changes:
        state = apply_change(state, change, f"e{next(_ids)}")
    assert state is not None
    return state


def labelled(state: DomainState) -> list[tuple[str, str]]:
    """(text, label) of every example, oldest first."""
    return [(e.text, e.label) for e in state.examples]


def cases(state: DomainState) -> list[tuple[str, str, str, str]]:
    return [(c.rule_id, c.rule_version, c.case_id, c.expected_label) for c in state.must_pass]


@pytest.fixture
def started() -> DomainState:
    """A domain with a recipe, a batch and one must-pass case per label."""
    return apply(
        None,
        recipe(),
        batch(("wheat exports fell", "grain"), ("oil output rose", "crude"), ("tariffs", "trade")),
        regulation(
            must_pass=(
                case("c-grain", "corn harvest", "grain"),
                case("c-crude", "brent rallied", "crude"),
                case("c-trade", "trade deficit", "trade"),
            )
        ),
    )


# -- recipe ------------------------------------------------------------------------------------


def test_a_recipe_starts_a_domain() -> None:
    state = apply_change(None, recipe(), "e1")
    assert state.domain == DOMAIN
    assert state.labels == ("grain", "crude", "trade")
    assert state.taxonomy_version == "r1"
    assert state.base_model == MINILM
    assert state.recipe == recipe()
    assert state.examples == ()
    assert state.must_pass == ()


def test_a_recipe_with_repeated_labels_is_rejected() -> None:
    with pytest.raises(ChangeRejected, match="labels repeat: 'grain'"):
        apply_change(None, recipe(("grain", "crude", "grain")), "e1")


@pytest.mark.parametrize(
    "change",
    [
        taxonomy(LabelAdded(op="add", label="ship")),
        regulation(),
        base_model(),
        batch(("wheat", "grain")),
        feedback("wheat", "grain"),
    ],
    ids=lambda change: change.event_name,
)
def test_a_change_for_a_domain_without_recipe_is_rejected(change: Change) -> None:
    with pytest.raises(ChangeRejected) as rejected:
        apply_change(None, change, "e1")
    reason = str(rejected.value)
    assert reason.startswith(f"{change.event_name} ")
    assert "no recipe yet" in reason
    assert f"change.recipe for '{DOMAIN}'" in reason


def test_a_new_recipe_replaces_recipe_base_model_and_taxonomy(started: DomainState) -> None:
    other = BaseModelSpec(model_id="/models/bigger")
    state = apply(
        started, recipe(("trade", "crude", "grain", "ship"), version="r2", base_model=other)
    )
    assert state.recipe.recipe_version == "r2"
    assert state.base_model == other
    assert state.labels == ("trade", "crude", "grain", "ship")
    assert state.taxonomy_version == "r2"
    assert state.examples == started.examples
    assert state.must_pass == started.must_pass


def test_a_new_recipe_that_would_orphan_examples_or_cases_is_rejected(
    started: DomainState,
) -> None:
    with pytest.raises(ChangeRejected) as rejected:
        apply(started, recipe(("grain", "crude"), version="r2"))
    reason = str(rejected.value)
    assert "recipe version 'r2'" in reason
    assert "'trade' (1 examples, 1 must-pass cases)" in reason
    assert "retire or merge" in reason

    only_a_case = apply(apply(None, recipe()), regulation(must_pass=(case("c", "x", "trade"),)))
    with pytest.raises(ChangeRejected, match=r"'trade' \(0 examples, 1 must-pass cases\)"):
        apply(only_a_case, recipe(("grain", "crude"), version="r2"))


def test_a_recipe_after_retiring_the_label_is_accepted(started: DomainState) -> None:
    retired = apply(started, taxonomy(LabelRetired(op="retire", label="trade")))
    state = apply(retired, recipe(("grain", "crude"), version="r2"))
    assert state.labels == ("grain", "crude")


# -- taxonomy ----------------------------------------------------------------------------------


def test_add_appends_and_takes_the_new_taxonomy_version(started: DomainState) -> None:
    state = apply(
        started, taxonomy(LabelAdded(op="add", label="ship"), LabelAdded(op="add", label="gold"))
    )
    assert state.labels == ("grain", "crude", "trade", "ship", "gold")
    assert state.taxonomy_version == "t2"
    assert state.examples == started.examples


def test_adding_an_existing_label_is_rejected(started: DomainState) -> None:
    with pytest.raises(ChangeRejected, match=r"operation 1 \(add\): 'crude' already exists"):
        apply(started, taxonomy(LabelAdded(op="add", label="crude")))


def test_rename_keeps_the_position_and_relabels_examples_and_cases(
    started: DomainState,
) -> None:
    state = apply(started, taxonomy(LabelRenamed(op="rename", from_label="crude", to_label="oil")))
    assert state.labels == ("grain", "oil", "trade")
    assert labelled(state) == [
        ("wheat exports fell", "grain"),
        ("oil output rose", "oil"),
        ("tariffs", "trade"),
    ]
    assert ("MiFID-II/Art-24", "1", "c-crude", "oil") in cases(state)
    assert [e.example_id for e in state.examples] == [e.example_id for e in started.examples]


def test_renaming_an_unknown_label_is_rejected(started: DomainState) -> None:
    with pytest.raises(ChangeRejected, match=r"'gold' not in the taxonomy \[grain, crude, trade\]"):
        apply(started, taxonomy(LabelRenamed(op="rename", from_label="gold", to_label="metal")))


def test_renaming_onto_an_existing_label_is_rejected_with_a_hint_to_merge(
    started: DomainState,
) -> None:
    with pytest.raises(ChangeRejected) as rejected:
        apply(started, taxonomy(LabelRenamed(op="rename", from_label="crude", to_label="trade")))
    assert "cannot rename 'crude' to 'trade', which already exists" in str(rejected.value)
    assert "merge 'crude' into 'trade'" in str(rejected.value)


def test_merge_into_an_existing_label_keeps_its_position_and_drops_the_sources(
    started: DomainState,
) -> None:
    wide = apply(
        started, taxonomy(LabelAdded(op="add", label="ship"), LabelAdded(op="add", label="gold"))
    )
    state = apply(wide, taxonomy(LabelsMerged(op="merge", sources=("grain", "ship"), into="trade")))
    assert state.labels == ("crude", "trade", "gold")
    assert labelled(state) == [
        ("wheat exports fell", "trade"),
        ("oil output rose", "crude"),
        ("tariffs", "trade"),
    ]
    assert ("MiFID-II/Art-24", "1", "c-grain", "trade") in cases(state)


def test_merge_into_a_new_label_appends_it(started: DomainState) -> None:
    state = apply(
        started, taxonomy(LabelsMerged(op="merge", sources=("grain", "crude"), into="commodity"))
    )
    assert state.labels == ("trade", "commodity")
    assert labelled(state) == [
        ("wheat exports fell", "commodity"),
        ("oil output rose", "commodity"),
        ("tariffs", "trade"),
    ]
    assert {c.expected_label for c in state.must_pass} == {"commodity", "trade"}


def test_merge_may_name_the_surviving_label_among_its_sources(started: DomainState) -> None:
    state = apply(
        started, taxonomy(LabelsMerged(op="merge", sources=("grain", "crude"), into="crude"))
    )
    assert state.labels == ("crude", "trade")
    assert labelled(state)[0] == ("wheat exports fell", "crude")


def test_merging_unknown_or_repeated_sources_is_rejected(started: DomainState) -> None:
    with pytest.raises(ChangeRejected, match=r"operation 1 \(merge\): 'gold' not in the taxonomy"):
        apply(started, taxonomy(LabelsMerged(op="merge", sources=("grain", "gold"), into="crude")))
    with pytest.raises(ChangeRejected, match="sources repeat: 'grain'"):
        apply(started, taxonomy(LabelsMerged(op="merge", sources=("grain", "grain"), into="crude")))


def test_retire_drops_the_label_its_examples_and_its_cases(started: DomainState) -> None:
    state = apply(started, taxonomy(LabelRetired(op="retire", label="crude")))
    assert state.labels == ("grain", "trade")
    assert labelled(state) == [("wheat exports fell", "grain"), ("tariffs", "trade")]
    assert [c.case_id for c in state.must_pass] == ["c-grain", "c-trade"]


def test_retiring_an_unknown_label_is_rejected(started: DomainState) -> None:
    with pytest.raises(ChangeRejected, match=r"operation 1 \(retire\): 'gold' not in"):
        apply(started, taxonomy(LabelRetired(op="retire", label="gold")))


def test_a_taxonomy_of_fewer_than_two_labels_is_rejected(started: DomainState) -> None:
    with pytest.raises(ChangeRejected) as rejected:
        apply(started, taxonomy(LabelsMerged(op="merge", sources=("grain", "trade"), into="crude")))
    assert "left with 1 label(s) [crude]" in str(rejected.value)
    with pytest.raises(ChangeRejected, match="left with 1 label"):
        apply(
            started,
            taxonomy(
                LabelRetired(op="retire", label="grain"), LabelRetired(op="retire", label="trade")
            ),
        )


def test_operations_apply_in_order(started: DomainState) -> None:
    state = apply(
        started,
        taxonomy(
            LabelAdded(op="add", label="ship"),
            LabelRenamed(op="rename", from_label="ship", to_label="shipping"),
            LabelRenamed(op="rename", from_label="crude", to_label="oil"),
            LabelRenamed(op="rename", from_label="oil", to_label="energy"),
            LabelsMerged(op="merge", sources=("energy", "grain"), into="commodity"),
            LabelRetired(op="retire", label="trade"),
            LabelAdded(op="add", label="trade"),
        ),
    )
    assert state.labels == ("shipping", "commodity", "trade")
    # `trade` was retired (its example left) and then added back empty.
    assert labelled(state) == [
        ("wheat exports fell", "commodity"),
        ("oil output rose", "commodity"),
    ]
    assert [(c.case_id, c.expected_label) for c in state.must_pass] == [
        ("c-crude", "commodity"),
        ("c-grain", "commodity"),
    ]


def test_a_later_invalid_operation_rejects_the_whole_change(started: DomainState) -> None:
    with pytest.raises(ChangeRejected, match=r"operation 2 \(rename\)") as rejected:
        apply(
            started,
            taxonomy(
                LabelAdded(op="add", label="ship"),
                LabelRenamed(op="rename", from_label="gold", to_label="x"),
                version="t9",
            ),
        )
    assert "to taxonomy version 't9'" in str(rejected.value)
    assert started.labels == ("grain", "crude", "trade")


# -- data batches ------------------------------------------------------------------------------


def test_a_batch_adds_examples_with_ids_defaulting_to_the_text_digest() -> None:
    state = apply(
        None, recipe(), batch(("wheat exports fell", "grain"), example("oil", "crude", "ex-7"))
    )
    assert [(e.example_id, e.label) for e in state.examples] == [
        (hashlib.sha256(b"wheat exports fell").hexdigest(), "grain"),
        ("ex-7", "crude"),
    ]
    assert default_example_id("wheat exports fell") == state.examples[0].example_id


def test_the_examples_remember_the_event_that_brought_them() -> None:
    state = apply_change(apply(None, recipe()), batch(("wheat", "grain")), "event-42")
    assert state.examples[0].source_event_id == "event-42"


def test_a_later_example_with_the_same_id_replaces_the_earlier_and_becomes_newest() -> None:
    state = apply(
        None,
        recipe(),
        batch(example("old text", "grain", "x"), ("oil", "crude"), ("trade war", "trade")),
        batch(example("new text", "trade", "x"), ("trade war", "crude"), batch_id="b2"),
    )
    assert labelled(state) == [("oil", "crude"), ("new text", "trade"), ("trade war", "crude")]


def test_within_one_batch_the_last_example_of_an_id_wins() -> None:
    state = apply(None, recipe(), batch(("wheat", "grain"), ("wheat", "trade")))
    assert labelled(state) == [("wheat", "trade")]


def test_a_batch_with_an_unknown_label_is_rejected_whole_with_a_clear_reason(
    started: DomainState,
) -> None:
    with pytest.raises(ChangeRejected) as rejected:
        apply(
            started,
            batch(("gold price jumped", "gold"), ("corn", "grain"), batch_id="b-metals"),
        )
    reason = str(rejected.value)
    gold_id = default_example_id("gold price jumped")
    assert reason.startswith("change.data_batch batch 'b-metals' of domain 'fin-news' rejected")
    assert "1 of 2 examples have labels not in taxonomy version 'r1' [grain, crude, trade]" in (
        reason
    )
    assert "unknown 'gold'" in reason
    assert f"example {gold_id[:12]}… 'gold price jumped' -> 'gold'" in reason
    assert "Nothing from this change was ingested" in reason


def test_the_rejection_truncates_long_texts_and_long_lists(started: DomainState) -> None:
    long_text = "A " + "very " * 30 + "long headline"
    examples = [example(f"{long_text} {n}", "metals", f"id-{n}") for n in range(13)]
    with pytest.raises(ChangeRejected) as rejected:
        apply(started, batch(*examples, ("corn", "grain")))
    reason = str(rejected.value)
    assert "13 of 14 examples" in reason
    assert "example id-0 'A very very very very very very very ve…' -> 'metals'" in reason
    assert "id-9 " in reason
    assert "id-10 " not in reason
    assert "and 3 more" in reason
    assert "long headline" not in reason


# -- regulations -------------------------------------------------------------------------------


def test_a_regulation_adds_documents_and_must_pass_cases(started: DomainState) -> None:
    state = apply(
        started,
        regulation(
            "SEC/10b-5",
            documents=(example("insider sold shares", "trade"),),
            must_pass=(case("c1", "insider bought", "trade"),),
        ),
    )
    assert labelled(state)[-1] == ("insider sold shares", "trade")
    assert cases(state) == [
        *cases(started),
        ("SEC/10b-5", "1", "c1", "trade"),
    ]


def test_a_new_rule_version_replaces_that_rules_cases_only(started: DomainState) -> None:
    other_rule = apply(started, regulation("SEC/10b-5", must_pass=(case("s1", "x", "grain"),)))
    state = apply(
        other_rule,
        regulation("MiFID-II/Art-24", "2", must_pass=(case("c-new", "swap desk", "crude"),)),
    )
    assert cases(state) == [
        ("MiFID-II/Art-24", "2", "c-new", "crude"),
        ("SEC/10b-5", "1", "s1", "grain"),
    ]
    # Documents already ingested stay: they are still labelled data.
    assert state.examples == other_rule.examples


def test_a_regulation_with_an_unknown_label_is_rejected_naming_documents_and_cases(
    started: DomainState,
) -> None:
    with pytest.raises(ChangeRejected) as rejected:
        apply(
            started,
            regulation(
                documents=(example("bond yields", "rates", "doc-1"), example("corn", "grain")),
                must_pass=(case("c9", "repo rate", "rates"), case("c10", "oil", "crude")),
            ),
        )
    reason = str(rejected.value)
    assert "rule 'MiFID-II/Art-24' version '1'" in reason
    assert "2 of 4 documents and must-pass cases" in reason
    assert "example doc-1 'bond yields' -> 'rates'" in reason
    assert "must-pass case MiFID-II/Art-24/c9 'repo rate' -> 'rates'" in reason


def test_repeated_case_ids_in_one_regulation_are_rejected(started: DomainState) -> None:
    with pytest.raises(ChangeRejected, match="must-pass case ids repeat: 'c1'"):
        apply(started, regulation(must_pass=(case("c1", "a", "grain"), case("c1", "b", "crude"))))


# -- base model and feedback -------------------------------------------------------------------


def test_a_base_model_change_moves_the_base_model_only(started: DomainState) -> None:
    state = apply(started, base_model("/models/deberta"))
    assert state.base_model == BaseModelSpec(model_id="/models/deberta")
    assert state.recipe == started.recipe
    assert state.examples == started.examples
    assert state.labels == started.labels


def test_feedback_adds_an_example_or_corrects_the_label_of_the_same_text(
    started: DomainState,
) -> None:
    state = apply(started, feedback("oil output rose", "trade"), feedback("gold", "grain"))
    assert labelled(state) == [
        ("wheat exports fell", "grain"),
        ("tariffs", "trade"),
        ("oil output rose", "trade"),
        ("gold", "grain"),
    ]
    assert state.examples[-1].example_id == default_example_id("gold")


def test_feedback_with_an_unknown_label_is_rejected(started: DomainState) -> None:
    with pytest.raises(ChangeRejected) as rejected:
        apply(started, feedback("gold rallied", "metals", prediction_id="pred-9"))
    reason = str(rejected.value)
    assert "feedback.submitted for prediction 'pred-9'" in reason
    assert "1 of 1 examples" in reason
    assert "'gold rallied' -> 'metals'" in reason


# -- the per-label cap -------------------------------------------------------------------------


def test_the_cap_keeps_the_newest_examples_of_each_label() -> None:
    state = apply(
        None,
        recipe(max_examples_per_label=2),
        batch(("g1", "grain"), ("g2", "grain"), ("c1", "crude"), ("g3", "grain")),
    )
    assert labelled(state) == [("g2", "grain"), ("c1", "crude"), ("g3", "grain")]
    # A replaced example counts as new, so it survives the next cut.
    state = apply(state, batch(("g2", "grain"), ("g4", "grain"), batch_id="b2"))
    assert labelled(state) == [("c1", "crude"), ("g2", "grain"), ("g4", "grain")]


def test_a_recipe_lowering_the_cap_cuts_the_oldest() -> None:
    state = apply(
        None, recipe(), batch(("g1", "grain"), ("g2", "grain"), ("g3", "grain"), ("c1", "crude"))
    )
    state = apply(state, recipe(version="r2", max_examples_per_label=1))
    assert labelled(state) == [("g3", "grain"), ("c1", "crude")]


def test_a_merge_that_exceeds_the_cap_keeps_the_newest() -> None:
    state = apply(
        None,
        recipe(("grain", "crude", "trade"), max_examples_per_label=2),
        batch(("g1", "grain"), ("c1", "crude"), ("g2", "grain"), ("c2", "crude")),
        taxonomy(LabelsMerged(op="merge", sources=("grain", "crude"), into="commodity")),
    )
    assert labelled(state) == [("g2", "commodity"), ("c2", "commodity")]


# -- taxonomy history --------------------------------------------------------------------------


def history(state: DomainState) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(step_id, kind, taxonomy_version, labels) of every step, oldest first."""
    return [
        (step.step_id, step.kind, step.taxonomy_version, step.labels)
        for step in state.taxonomy_history
    ]


def test_a_recipe_starts_the_history_with_a_reset_step() -> None:
    state = apply_change(None, recipe(), "e-recipe")
    assert history(state) == [("e-recipe", "recipe", "r1", ("grain", "crude", "trade"))]
    assert state.taxonomy_history[0].operations == ()


def test_each_recipe_and_taxonomy_change_appends_a_step_with_its_event_id() -> None:
    merge = LabelsMerged(op="merge", sources=("crude", "trade"), into="commodities")
    state = apply_change(None, recipe(), "e1")
    state = apply_change(state, taxonomy(LabelAdded(op="add", label="fx"), version="t2"), "e2")
    state = apply_change(state, taxonomy(merge, version="t3"), "e3")
    state = apply_change(state, recipe(("grain", "fx", "commodities"), version="r2"), "e4")
    assert history(state) == [
        ("e1", "recipe", "r1", ("grain", "crude", "trade")),
        ("e2", "taxonomy", "t2", ("grain", "crude", "trade", "fx")),
        ("e3", "taxonomy", "t3", ("grain", "fx", "commodities")),
        ("e4", "recipe", "r2", ("grain", "fx", "commodities")),
    ]
    assert [step.operations for step in state.taxonomy_history] == [
        (),
        (LabelAdded(op="add", label="fx"),),
        (merge,),
        (),
    ]
    assert state.taxonomy_history[-1].labels == state.labels


def test_a_taxonomy_step_keeps_every_operation_in_order(started: DomainState) -> None:
    operations = (
        LabelRenamed(op="rename", from_label="trade", to_label="tariffs"),
        LabelAdded(op="add", label="fx"),
        LabelRetired(op="retire", label="grain"),
    )
    state = apply_change(started, taxonomy(*operations, version="t9"), "e-tax")
    step = state.taxonomy_history[-1]
    assert (step.step_id, step.kind, step.taxonomy_version) == ("e-tax", "taxonomy", "t9")
    assert step.operations == operations
    assert step.labels == ("crude", "tariffs", "fx") == state.labels


@pytest.mark.parametrize(
    "change",
    [
        regulation("R", documents=(example("doc", "grain"),), must_pass=(case("c", "x", "crude"),)),
        base_model(),
        batch(("more wheat", "grain")),
        feedback("oil output rose", "trade"),
    ],
    ids=["regulation", "base-model", "data", "feedback"],
)
def test_other_changes_leave_the_history_alone(started: DomainState, change: Change) -> None:
    assert apply_change(started, change, "e-other").taxonomy_history == started.taxonomy_history


@pytest.mark.parametrize(
    "change",
    [
        taxonomy(LabelAdded(op="add", label="fx"), LabelRetired(op="retire", label="nope")),
        taxonomy(
            LabelRetired(op="retire", label="crude"), LabelRetired(op="retire", label="trade")
        ),
        recipe(("grain", "crude")),
        recipe(("a", "a")),
    ],
    ids=["unknown-label", "too-few-labels", "orphans-data", "repeated-labels"],
)
def test_a_rejected_change_adds_no_step(started: DomainState, change: Change) -> None:
    before = started.taxonomy_history
    with pytest.raises(ChangeRejected):
        apply_change(started, change, "e-rejected")
    assert started.taxonomy_history == before
    after = apply_change(started, taxonomy(LabelAdded(op="add", label="fx")), "e-next")
    assert [step.step_id for step in after.taxonomy_history] == [
        *(step.step_id for step in before),
        "e-next",
    ]


# -- change kinds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        (recipe(), "recipe"),
        (taxonomy(LabelAdded(op="add", label="x")), "taxonomy"),
        (regulation(), "regulation"),
        (base_model(), "base-model"),
        (batch(("a", "grain")), "data"),
        (feedback("a", "grain"), "feedback"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_each_change_names_its_kind(change: Change, kind: str) -> None:
    assert change_kind(change) == kind


# -- where examples come from --------------------------------------------------------------


def test_every_example_carries_its_source_for_the_gates_slices(started: DomainState) -> None:
    state = apply(
        started,
        batch(("soybean crop", "grain"), batch_id="b-17"),
        regulation("RULE-9", documents=(example("opec quota", "crude"),)),
        feedback("port strike", "trade"),
    )
    sources = {e.text: (e.source, e.source_name) for e in state.examples}
    assert sources["wheat exports fell"] == ("data-batch", "b1")
    assert sources["soybean crop"] == ("data-batch", "b-17")
    assert sources["opec quota"] == ("regulation", "RULE-9")
    assert sources["port strike"] == ("feedback", None)
