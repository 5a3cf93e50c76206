"""Which artifact holds each dataset version, learned from `dataset.versioned`.

`model.trained` names the dataset version and digest it was trained on, not where the
snapshot lives, so the gate remembers it from the datasets topic. The registry is SQLite in the
service's state dir, so a restart keeps what the committed offsets will not replay.
"""

from __future__ import annotations

from pathlib import Path

from adaptmesh_kit.state import open_state_file
from adaptmesh_schemas.values import ArtifactRef


class DatasetRegistry:
    """dataset version -> snapshot reference, per domain."""

    def __init__(self, path: Path | None) -> None:
        self._db = open_state_file(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS dataset_versions ("
            " domain TEXT NOT NULL, dataset_version TEXT NOT NULL, artifact TEXT NOT NULL,"
            " PRIMARY KEY (domain, dataset_version)) WITHOUT ROWID"
        )

    def remember(self, domain: str, dataset_version: str, artifact: ArtifactRef) -> None:
        """Record where a version lives; a redelivered event just writes the same row."""
        self._db.execute(
            "INSERT OR REPLACE INTO dataset_versions VALUES (?, ?, ?)",
            (domain, dataset_version, artifact.model_dump_json()),
        )

    def lookup(self, domain: str, dataset_version: str) -> ArtifactRef | None:
        row = self._db.execute(
            "SELECT artifact FROM dataset_versions WHERE domain = ? AND dataset_version = ?",
            (domain, dataset_version),
        ).fetchone()
        return None if row is None else ArtifactRef.model_validate_json(row[0])

    def close(self) -> None:
        self._db.close()
