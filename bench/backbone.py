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
from collections.abc import Sequence
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
from adaptmesh_schemas import Envelope, Stream, encode_event, topic_name
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


async def run_raw(bootstrap: str, events: list[DataBatchSubmitted]) -> float:
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
            received += sum(len(r) for r in batch.values())

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
    done = asyncio.Event()
    handled = 0

    @app.handles(Stream.CHANGES, DataBatchSubmitted)
    async def on_batch(event: DataBatchSubmitted, context: EventContext) -> None:
        nonlocal handled
        handled += 1
        if handled == len(events) + 1:
            done.set()

    async with app:
        await app.publish(events[0])  # warm-up: topic metadata and group join outside the timing
        while handled < 1:
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        await app.publish_many(events)
        await done.wait()
        elapsed = time.perf_counter() - started
    provider.shutdown()
    return len(events) / elapsed, exporter.spans


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
        raw_rates: list[float] = []
        kit_rates: list[float] = []
        for round_number in range(1, rounds + 1):
            raw_rates.append(await run_raw(bootstrap, events))
            kit_rate, spans = await run_kit(bootstrap, events, work)
            kit_rates.append(kit_rate)
            print(
                f"round {round_number}: raw aiokafka {raw_rates[-1]:,.0f} msg/s, "
                f"create_app {kit_rate:,.0f} msg/s ({spans} spans exported)"
            )
        # Breakdown (not the headline): the same kit path with 10% head sampling and with
        # sampling off (spans not recorded), to show how much of the gap is tracing.
        sampled_rate, _ = await run_kit(
            bootstrap, events, work, sampler=ParentBased(TraceIdRatioBased(0.1))
        )
        untraced_rate, _ = await run_kit(bootstrap, events, work, sampler=ALWAYS_OFF)
    raw = statistics.median(raw_rates)
    kit = statistics.median(kit_rates)
    print(f"median raw aiokafka: {raw:,.0f} msg/s")
    print(f"median create_app:   {kit:,.0f} msg/s")
    print(f"breakdown: create_app with 10% trace sampling {sampled_rate / raw:.2f} of raw, "
          f"with sampling off {untraced_rate / raw:.2f} of raw")
    print(f"ratio: {kit / raw:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--body-bytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.body_bytes, args.rounds))
    sys.exit(0)
