"""Replaying the changes of the log rebuilds the announced dataset versions, digest for digest."""

from __future__ import annotations

from pathlib import Path

from adaptmesh_ingestion.domain import Change, ChangeRejected
from adaptmesh_ingestion.ledger import DatasetLedger
from adaptmesh_ingestion.persistence import HeadStore
from adaptmesh_ingestion.replay import replay, total
from adaptmesh_kit import ArtifactStore
from adaptmesh_schemas.events import DatasetVersioned, LabelAdded
from tests.unit.adaptmesh_ingestion.factories import (
    base_model,
    batch,
    feedback,
    recipe,
    taxonomy,
)


def ingest(tmp_path: Path, changes: list[tuple[str, Change]]) -> list[DatasetVersioned]:
    """What ingestion announced for `changes`, in order (rejected ones announce nothing)."""
    ledger = DatasetLedger(ArtifactStore(f"file://{tmp_path}/original"), HeadStore(None))
    announced = []
    for event_id, change in changes:
        try:
            announced.append(ledger.record(change, event_id))
        except ChangeRejected:
            continue
    return announced


def history() -> list[tuple[str, Change]]:
    return [
        ("e1", recipe()),
        ("e2", batch(("wheat rose", "grain"), ("oil fell", "crude"), ("tariffs", "trade"))),
        ("e3", batch(("gold rose", "metals"), batch_id="bad")),  # rejected: unknown label
        ("e4", taxonomy(LabelAdded(op="add", label="ship"))),
        ("e5", feedback("tanker sank", "ship")),
        ("e6", base_model("/models/other")),
        ("o1", recipe(domain="other-news")),
    ]


def test_the_whole_chain_is_rebuilt_and_every_digest_matches(tmp_path: Path) -> None:
    changes = history()
    announced = ingest(tmp_path, changes)
    store = ArtifactStore(f"file://{tmp_path}/replayed")
    # Topics interleave domains, and a redelivered announcement repeats a version.
    results = replay(reversed(changes), [*announced, announced[1]], store)

    fin, other = results
    assert fin.summary() == "fin-news: 5 versions rebuilt, 5 matched, 0 mismatched, 1 skipped"
    assert fin.skipped == ("e3",)
    assert [c.announced.cause_event_ids for c in fin.checks] == [
        ("e1",),
        ("e2",),
        ("e4",),
        ("e5",),
        ("e6",),
    ]
    assert other.summary() == "other-news: 1 versions rebuilt, 1 matched, 0 mismatched, 0 skipped"
    assert total(results) == "replay: 6 versions, 6 matched, 0 mismatched"
    original = ArtifactStore(f"file://{tmp_path}/original")
    for check, version in zip(fin.checks, announced, strict=False):
        # The snapshot is in the new store, byte for byte.
        assert check.rebuilt is not None
        assert store.get_bytes(check.rebuilt) == original.get_bytes(version.artifact)


def test_one_domain_only(tmp_path: Path) -> None:
    changes = history()
    results = replay(
        changes,
        ingest(tmp_path, changes),
        ArtifactStore(f"file://{tmp_path}/r"),
        domain="other-news",
    )
    assert [r.domain for r in results] == ["other-news"]


def test_a_wrong_digest_or_a_missing_cause_is_a_mismatch(tmp_path: Path) -> None:
    changes = history()
    announced = ingest(tmp_path, changes)
    tampered = announced[2].model_copy(
        update={"artifact": announced[2].artifact.model_copy(update={"sha256": "0" * 64})}
    )
    versions = [*announced[:2], tampered, *announced[3:]]
    without_feedback = [(i, c) for i, c in changes if i != "e5"]
    [fin, _] = replay(without_feedback, versions, ArtifactStore(f"file://{tmp_path}/r"))
    assert fin.matched == 2
    bad = [c for c in fin.checks if not c.matched]
    # e4 was announced with another digest; e5's cause is gone, so e6 is made from a state
    # without its feedback and differs too.
    assert [c.announced.cause_event_ids for c in bad] == [("e4",), ("e5",), ("e6",)]
    assert "rebuilt as" in bad[0].describe()
    assert "its cause e5 is not in the log" in bad[1].describe()
    assert bad[2].rebuilt_version != bad[2].announced.dataset_version
