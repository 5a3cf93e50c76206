"""The kit's log of handled event ids and the digests of their bodies (pure SQLite)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from adaptmesh_kit._internal.discipline import Discipline
from adaptmesh_kit._internal.idempotency import Handled, ProcessedLog, body_digest
from adaptmesh_schemas import Envelope
from adaptmesh_schemas.events import DataBatchSubmitted
from adaptmesh_schemas.values import LabelledExample

BODY = b'{"domain":"fin-news","batch_id":"b1"}'
OTHER_BODY = b'{"domain":"fin-news","batch_id":"b2"}'


def test_a_body_digest_is_the_sha256_of_its_bytes() -> None:
    assert body_digest(BODY) == hashlib.sha256(BODY).hexdigest()
    assert body_digest(None) == body_digest(b"") == hashlib.sha256(b"").hexdigest()


def test_an_id_is_recalled_with_the_digest_it_was_handled_with(tmp_path: Path) -> None:
    log = ProcessedLog(tmp_path / "svc.processed.sqlite3")
    log.remember("g", "e1", body_digest(BODY))
    log.remember("g", "e1", body_digest(OTHER_BODY))  # an id keeps its first digest
    log.remember_many("g", [("e2", body_digest(OTHER_BODY)), ("e3", body_digest(BODY))])
    assert log.recall("g", "e1") == Handled(body_digest(BODY))
    assert log.recall("g", "missing") is None
    assert log.recall("other-group", "e1") is None
    assert log.recall_among("g", ["e1", "e2", "missing"]) == {
        "e1": Handled(body_digest(BODY)),
        "e2": Handled(body_digest(OTHER_BODY)),
    }
    log.close()
    reopened = ProcessedLog(tmp_path / "svc.processed.sqlite3")
    assert reopened.recall("g", "e3") == Handled(body_digest(BODY))
    reopened.close()


def test_a_log_from_before_digests_gains_the_column_and_keeps_its_ids(tmp_path: Path) -> None:
    path = tmp_path / "svc.processed.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE processed ("
        " consumer_group TEXT NOT NULL, event_id TEXT NOT NULL, handled_at REAL NOT NULL,"
        " PRIMARY KEY (consumer_group, event_id)) WITHOUT ROWID"
    )
    old.execute("INSERT INTO processed VALUES ('g', 'old', 0.0)")
    old.commit()
    old.close()
    log = ProcessedLog(path)
    assert log.recall("g", "old") == Handled(None)
    log.remember("g", "new", body_digest(BODY))
    assert log.recall("g", "new") == Handled(body_digest(BODY))
    log.close()


def envelope() -> Envelope:
    example = LabelledExample(text="wheat exports fell", label="grain")
    event = DataBatchSubmitted(domain="fin-news", batch_id="b1", examples=(example,))
    return Envelope.for_event(event, source="urn:test")


def test_a_redelivery_is_skipped_and_another_body_under_the_id_is_a_conflict() -> None:
    sent = envelope()
    handled = Handled(body_digest(BODY))
    assert Discipline.repeated(sent, handled, body_digest(BODY)) is None
    assert Discipline.repeated(sent, Handled(None), body_digest(OTHER_BODY)) is None
    conflict = Discipline.repeated(sent, handled, body_digest(OTHER_BODY))
    assert conflict is not None
    assert conflict.code == "conflict"
    assert conflict.reason.startswith(
        f"ce_id {sent.id!r} was already handled with a different body (sha256 "
        f"{body_digest(BODY)}; this body: sha256 {body_digest(OTHER_BODY)})"
    )
