"""Detector state and calibrations that survive a restart (SQLite under `MESH_STATE_DIR`).

Each domain's watch (detector windows, CUSUM sums, recent inputs) is saved after every batch
of records that touched it, so a restarted instance carries on mid-window instead of waiting a
whole window again. Calibrations are kept by profile digest, ERT and window: a restart arms
its domains without simulating again. Without a state dir both live in memory.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adaptmesh_drift.detectors import Calibration


class DriftState:
    """Saved watch states per domain and calibrations per key."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.durable = path is not None
        # Used from worker threads (arming and saving run off the event loop), one at a time.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # Losing the last batch's state on a power cut costs a few records of a window:
        # not worth a sync per batch.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS watch (domain TEXT PRIMARY KEY, body TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS calibration (key TEXT PRIMARY KEY, body TEXT NOT NULL)"
        )

    def load_watch(self, domain: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM watch WHERE domain = ?", (domain,)).fetchone()
        return dict(json.loads(row[0])) if row else None

    def save_watches(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Save several domains' states in one transaction (one per batch)."""
        if not states:
            return
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO watch VALUES (?, ?)",
                [(domain, json.dumps(state)) for domain, state in states.items()],
            )

    def get(self, key: str) -> Calibration | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM calibration WHERE key = ?", (key,)).fetchone()
        return dict(json.loads(row[0])) if row else None

    def put(self, key: str, calibration: Calibration) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO calibration VALUES (?, ?)", (key, json.dumps(calibration))
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
