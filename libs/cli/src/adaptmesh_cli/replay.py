"""`adaptmesh replay`: rebuild every dataset version from the log and check its digest.

Reads `mesh.changes.v1`, `mesh.feedback.v1` and `mesh.datasets.v1` up to their current ends and
hands the decoded events to ingestion's replay (`adaptmesh_ingestion.replay`), which applies
them with ingestion's own code into an empty artifact store.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path

from adaptmesh_cli.logs import read_topic
from adaptmesh_ingestion.domain import Change
from adaptmesh_ingestion.replay import DomainReplay, replay, total
from adaptmesh_kit import ArtifactStore, MeshSettings
from adaptmesh_schemas import (
    Stream,
)
from adaptmesh_schemas.events import DatasetVersioned


async def replay_mesh(
    settings: MeshSettings, *, domain: str | None = None, store: Path | None = None
) -> list[DomainReplay]:
    """Replay the mesh's log into the artifact store at `store` (default: a temporary one)."""
    changes: list[tuple[str, Change]] = []
    for stream in (Stream.CHANGES, Stream.FEEDBACK):
        for envelope, event in await read_topic(settings, stream):
            if isinstance(event, Change):  # not a fleet-wide release: its moves are changes
                changes.append((envelope.id, event))
    versions = [
        event
        for _, event in await read_topic(settings, Stream.DATASETS)
        if isinstance(event, DatasetVersioned)
    ]
    # Off the event loop: every version is a snapshot written to disk.
    return await asyncio.to_thread(_replay_into, store, changes, versions, domain)


def _replay_into(
    store: Path | None,
    changes: list[tuple[str, Change]],
    versions: list[DatasetVersioned],
    domain: str | None,
) -> list[DomainReplay]:
    if store is not None:
        return replay(changes, versions, ArtifactStore(store.resolve().as_uri()), domain=domain)
    with tempfile.TemporaryDirectory(prefix="adaptmesh-replay-") as scratch:
        return replay(changes, versions, ArtifactStore(Path(scratch).as_uri()), domain=domain)


async def run_replay(
    settings: MeshSettings,
    *,
    domain: str | None = None,
    store: Path | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """Print one line per domain (and one per mismatched version) and the total; 1 when any
    digest differs."""
    results = await replay_mesh(settings, domain=domain, store=store)
    for result in results:
        say(result.summary())
        for check in result.checks:
            if not check.matched:
                say(f"  mismatch: {check.describe()}")
    say(total(results))
    return 1 if any(result.mismatched for result in results) else 0
