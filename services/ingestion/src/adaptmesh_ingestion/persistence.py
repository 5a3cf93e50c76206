"""Where each domain's latest dataset version is recorded, so state survives a restart.

One SQLite row per domain: the version, its snapshot's claim check and the example ids in
arrival order. The snapshot in the artifact store holds everything else. The file lives in the
service's state dir; without one the table is in memory and dies with the process.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from adaptmesh_kit.state import open_state_file
from adaptmesh_schemas.values import ArtifactRef


@dataclass(frozen=True, slots=True)
class HeadRecord:
    """A domain's latest dataset version as recorded."""

    dataset_version: str
    artifact: ArtifactRef
    recency: tuple[str, ...]
    """Example ids, oldest first."""


class HeadStore:
    """Latest dataset version per domain, durable when given a path."""

    def __init__(self, path: Path | None) -> None:
        # FULL: a head is written before its dataset version is announced; losing it would make
        # the next version forget the announced one, so it is worth an fsync per change. The
        # ledger serialises access itself and calls from a worker thread.
        self._db = open_state_file(path, synchronous="FULL", any_thread=True)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS dataset_heads ("
            " domain TEXT PRIMARY KEY, dataset_version TEXT NOT NULL,"
            " artifact TEXT NOT NULL, recency TEXT NOT NULL, recorded_at REAL NOT NULL)"
        )

    def load(self, domain: str) -> HeadRecord | None:
        row = self._db.execute(
            "SELECT dataset_version, artifact, recency FROM dataset_heads WHERE domain = ?",
            (domain,),
        ).fetchone()
        if row is None:
            return None
        version, artifact, recency = row
        return HeadRecord(
            dataset_version=str(version),
            artifact=ArtifactRef.model_validate_json(artifact),
            recency=tuple(json.loads(recency)),
        )

    def save(self, domain: str, head: HeadRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO dataset_heads VALUES (?, ?, ?, ?, ?)",
            (
                domain,
                head.dataset_version,
                head.artifact.model_dump_json(),
                json.dumps(head.recency, separators=(",", ":")),
                time.time(),
            ),
        )

    def close(self) -> None:
        self._db.close()
