"""The run ledger (durable, one row per request) and checkpoints in the artifact store."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptmesh_kit import ArtifactIntegrityError, ArtifactStore
from adaptmesh_ml import TrainingState
from adaptmesh_schemas.events import RetrainReason, RetrainRequested
from adaptmesh_schemas.values import ArtifactRef
from adaptmesh_training.checkpoints import load_checkpoint, store_checkpoint
from adaptmesh_training.runs import RunLedger, RunRecord, RunStatus

DATASET = ArtifactRef(uri="file:///store/sha256/ab/abc", sha256="ab" * 32)


def record(run_id: str, request_id: str, domain: str = "fin", version: str = "v1") -> RunRecord:
    return RunRecord(
        run_id=run_id,
        request_id=request_id,
        request=RetrainRequested(
            domain=domain, reason=RetrainReason.DATA, dataset_version=version, dataset=DATASET
        ),
        correlation_id="c1",
    )


def test_a_request_is_recorded_once_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    ledger = RunLedger(path)
    assert ledger.add(record("aaaaaa01", "req-1"))
    assert not ledger.add(record("aaaaaa02", "req-1"))  # the same request again
    ledger.close()
    reopened = RunLedger(path)
    assert [r.run_id for r in reopened.all()] == ["aaaaaa01"]
    reopened.close()


def test_runs_under_way_come_before_queued_ones_in_arrival_order(tmp_path: Path) -> None:
    ledger = RunLedger(None)
    for number in range(1, 4):
        ledger.add(record(f"aaaaaa0{number}", f"req-{number}", domain=f"d{number}"))
    assert ledger.next_open().run_id == "aaaaaa01"  # type: ignore[union-attr]
    third = ledger.get("aaaaaa03")
    assert third is not None
    ledger.update(third.model_copy(update={"status": RunStatus.RUNNING}))
    assert ledger.next_open().run_id == "aaaaaa03"  # type: ignore[union-attr]
    saved = ledger.get("aaaaaa02")
    assert saved is not None
    ledger.update(saved.model_copy(update={"status": RunStatus.SAVED}))
    assert ledger.next_open().run_id == "aaaaaa02"  # type: ignore[union-attr]
    for run in ledger.all():
        ledger.update(run.model_copy(update={"status": RunStatus.DONE}))
    assert ledger.next_open() is None


def test_open_runs_after_a_run_are_those_of_its_domain(tmp_path: Path) -> None:
    ledger = RunLedger(None)
    ledger.add(record("aaaaaa01", "req-1", version="v1"))
    ledger.add(record("aaaaaa02", "req-2", domain="other"))
    ledger.add(record("aaaaaa03", "req-3", version="v2"))
    first = ledger.get("aaaaaa01")
    assert first is not None
    assert [r.run_id for r in ledger.open_after(first)] == ["aaaaaa03"]


def state() -> TrainingState:
    return TrainingState(
        step=40, epoch=2, batches_done=3, files={"a.bin": b"weights", "loop.json": b"{}"}
    )


def test_a_checkpoint_round_trips_through_the_store(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}/artifacts")
    ref = store_checkpoint(store, "run-1", state())
    assert load_checkpoint(store, "run-1", ref) == state()


def test_a_damaged_checkpoint_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}/artifacts")
    ref = store_checkpoint(store, "run-1", state())
    blob = store.put_bytes(b"weights")
    Path(blob.uri.removeprefix("file://")).write_bytes(b"tampered")
    with pytest.raises(ArtifactIntegrityError):
        load_checkpoint(store, "run-1", ref)
    with pytest.raises(ValueError, match="belongs to run run-1"):
        load_checkpoint(store, "run-2", store_checkpoint(store, "run-1", state()))
