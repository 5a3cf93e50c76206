"""Which events a consumer group has already handled, by `ce_id`.

Kafka gives at-least-once delivery: a record handled but not yet committed is delivered again
after a crash or rebalance, and producers may retry. Remembering handled ids makes the handler's
effect happen once. The log is SQLite in the service's state dir (durable across restarts) or in
memory when no state dir is configured. Old ids are pruned: redelivery happens within minutes,
not weeks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from adaptmesh_kit.state import open_state_file

RETENTION_SECONDS = 7 * 24 * 3600
PRUNE_EVERY = 10_000
# Ids per query: under SQLite's oldest limit on bound parameters (999).
QUERY_CHUNK = 900


class ProcessedLog:
    def __init__(self, path: Path | None) -> None:
        # NORMAL loses at most the last transactions on power loss, which only means one more
        # redelivery is handled twice; FULL would cost an fsync per record.
        self._db = open_state_file(path, synchronous="NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS processed ("
            " consumer_group TEXT NOT NULL, event_id TEXT NOT NULL, handled_at REAL NOT NULL,"
            " PRIMARY KEY (consumer_group, event_id)) WITHOUT ROWID"
        )
        self._writes = 0

    def seen(self, consumer_group: str, event_id: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM processed WHERE consumer_group = ? AND event_id = ?",
            (consumer_group, event_id),
        ).fetchone()
        return row is not None

    def seen_among(self, consumer_group: str, event_ids: Sequence[str]) -> set[str]:
        """Which of `event_ids` were handled already (one query per chunk, for batches)."""
        found: set[str] = set()
        for start in range(0, len(event_ids), QUERY_CHUNK):
            chunk = event_ids[start : start + QUERY_CHUNK]
            placeholders = ", ".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT event_id FROM processed"  # noqa: S608  (only placeholders are formatted in)
                f" WHERE consumer_group = ? AND event_id IN ({placeholders})",
                (consumer_group, *chunk),
            )
            found.update(event_id for (event_id,) in rows)
        return found

    def remember(self, consumer_group: str, event_id: str) -> None:
        now = time.time()
        self._db.execute(
            "INSERT OR IGNORE INTO processed VALUES (?, ?, ?)", (consumer_group, event_id, now)
        )
        self._wrote(1, now)

    def remember_many(self, consumer_group: str, event_ids: Iterable[str]) -> None:
        """Remember a batch's ids in one transaction (one commit, not one per id)."""
        now = time.time()
        rows = [(consumer_group, event_id, now) for event_id in event_ids]
        if not rows:
            return
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR IGNORE INTO processed VALUES (?, ?, ?)", rows)
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
