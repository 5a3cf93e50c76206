"""The chain of dataset versions on disk: parents, claim checks, replays, restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptmesh_ingestion.domain import ChangeRejected
from adaptmesh_ingestion.ledger import DatasetLedger
from adaptmesh_ingestion.persistence import HeadStore
from adaptmesh_ingestion.snapshot import canonical_json
from adaptmesh_kit import ArtifactIntegrityError, ArtifactStore
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.events import LabelAdded
from tests.unit.adaptmesh_ingestion.factories import (
    DOMAIN,
    MINILM,
    batch,
    example,
    recipe,
    taxonomy,
)


def ledger_at(tmp_path: Path, heads: Path | None = None) -> DatasetLedger:
    return DatasetLedger(ArtifactStore(f"file://{tmp_path}/artifacts"), HeadStore(heads))


def blobs(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "artifacts").rglob("*") if p.is_file())


def test_each_change_makes_a_version_whose_parent_is_the_previous_one(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path)
    first = ledger.record(recipe(), "e1")
    second = ledger.record(batch(("wheat", "grain"), ("oil", "crude")), "e2")
    third = ledger.record(taxonomy(LabelAdded(op="add", label="ship")), "e3")

    assert first.parent_version is None
    assert second.parent_version == first.dataset_version
    assert third.parent_version == second.dataset_version
    assert len({first.dataset_version, second.dataset_version, third.dataset_version}) == 3
    assert [v.change_kind for v in (first, second, third)] == ["recipe", "data", "taxonomy"]
    assert [v.cause_event_ids for v in (first, second, third)] == [("e1",), ("e2",), ("e3",)]
    assert third.labels == ("grain", "crude", "trade", "ship")
    assert third.taxonomy_version == "t2"
    assert third.recipe_version == "r1"
    assert third.base_model == MINILM
    assert third.counts.per_label == {"grain": 1, "crude": 1, "trade": 0, "ship": 0}
    assert third.counts.train + third.counts.eval == 2
    assert third.domain == DOMAIN


def test_the_announced_artifact_is_the_verified_canonical_snapshot(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path)
    ledger.record(recipe(), "e1")
    versioned = ledger.record(batch(("wheat", "grain")), "e2")
    store = ArtifactStore(f"file://{tmp_path}/artifacts")
    snapshot = store.get_document(versioned.artifact, DatasetSnapshot)
    assert canonical_json(snapshot) == store.get_bytes(versioned.artifact)
    assert versioned.dataset_version == "ds-" + versioned.artifact.sha256[:12]
    assert snapshot.parent_version == versioned.parent_version
    assert snapshot.cause_event_ids == ("e2",)
    assert [(e.text, e.label) for e in snapshot.examples] == [("wheat", "grain")]


def test_a_rejected_change_leaves_no_trace(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path)
    before = ledger.record(recipe(), "e1")
    written = blobs(tmp_path)
    with pytest.raises(ChangeRejected, match="'gold'"):
        ledger.record(batch(("gold", "gold")), "e2")
    assert blobs(tmp_path) == written
    after = ledger.record(batch(("wheat", "grain")), "e3")
    assert after.parent_version == before.dataset_version


def test_a_redelivered_change_announces_the_version_it_already_made(tmp_path: Path) -> None:
    heads = tmp_path / "state" / "heads.sqlite3"
    ledger = ledger_at(tmp_path, heads)
    ledger.record(recipe(), "e1")
    made = ledger.record(batch(("wheat", "grain")), "e2")
    # As after a crash between recording and publishing: a fresh process gets it again.
    again = ledger_at(tmp_path, heads).record(batch(("wheat", "grain")), "e2")
    assert again == made


def test_the_chain_and_the_arrival_order_survive_a_restart(tmp_path: Path) -> None:
    heads = tmp_path / "state" / "heads.sqlite3"
    ledger = ledger_at(tmp_path, heads)
    ledger.record(recipe(max_examples_per_label=2), "e1")
    # Ids that sort against arrival order: a lost order would cut the wrong example.
    last = ledger.record(
        batch(example("older", "grain", "m"), example("newer", "grain", "a")), "e2"
    )

    restarted = ledger_at(tmp_path, heads)
    head = restarted.head(DOMAIN)
    assert head is not None
    assert head.dataset_version == last.dataset_version
    assert [e.text for e in head.state.examples] == ["older", "newer"]

    following = restarted.record(batch(example("latest", "grain", "b"), batch_id="b2"), "e3")
    assert following.parent_version == last.dataset_version
    head = restarted.head(DOMAIN)
    assert head is not None
    assert [e.text for e in head.state.examples] == ["newer", "latest"]


def test_without_a_state_file_a_restart_starts_over(tmp_path: Path) -> None:
    ledger_at(tmp_path).record(recipe(), "e1")
    assert ledger_at(tmp_path).head(DOMAIN) is None


def test_a_tampered_snapshot_is_refused_at_load(tmp_path: Path) -> None:
    heads = tmp_path / "state" / "heads.sqlite3"
    versioned = ledger_at(tmp_path, heads).record(recipe(), "e1")
    Path(versioned.artifact.uri.removeprefix("file://")).write_bytes(b"{}")
    with pytest.raises(ArtifactIntegrityError):
        ledger_at(tmp_path, heads).head(DOMAIN)
