"""Benchmark: publish -> subscribe throughput through `create_app` vs raw aiokafka.

    make bench-backbone            # or: uv run python -m bench.backbone --messages 5000

Both sides move the same records (same body, same CloudEvents headers, same count) through the
same broker, producer and consumer in one process, timed from the first publish to the last
record handled. The kit side runs everything a service runs: OpenTelemetry spans on publish and
consume (exported through a BatchSpanProcessor to an exporter that drops them), envelope and
schema validation, dedupe by ce_id, dead-letter checks and commit-after-handle. Rounds alternate
raw/kit so drift on a noisy machine hits both; the medians make the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
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
from adaptmesh_kit import EventContext, MeshSettings, create_app
from adaptmesh_schemas import Envelope, Stream, decode_event, encode_event, read_envelope
from adaptmesh_schemas.events import DataBatchSubmitted
from adaptmesh_schemas.values import LabelledExample


class DroppingExporter(SpanExporter):
    """Counts spans and drops them: export cost without a collector's network time."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


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
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    settings = MeshSettings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        topic_partitions=1,
        artifact_root=f"file://{work}/artifacts",
        state_dir=work / prefix,  # a durable dedupe log, as services run with
    )
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


async def main(messages: int, body_bytes: int, rounds: int) -> None:
    events = make_events(messages, body_bytes)
    record_bytes = len(encode_event(events[0]))
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-backbone-")))
        bootstrap = os.environ.get("MESH_KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = stack.enter_context(
                EmbeddedKafka(jars_dir=ensure_kafka_jars(), data_dir=work / "kafka")
            )
            bootstrap = broker.bootstrap_servers
        print(f"broker {bootstrap}; {messages} messages of {record_bytes} bytes; {rounds} rounds")
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
                f"round {round_number}: "
                + ", ".join(f"{name} {values[-1]:,.0f}" for name, values in rates.items())
                + " msg/s"
            )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    raw = medians["raw aiokafka"]
    kit = medians["create_app"]
    for name, value in medians.items():
        print(f"median {name:32} {value:9,.0f} msg/s  ({value / raw:.2f} of raw)")
    print(f"ratio: {kit / raw:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--body-bytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.body_bytes, args.rounds))
    sys.exit(0)
