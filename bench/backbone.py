"""Benchmark: throughput through `create_app` vs raw aiokafka, per record and in batches.

    make bench-backbone            # or: uv run python -m bench.backbone --messages 5000

Per record (`handles`): both sides move the same records (same body, same CloudEvents headers,
same count) through the same broker, producer and consumer in one process, timed from the first
publish to the last record handled. The kit side runs everything a service runs: OpenTelemetry
spans on publish and consume (exported through a BatchSpanProcessor to an exporter that drops
them), envelope and schema validation, dedupe by ce_id, dead-letter checks and
commit-after-handle. Its ratio is printed as `per_record_ratio:`.

In batches (`handles_batch`): the records (CloudEvents headers plus the `traceparent` of an
upstream producer) are written to a topic first, then each side consumes all of them: raw
aiokafka with `getmany`, reading the envelope and validating the body of each record, checking
each id in a durable SQLite dedupe table, then remembering the batch's ids in one transaction
and committing after each batch; the kit with a `handles_batch` handler, which does the same
plus a span per batch linked to every record. Timed from the first batch handled to the last
(so joining the group is not), each side counting the records it handled. Its ratio is the
last line, `ratio:`. References beside it: the kit with sampling off (links and spans not
recorded), and raw aiokafka that also keeps each batch's envelopes and events until the batch is
done, as handing them to a handler in one call requires.

Rounds alternate the variants so drift on a noisy machine hits all of them; the medians make
the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from adaptmesh_embedded import EmbeddedKafka, ensure_kafka_jars
from adaptmesh_kit import Delivery, EventContext, MeshSettings, create_app, provision_topics
from adaptmesh_schemas import (
    Envelope,
    MeshEvent,
    Stream,
    decode_event,
    encode_event,
    read_envelope,
    topic_name,
)
from adaptmesh_schemas.events import DataBatchSubmitted
from adaptmesh_schemas.values import LabelledExample


class DroppingExporter(SpanExporter):
    """Counts spans and drops them: export cost without a collector's network time."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def fresh_settings(bootstrap: str, work: Path) -> MeshSettings:
    """Settings with topics of their own (a new prefix) and a durable dedupe log, as services
    run with."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    return MeshSettings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        topic_partitions=1,
        artifact_root=f"file://{work}/artifacts",
        state_dir=work / prefix,
    )


def make_events(count: int, body_bytes: int) -> list[DataBatchSubmitted]:
    filler = "lorem ipsum dolor sit amet " * (body_bytes // 27 + 1)
    probe = DataBatchSubmitted(
        domain="bench", batch_id="0", examples=(LabelledExample(text="x", label="earn"),)
    )
    overhead = len(encode_event(probe)) - 1
    text = filler[: max(1, body_bytes - overhead)]
    return [
        DataBatchSubmitted(
            domain="bench",
            batch_id=str(n),
            examples=(LabelledExample(text=text, label="earn"),),
        )
        for n in range(count)
    ]


async def run_raw(
    bootstrap: str, events: list[DataBatchSubmitted], *, decode: bool = False
) -> float:
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    records = [
        (encode_event(e), Envelope.for_event(e, source="urn:bench").to_headers()) for e in events
    ]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{topic}",
        auto_offset_reset="earliest",
    )
    await producer.start()
    await producer.send_and_wait(topic, b"warm-up")  # creates the topic outside the timing
    await consumer.start()
    await consumer.getmany(timeout_ms=2000)  # join the group outside the timing
    received = 0
    started = time.perf_counter()

    async def produce() -> None:
        for body, headers in records:
            await producer.send(topic, body, key=b"bench", headers=headers)
        await producer.flush()

    async def consume() -> None:
        nonlocal received
        while received < len(records):
            batch = await consumer.getmany(timeout_ms=500)
            for partition_records in batch.values():
                if decode:  # what any correct consumer must do: read the envelope, validate
                    for record in partition_records:
                        decode_event(read_envelope(record.headers), record.value)
                received += len(partition_records)

    await asyncio.gather(produce(), consume())
    elapsed = time.perf_counter() - started
    await consumer.stop()
    await producer.stop()
    return len(records) / elapsed


async def run_kit(
    bootstrap: str,
    events: list[DataBatchSubmitted],
    work: Path,
    sampler: Sampler | None = None,
) -> tuple[float, int]:
    settings = fresh_settings(bootstrap, work)
    exporter = DroppingExporter()
    provider = TracerProvider(sampler=sampler) if sampler else TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    app = create_app(settings, "bench", tracer_provider=provider)
    warmed_up = asyncio.Event()
    done = asyncio.Event()
    handled = 0

    @app.handles(Stream.CHANGES, DataBatchSubmitted)
    async def on_batch(event: DataBatchSubmitted, context: EventContext) -> None:
        nonlocal handled
        handled += 1
        warmed_up.set()
        if handled == len(events) + 1:
            done.set()

    async with app:
        await app.publish(events[0])  # warm-up: topic metadata and group join outside the timing
        await warmed_up.wait()
        started = time.perf_counter()
        await app.publish_many(events)
        await done.wait()
        elapsed = time.perf_counter() - started
    provider.shutdown()
    return len(events) / elapsed, exporter.spans


async def _rate(run: Awaitable[tuple[float, int]]) -> float:
    rate, _spans = await run
    return rate


async def per_record_rounds(
    bootstrap: str, work: Path, messages: int, body_bytes: int, rounds: int
) -> None:
    events = make_events(messages, body_bytes)
    record_bytes = len(encode_event(events[0]))
    print(f"per record: {messages} messages of {record_bytes} bytes; {rounds} rounds")
    # Warm-up, not counted: the broker's JIT and page cache make early rounds slower.
    await run_raw(bootstrap, events)
    await run_kit(bootstrap, events, work)
    # The headline pair, plus references that show where the difference goes: the kit with
    # 10% head sampling and with sampling off (spans not recorded), and raw aiokafka that
    # also reads the envelope and validates each body.
    variants: dict[str, Callable[[], Awaitable[float]]] = {
        "raw aiokafka": lambda: run_raw(bootstrap, events),
        "create_app": lambda: _rate(run_kit(bootstrap, events, work)),
        "create_app, 10% sampled": lambda: _rate(
            run_kit(bootstrap, events, work, sampler=ParentBased(TraceIdRatioBased(0.1)))
        ),
        "create_app, sampling off": lambda: _rate(
            run_kit(bootstrap, events, work, sampler=ALWAYS_OFF)
        ),
        "raw aiokafka + decode/validate": lambda: run_raw(bootstrap, events, decode=True),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(1, rounds + 1):
        for name, run in variants.items():
            rates[name].append(await run())
        print(
            f"per-record round {round_number}: "
            + ", ".join(f"{name} {values[-1]:,.0f}" for name, values in rates.items())
            + " msg/s"
        )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    raw = medians["raw aiokafka"]
    kit = medians["create_app"]
    for name, value in medians.items():
        print(f"median {name:32} {value:9,.0f} msg/s  ({value / raw:.2f} of raw)")
    print(f"per_record_ratio: {kit / raw:.2f}")


# -- in batches ---------------------------------------------------------------------------------

Record = tuple[bytes, list[tuple[str, bytes]]]


def traced_records(events: list[DataBatchSubmitted]) -> list[Record]:
    """Bodies and headers as an upstream service writes them: CloudEvents plus its trace."""
    records: list[Record] = []
    for event in events:
        headers = Envelope.for_event(event, source="urn:bench").to_headers()
        traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        records.append((encode_event(event), [*headers, ("traceparent", traceparent.encode())]))
    return records


async def fill_topic(bootstrap: str, topic: str, records: list[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for body, headers in records:
            await producer.send(topic, body, key=b"bench", headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


class RawDedupe:
    """The same table, pragmas and statements as the kit's processed-id log."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE processed (consumer_group TEXT NOT NULL, event_id TEXT NOT NULL,"
            " handled_at REAL NOT NULL, PRIMARY KEY (consumer_group, event_id)) WITHOUT ROWID"
        )

    def seen(self, group: str, event_id: str) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM processed WHERE consumer_group = ? AND event_id = ?",
                (group, event_id),
            ).fetchone()
            is not None
        )

    def remember_many(self, group: str, event_ids: Iterable[str]) -> None:
        now = time.time()
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR IGNORE INTO processed VALUES (?, ?, ?)",
            [(group, event_id, now) for event_id in event_ids],
        )
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


