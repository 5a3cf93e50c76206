"""`adaptmesh replay`: rebuild every dataset version from the log and check its digest.

Reads `mesh.changes.v1`, `mesh.feedback.v1` and `mesh.datasets.v1` up to their current ends and
hands the decoded events to ingestion's replay (`adaptmesh_ingestion.replay`), which applies
them with ingestion's own code into an empty artifact store.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from adaptmesh_ingestion.domain import Change
from adaptmesh_ingestion.replay import DomainReplay, replay, total
from adaptmesh_kit import ArtifactStore, MeshSettings
from adaptmesh_kit.topic_ends import log_bounds
from adaptmesh_schemas import (
    DecodeError,
    Envelope,
    MeshEvent,
    Stream,
    decode_event,
    read_envelope,
    topic_name,
)
from adaptmesh_schemas.events import DatasetVersioned

log = logging.getLogger(__name__)
POLL_MS = 500


async def read_log(settings: MeshSettings, stream: Stream) -> list[tuple[Envelope, MeshEvent]]:
    """Every decodable event of `stream`'s topic as it is now, in partition order (records
    that do not decode were dead-lettered by their consumer and are left out)."""
    topic = topic_name(stream, settings.topic_prefix)
    bounds = await log_bounds(settings.kafka_bootstrap_servers, topic)
    ends = {TopicPartition(topic, p): end for p, (first, end) in bounds.items() if end > first}
    if not ends:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    events: list[tuple[Envelope, MeshEvent]] = []
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        remaining = dict(ends)
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=POLL_MS)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < remaining.get(tp, 0):
                        _decode_into(events, record.headers, record.value, topic)
            for tp in list(remaining):
                if await consumer.position(tp) >= remaining[tp]:
                    del remaining[tp]
    finally:
        await consumer.stop()
    return events


def _decode_into(
    events: list[tuple[Envelope, MeshEvent]],
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...],
    value: bytes | None,
    topic: str,
) -> None:
    try:
        envelope = read_envelope(headers)
        events.append((envelope, decode_event(envelope, value)))
    except DecodeError as error:
        log.info("skipping an undecodable record of %s: %s", topic, error)


async def replay_mesh(
    settings: MeshSettings, *, domain: str | None = None, store: Path | None = None
) -> list[DomainReplay]:
    """Replay the mesh's log into the artifact store at `store` (default: a temporary one)."""
    changes: list[tuple[str, Change]] = []
    for stream in (Stream.CHANGES, Stream.FEEDBACK):
        for envelope, event in await read_log(settings, stream):
            if isinstance(event, Change):  # not a fleet-wide release: its moves are changes
                changes.append((envelope.id, event))
    versions = [
        event
        for _, event in await read_log(settings, Stream.DATASETS)
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
