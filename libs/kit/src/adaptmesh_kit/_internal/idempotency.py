"""Which events a consumer group has already handled, by `ce_id`.

Kafka gives at-least-once delivery: a record handled but not yet committed is delivered again
after a crash or rebalance, and producers may retry. Remembering handled ids makes the handler's
effect happen once. The log is SQLite in the service's state dir (durable across restarts) or in
memory when no state dir is configured. Old ids are pruned: redelivery happens within minutes,
not weeks.
"""

from __future__ import annotations

import time
from pathlib import Path

from adaptmesh_kit.state import open_state_file

RETENTION_SECONDS = 7 * 24 * 3600
PRUNE_EVERY = 10_000


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

    def remember(self, consumer_group: str, event_id: str) -> None:
        now = time.time()
        self._db.execute(
            "INSERT OR IGNORE INTO processed VALUES (?, ?, ?)", (consumer_group, event_id, now)
        )
        self._writes += 1
        if self._writes % PRUNE_EVERY == 0:
            self._db.execute(
                "DELETE FROM processed WHERE handled_at < ?", (now - RETENTION_SECONDS,)
            )

    def close(self) -> None:
        self._db.close()