class BatchClock:
    """Times from the end of the first batch handled to the end of the last."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.handled = 0
        self._first = 0
        self._started = 0.0
        self._finished = 0.0

    def handled_batch(self, records: int) -> bool:
        """Count a handled batch; True once all records are handled."""
        self.handled += records
        now = time.perf_counter()
        if not self._first:
            self._first, self._started = self.handled, now
        if self.handled >= self.total:
            self._finished = now
            return True
        return False

    @property
    def rate(self) -> float:
        return (self.handled - self._first) / (self._finished - self._started)


async def run_raw_batches(
    bootstrap: str, topic: str, total: int, batch_size: int, work: Path, *, keep: bool = False
) -> float:
    """`keep`: also hold each batch's envelopes and events until the batch is done, as a
    consumer that hands them to a handler in one call must (a reference, not the baseline)."""
    group = f"bench-raw-{uuid.uuid4().hex[:8]}"
    dedupe = RawDedupe(work / f"{group}.sqlite3")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    clock = BatchClock(total)
    try:
        done = False
        while not done:
            batch = await consumer.getmany(timeout_ms=100, max_records=batch_size)
            if not batch:
                continue
            fresh: dict[str, None] = {}  # ids in order, and a duplicate in the batch is seen
            kept: list[tuple[Envelope, MeshEvent]] = []
            count = 0
            for records in batch.values():
                for record in records:
                    count += 1
                    envelope = read_envelope(record.headers)
                    if envelope.id in fresh or dedupe.seen(group, envelope.id):
                        continue
                    event = decode_event(envelope, record.value)
                    fresh[envelope.id] = None
                    if keep:
                        kept.append((envelope, event))
            done = clock.handled_batch(count)
            kept.clear()
            dedupe.remember_many(group, fresh)
            await consumer.commit()
    finally:
        await consumer.stop()
        dedupe.close()
    return clock.rate


async def run_kit_batches(
    settings: MeshSettings, total: int, batch_size: int, sampler: Sampler | None = None
) -> float:
    group = f"bench-kit-{uuid.uuid4().hex[:8]}"
    assert settings.state_dir is not None
    settings = settings.model_copy(
        update={"consumer_group": group, "state_dir": settings.state_dir / group}
    )
    exporter = DroppingExporter()
    provider = TracerProvider(sampler=sampler) if sampler else TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    app = create_app(settings, "bench", tracer_provider=provider)
    clock = BatchClock(total)
    done = asyncio.Event()

    @app.handles_batch(Stream.CHANGES, DataBatchSubmitted, max_records=batch_size)
    async def on_batches(deliveries: Sequence[Delivery[DataBatchSubmitted]]) -> None:
        if clock.handled_batch(len(deliveries)):
            done.set()

    async with app:
        await done.wait()
    provider.shutdown()
    return clock.rate


async def batch_rounds(
    bootstrap: str, work: Path, messages: int, body_bytes: int, batch_size: int, rounds: int
) -> None:
    records = traced_records(make_events(messages, body_bytes))
    print(
        f"in batches: {messages} records of {len(records[0][0])} bytes written first, "
        f"up to {batch_size} a batch; {rounds} rounds"
    )

    async def filled_topic() -> MeshSettings:
        settings = fresh_settings(bootstrap, work)
        await provision_topics(settings)
        await fill_topic(bootstrap, topic_name(Stream.CHANGES, settings.topic_prefix), records)
        return settings

    def variants(settings: MeshSettings) -> dict[str, Callable[[], Awaitable[float]]]:
        topic = topic_name(Stream.CHANGES, settings.topic_prefix)
        return {
            "raw aiokafka getmany": lambda: run_raw_batches(
                bootstrap, topic, messages, batch_size, work
            ),
            "raw aiokafka getmany, batch kept": lambda: run_raw_batches(
                bootstrap, topic, messages, batch_size, work, keep=True
            ),
            "handles_batch": lambda: run_kit_batches(settings, messages, batch_size),
            "handles_batch, sampling off": lambda: run_kit_batches(
                settings, messages, batch_size, sampler=ALWAYS_OFF
            ),
        }

    # Warm-up, not counted.
    for run in variants(await filled_topic()).values():
        await run()
    rates: dict[str, list[float]] = {}
    for round_number in range(1, rounds + 1):
        # Every variant reads the same records of one topic (each in its own group); the
        # order turns around each round so that none always reads first.
        runs = list(variants(await filled_topic()).items())
        if round_number % 2 == 0:
            runs.reverse()
        for name, run in runs:
            rates.setdefault(name, []).append(await run())
        print(
            f"batch round {round_number}: "
            + ", ".join(f"{name} {values[-1]:,.0f}" for name, values in sorted(rates.items()))
            + " msg/s"
        )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    raw = medians["raw aiokafka getmany"]
    for name, value in medians.items():
        print(f"median batch {name:33} {value:9,.0f} msg/s  ({value / raw:.2f} of raw)")
    print(f"ratio: {medians['handles_batch'] / raw:.2f}")


# -- main ------------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-backbone-")))
        bootstrap = os.environ.get("MESH_KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = stack.enter_context(
                EmbeddedKafka(jars_dir=ensure_kafka_jars(), data_dir=work / "kafka")
            )
            bootstrap = broker.bootstrap_servers
        print(f"broker {bootstrap}")
        if args.only in (None, "per-record"):
            await per_record_rounds(bootstrap, work, args.messages, args.body_bytes, args.rounds)
        if args.only in (None, "batch"):
            await batch_rounds(
                bootstrap,
                work,
                args.batch_messages,
                args.body_bytes,
                args.batch_size,
                args.rounds,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=5000, help="records, per-record path")
    parser.add_argument("--batch-messages", type=int, default=20000, help="records, batch path")
    parser.add_argument("--batch-size", type=int, default=500, help="most records in a batch")
    parser.add_argument("--body-bytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("per-record", "batch"), help="run one path only")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
