"""Drift-sensing's topics as the rest of the mesh writes and reads them, on a real broker."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from adaptmesh_drift.app import SERVICE, DriftSensingApp
from adaptmesh_drift.settings import DriftSettings
from adaptmesh_kit import MeshApp
from adaptmesh_kit.telemetry import LINKS_PER_SPAN
from adaptmesh_schemas import MeshEvent, Stream, topic_name
from adaptmesh_schemas.documents import ReferenceProfile
from adaptmesh_schemas.events import DriftDetected, ModelReady, RetrainRequested
from tests.meshtest import body_json, mesh_settings, record_of
from tests.unit.adaptmesh_drift.builders import model_ready

Headers: TypeAlias = list[tuple[str, bytes]]
Record: TypeAlias = ConsumerRecord[bytes, bytes]


def drift_settings(bootstrap: str, name: str, tmp_path: Path, **overrides: Any) -> DriftSettings:
    """Settings on the private topic set `t-<name>.mesh.*`, in a consumer group of its own (a
    member left behind by another test must never hold up this one's rebalances)."""
    drift = {key: overrides.pop(key) for key in list(overrides) if key.startswith("drift_")}
    overrides.setdefault("consumer_group", f"adaptmesh.{SERVICE}.{name}")
    base = mesh_settings(bootstrap, name, tmp_path, **overrides)
    return DriftSettings(**{**base.model_dump(), **drift})


@asynccontextmanager
async def running(*apps: MeshApp) -> AsyncIterator[None]:
    """Start `apps` together and stop them together: a start waits for each of the app's
    consumer-group members to be assigned partitions (seconds each), and these waits overlap."""
    started = await asyncio.gather(*(app.start() for app in apps), return_exceptions=True)
    try:
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        yield
    finally:
        await asyncio.gather(*(app.stop() for app in apps))


def new_traceparent() -> tuple[str, str]:
    trace_id = os.urandom(16).hex()
    return trace_id, f"00-{trace_id}-{os.urandom(8).hex()}-01"


@dataclass(frozen=True, slots=True)
class Sent:
    """A record written to a topic: its ce_id, the trace it was sent in, where it landed."""

    event_id: str
    trace_id: str | None
    partition: int
    offset: int


async def write(
    bootstrap: str, topic: str, records: Sequence[tuple[str, Headers, bytes]]
) -> list[tuple[int, int]]:
    """Write `(key, headers, body)` records in order with one producer, as an outside producer
    would; returns where each landed (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        # aiokafka keeps one batch per partition in flight: records of a key stay in order.
        futures = [
            await producer.send(topic, body, key=key.encode(), headers=headers)
            for key, headers, body in records
        ]
        landed = [await future for future in futures]
    finally:
        await producer.stop()
    return [(metadata.partition, metadata.offset) for metadata in landed]


async def send_events(
    bootstrap: str, settings: DriftSettings, events: Sequence[MeshEvent], *, traced: bool = False
) -> list[Sent]:
    """Publish `events` in order as serving and ingestion would (plain aiokafka), each in a
    trace of its own when `traced` (a W3C `traceparent` header, as an instrumented producer
    sends)."""
    records: list[tuple[str, Headers, bytes]] = []
    ids: list[tuple[str, str | None]] = []
    for event in events:
        headers, body, envelope = record_of(event)
        trace_id = None
        if traced:
            trace_id, traceparent = new_traceparent()
            headers.append(("traceparent", traceparent.encode()))
        records.append((event.domain, headers, body))
        ids.append((envelope.id, trace_id))
    topics = {topic_name(event.stream, settings.topic_prefix) for event in events}
    assert len(topics) <= 1, "one topic per call"
    if not records:
        return []
    landed = await write(bootstrap, topics.pop(), records)
    return [
        Sent(event_id, trace_id, partition, offset)
        for (event_id, trace_id), (partition, offset) in zip(ids, landed, strict=True)
    ]


async def send(
    bootstrap: str,
    settings: DriftSettings,
    event: MeshEvent,
    *,
    traceparent: str | None = None,
    correlation_id: str | None = None,
) -> str:
    """Publish one `event` as ingestion would (plain aiokafka); returns its ce_id."""
    updates = {"correlationid": correlation_id} if correlation_id else {}
    headers, body, envelope = record_of(event, **updates)
    if traceparent:
        headers.append(("traceparent", traceparent.encode()))
    await write(
        bootstrap, topic_name(event.stream, settings.topic_prefix), [(event.domain, headers, body)]
    )
    return envelope.id


async def promote(app: DriftSensingApp, profile: ReferenceProfile) -> ModelReady:
    """The gate's part: `profile` in the artifact store and a model.ready naming it."""
    ref = app.artifacts.put_document(profile)
    ready = model_ready(profile.domain, profile.model_version, profile.dataset_version, ref)
    await app.publish(ready)
    return ready


async def everything_on(bootstrap: str, topic: str, *, quiet_seconds: float = 2.0) -> list[Record]:
    """Every record of `topic`, read until nothing new arrived for `quiet_seconds`."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[Record] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(quiet_seconds * 1000))
            if not batch:
                return found
            for records in batch.values():
                found.extend(records)
    finally:
        await consumer.stop()


def request_of(record: Record) -> RetrainRequested:
    return RetrainRequested.model_validate(body_json(record))


def drift_of(record: Record) -> DriftDetected:
    return DriftDetected.model_validate(body_json(record))


def header(record: Record, name: str) -> str:
    value: bytes = dict(record.headers)[name]
    return value.decode()


def trace_of(record: Record) -> str:
    """The trace id of the record's W3C `traceparent`."""
    return header(record, "traceparent").split("-")[1]


def recording_tracer() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A tracer provider keeping its spans in memory. Its spans take as many links as the
    kit's own provider allows (the SDK's default, 128, would drop most of a full batch's)."""
    spans = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_links=LINKS_PER_SPAN))
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider, spans


def batch_spans(spans: InMemorySpanExporter, topic: str) -> list[ReadableSpan]:
    """The `<topic> process` spans of the batches consumed from `topic`."""
    return [
        span
        for span in spans.get_finished_spans()
        if span.kind is SpanKind.CONSUMER and span.name == f"{topic} process"
    ]


def span_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def linked_traces(span: ReadableSpan) -> set[str]:
    return {f"{link.context.trace_id:032x}" for link in span.links}


def saved_observations(state_dir: Path, domain: str) -> int:
    """Records the saved watch of `domain` has observed (0 before its first save), read from
    drift-sensing's state file as a restarted instance would find it."""
    path = state_dir / f"{SERVICE}.detectors.sqlite3"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT body FROM watch WHERE domain = ?", (domain,)).fetchone()
    except sqlite3.OperationalError:  # the table is not there yet
        return 0
    finally:
        db.close()
    return int(json.loads(row[0])["observed"]) if row else 0


def stream_topic(settings: DriftSettings, stream: Stream) -> str:
    return topic_name(stream, settings.topic_prefix)
