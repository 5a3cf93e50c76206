"""Which events a consumer group has already handled, by `ce_id`, and with what body.

Kafka gives at-least-once delivery: a record handled but not yet committed is delivered again
after a crash or rebalance, and producers may retry. Remembering handled ids makes the handler's
effect happen once. The log is SQLite in the service's state dir (durable across restarts) or in
memory when no state dir is configured. Old ids are pruned: redelivery happens within minutes,
not weeks.

With each id the log keeps the sha256 of the record's value as it was handled. A redelivery is
the same bytes; a record that reuses a handled id with other bytes is a different event sent
under a taken id, and the consumer dead-letters it as a conflict instead of dropping it unseen.
Ids remembered before digests were kept have none (`Handled.body_sha256` is None): a repeat of
those is dropped as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from adaptmesh_kit.state import open_state_file

RETENTION_SECONDS = 7 * 24 * 3600
PRUNE_EVERY = 10_000
# Ids per query: under SQLite's oldest limit on bound parameters (999).
QUERY_CHUNK = 900


@dataclasses.dataclass(frozen=True, slots=True)
class Handled:
    """An event id the group has handled: the sha256 of the body it was handled with (None
    when it was remembered before digests were kept)."""

    body_sha256: str | None


def body_digest(value: bytes | None) -> str:
    """The sha256 (hex) of a record's value, byte for byte (no value counts as empty)."""
    return hashlib.sha256(value or b"").hexdigest()


class ProcessedLog:
    def __init__(self, path: Path | None) -> None:
        # NORMAL loses at most the last transactions on power loss, which only means one more
        # redelivery is handled twice; FULL would cost an fsync per record.
        self._db = open_state_file(path, synchronous="NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS processed ("
            " consumer_group TEXT NOT NULL, event_id TEXT NOT NULL, handled_at REAL NOT NULL,"
            " body_sha256 TEXT,"
            " PRIMARY KEY (consumer_group, event_id)) WITHOUT ROWID"
        )
        _add_digest_column(self._db)
        self._writes = 0

    def recall(self, consumer_group: str, event_id: str) -> Handled | None:
        """How `event_id` was handled by the group, or None if it was not (or was pruned)."""
        row = self._db.execute(
            "SELECT body_sha256 FROM processed WHERE consumer_group = ? AND event_id = ?",
            (consumer_group, event_id),
        ).fetchone()
        return None if row is None else Handled(row[0])

    def recall_among(self, consumer_group: str, event_ids: Sequence[str]) -> dict[str, Handled]:
        """Which of `event_ids` were handled already, and how (one query per chunk, for
        batches)."""
        found: dict[str, Handled] = {}
        for start in range(0, len(event_ids), QUERY_CHUNK):
            chunk = event_ids[start : start + QUERY_CHUNK]
            placeholders = ", ".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT event_id, body_sha256 FROM processed"  # noqa: S608  (only placeholders are formatted in)
                f" WHERE consumer_group = ? AND event_id IN ({placeholders})",
                (consumer_group, *chunk),
            )
            found.update((event_id, Handled(digest)) for event_id, digest in rows)
        return found

    def remember(self, consumer_group: str, event_id: str, body_sha256: str) -> None:
        """Remember that the group handled `event_id` with a body of sha256 `body_sha256`
        (an id already remembered keeps its first digest)."""
        now = time.time()
        self._db.execute(
            "INSERT OR IGNORE INTO processed VALUES (?, ?, ?, ?)",
            (consumer_group, event_id, now, body_sha256),
        )
        self._wrote(1, now)

    def remember_many(self, consumer_group: str, handled: Iterable[tuple[str, str]]) -> None:
        """Remember a batch's (event id, body sha256) pairs in one transaction (one commit,
        not one per id)."""
        now = time.time()
        rows = [(consumer_group, event_id, now, digest) for event_id, digest in handled]
        if not rows:
            return
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR IGNORE INTO processed VALUES (?, ?, ?, ?)", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._wrote(len(rows), now)

    def _wrote(self, rows: int, now: float) -> None:
        before = self._writes
        self._writes += rows
        if self._writes // PRUNE_EVERY != before // PRUNE_EVERY:
            self._db.execute(
                "DELETE FROM processed WHERE handled_at < ?", (now - RETENTION_SECONDS,)
            )

    def close(self) -> None:
        self._db.close()


def _add_digest_column(db: sqlite3.Connection) -> None:
    """A log written by a kit from before digests were kept gains the column (empty)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(processed)")}
    if "body_sha256" not in columns:
        db.execute("ALTER TABLE processed ADD COLUMN body_sha256 TEXT")
