"""A service's own state files: SQLite under `MESH_STATE_DIR`, in memory without one.

Every service that must remember something across restarts (handled event ids, an outbox, a run
ledger, dataset heads) opens its file the same way: the folder created, autocommit (each
statement is its own transaction unless the caller begins one), write-ahead logging so readers
never wait for the writer. What differs is how much a lost write would cost, so `synchronous`
is the caller's choice and its reason belongs beside the call.

(Drift-sensing's outbox opens its file itself: its logic modules must load without the kit,
whose package imports FastStream.)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal


def open_state_file(
    path: Path | None,
    *,
    synchronous: Literal["FULL", "NORMAL"] | None = None,
    any_thread: bool = False,
) -> sqlite3.Connection:
    """An autocommit connection to the state file at `path` (":memory:" when None).

    `synchronous="FULL"` syncs every write (for records that are the only trace of something
    once a Kafka offset is committed); `"NORMAL"` may lose the last writes on power loss.
    `any_thread` lets a caller that serialises access itself use it from worker threads.
    """
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    database = sqlite3.connect(
        str(path) if path else ":memory:", isolation_level=None, check_same_thread=not any_thread
    )
    database.execute("PRAGMA journal_mode=WAL")
    if synchronous is not None:
        database.execute(f"PRAGMA synchronous={synchronous}")
    return database
