"""The dataset document: deterministic split, canonical bytes, stable digests, round trip."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from adaptmesh_ingestion.domain import DomainState, apply_change
from adaptmesh_ingestion.snapshot import (
    canonical_json,
    counts_of,
    dataset_version_id,
    snapshot_of,
    split_of,
    state_of,
)
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.events import LabelAdded, LabelRenamed
from adaptmesh_schemas.values import LabelledExample
from tests.unit.adaptmesh_ingestion.factories import (
    batch,
    case,
    example,
    recipe,
    regulation,
    taxonomy,
)


def digest(state: DomainState, parent: str | None = "ds-parent", cause: str = "e9") -> str:
    snapshot = snapshot_of(state, parent_version=parent, cause_event_ids=(cause,))
    return hashlib.sha256(canonical_json(snapshot)).hexdigest()


def state_with(
    *examples: LabelledExample | tuple[str, str], eval_fraction: float = 0.2
) -> DomainState:
    return apply_change(
        apply_change(None, recipe(eval_fraction=eval_fraction), "e0"),
        batch(*examples),
        "e1",
    )


def test_the_split_follows_the_documented_formula() -> None:
    for example_id in ("a", "b", "ex-1", "0" * 64):
        position = int(hashlib.sha256(example_id.encode()).hexdigest()[:8], 16) / 2**32
        assert split_of(example_id, 0.3) == ("eval" if position < 0.3 else "train")


def test_the_split_holds_out_about_the_eval_fraction() -> None:
    splits = [split_of(f"example-{n}", 0.2) for n in range(4000)]
    assert 0.17 < splits.count("eval") / len(splits) < 0.23


def test_an_examples_split_does_not_move_when_other_data_arrives() -> None:
    first = state_with(*((f"text {n}", "grain") for n in range(50)))
    grown = apply_change(first, batch(*((f"more {n}", "crude") for n in range(50))), "e2")
    before = {
        e.example_id: e.split
        for e in snapshot_of(first, parent_version=None, cause_event_ids=()).examples
    }
    after = {
        e.example_id: e.split
        for e in snapshot_of(grown, parent_version="p", cause_event_ids=()).examples
    }
    assert before.items() <= after.items()
    assert {"train", "eval"} <= set(before.values())


def test_the_same_content_gives_the_same_digest_whatever_the_arrival_order() -> None:
    forwards = state_with(("wheat", "grain"), ("oil", "crude"), ("tariff", "trade"))
    backwards = state_with(("tariff", "trade"), ("oil", "crude"), ("wheat", "grain"))
    assert forwards.examples != backwards.examples
    assert digest(forwards) == digest(backwards)
    assert canonical_json(
        snapshot_of(forwards, parent_version="p", cause_event_ids=("e",))
    ) == canonical_json(snapshot_of(forwards, parent_version="p", cause_event_ids=("e",)))


def test_any_difference_in_content_changes_the_digest() -> None:
    base = state_with(("wheat", "grain"), ("oil", "crude"))
    variants = {
        "label": state_with(("wheat", "trade"), ("oil", "crude")),
        "text": state_with(("wheat!", "grain"), ("oil", "crude")),
        "example": state_with(("wheat", "grain"), ("oil", "crude"), ("x", "trade")),
        "labels": apply_change(base, taxonomy(LabelAdded(op="add", label="ship")), "e1"),
        "eval fraction": state_with(("wheat", "grain"), ("oil", "crude"), eval_fraction=0.5),
        "must-pass": apply_change(base, regulation(must_pass=(case("c", "x", "grain"),)), "e1"),
        "source event": replace(
            base, examples=tuple(replace(e, source_event_id="other") for e in base.examples)
        ),
    }
    digests = {name: digest(state) for name, state in variants.items()}
    digests["parent"] = digest(base, parent="ds-other")
    digests["no parent"] = digest(base, parent=None)
    digests["cause"] = digest(base, cause="e10")
    assert digest(base) not in digests.values()
    assert len(set(digests.values())) == len(digests)


def test_canonical_json_is_sorted_compact_and_reads_back_as_the_document() -> None:
    state = apply_change(
        state_with(("wheat", "grain"), ("oil", "crude"), ("é café", "trade")),
        regulation(must_pass=(case("z", "zz", "grain"), case("a", "aa", "crude"))),
        "e2",
    )
    snapshot = snapshot_of(state, parent_version="ds-1", cause_event_ids=("e2",))
    data = canonical_json(snapshot)
    assert b"\n" not in data
    assert b": " not in data
    assert "é café".encode() in data
    assert DatasetSnapshot.model_validate_json(data) == snapshot
    ids = [e.example_id for e in snapshot.examples]
    assert ids == sorted(ids)
    assert [c.case_id for c in snapshot.must_pass] == ["a", "z"]


def test_the_snapshot_carries_everything_the_version_needs() -> None:
    state = state_with(("wheat", "grain"), ("oil", "crude"))
    snapshot = snapshot_of(state, parent_version="ds-abc", cause_event_ids=("e1",))
    assert snapshot.domain == state.domain
    assert snapshot.parent_version == "ds-abc"
    assert snapshot.recipe == state.recipe
    assert snapshot.base_model == state.base_model
    assert snapshot.taxonomy_version == "r1"
    assert snapshot.labels == ("grain", "crude", "trade")
    assert snapshot.cause_event_ids == ("e1",)
    assert {(e.text, e.label, e.source_event_id) for e in snapshot.examples} == {
        ("wheat", "grain", "e1"),
        ("oil", "crude", "e1"),
    }


def test_counts_cover_splits_cases_and_every_label() -> None:
    state = apply_change(
        state_with(*((f"g{n}", "grain") for n in range(30)), ("oil", "crude")),
        regulation(must_pass=(case("c", "x", "grain"),)),
        "e2",
    )
    snapshot = snapshot_of(state, parent_version=None, cause_event_ids=())
    counts = counts_of(snapshot)
    assert counts.train + counts.eval == 31
    assert counts.eval == sum(e.split == "eval" for e in snapshot.examples)
    assert counts.eval > 0
    assert counts.must_pass == 1
    assert counts.per_label == {"grain": 30, "crude": 1, "trade": 0}


def test_the_version_id_is_named_by_the_digest() -> None:
    assert dataset_version_id("0123456789abcdef" + "0" * 48) == "ds-0123456789ab"


def test_a_state_is_rebuilt_from_its_snapshot_and_arrival_order() -> None:
    state = apply_change(
        state_with(("wheat", "grain"), ("oil", "crude"), example("tariff", "trade", "t-1")),
        regulation(must_pass=(case("c", "x", "grain"),)),
        "e2",
    )
    snapshot = snapshot_of(state, parent_version="p", cause_event_ids=("e2",))
    recency = [e.example_id for e in state.examples]
    assert state_of(snapshot, recency) == state


def test_a_mismatched_arrival_order_is_refused() -> None:
    state = state_with(("wheat", "grain"), ("oil", "crude"))
    snapshot = snapshot_of(state, parent_version=None, cause_event_ids=())
    with pytest.raises(ValueError, match="does not match its snapshot"):
        state_of(snapshot, [state.examples[0].example_id])
    with pytest.raises(ValueError, match="does not match"):
        state_of(snapshot, [state.examples[0].example_id, "someone-else"])


def test_the_taxonomy_history_round_trips_through_the_snapshot() -> None:
    state = apply_change(
        state_with(("wheat", "grain"), ("oil", "crude")),
        taxonomy(
            LabelAdded(op="add", label="fx"),
            LabelRenamed(op="rename", from_label="trade", to_label="tariffs"),
        ),
        "e2",
    )
    snapshot = snapshot_of(state, parent_version="p", cause_event_ids=("e2",))
    assert snapshot.taxonomy_history == state.taxonomy_history
    assert [step.step_id for step in snapshot.taxonomy_history] == ["e0", "e2"]
    read_back = DatasetSnapshot.model_validate_json(canonical_json(snapshot))
    assert read_back.taxonomy_history == state.taxonomy_history
    assert state_of(read_back, [e.example_id for e in state.examples]) == state


def test_the_history_is_part_of_the_content_and_so_of_the_digest() -> None:
    state = state_with(("wheat", "grain"))
    assert digest(replace(state, taxonomy_history=())) != digest(state)


def test_a_snapshot_written_before_the_history_existed_still_reads() -> None:
    state = state_with(("wheat", "grain"))
    snapshot = snapshot_of(state, parent_version=None, cause_event_ids=())
    document = json.loads(canonical_json(snapshot))
    del document["taxonomy_history"]
    old = DatasetSnapshot.model_validate(document)
    assert old.taxonomy_history == ()
    restored = state_of(old, [e.example_id for e in state.examples])
    assert restored == replace(state, taxonomy_history=())
    later = apply_change(restored, taxonomy(LabelAdded(op="add", label="fx")), "e5")
    assert [step.step_id for step in later.taxonomy_history] == ["e5"]
