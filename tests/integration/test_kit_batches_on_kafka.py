"""Batch subscriptions and group + broadcast on one stream, on a real broker."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from adaptmesh_kit import (
    Delivery,
    EventContext,
    MeshApp,
    MeshSettings,
    create_app,
    provision_topics,
)
from adaptmesh_kit.topic_ends import end_offsets
from adaptmesh_schemas import Envelope, Stream, topic_name
from adaptmesh_schemas.events import DataBatchSubmitted, DeadLetterRecorded, FeedbackSubmitted
from adaptmesh_schemas.values import LabelledExample
from tests.meshtest import body_json, eventually, mesh_settings, read_records, record_of

pytestmark = pytest.mark.kafka

Headers = list[tuple[str, bytes]]


def change(batch_id: str) -> DataBatchSubmitted:
    return DataBatchSubmitted(
        domain="fin-news",
        batch_id=batch_id,
        examples=(LabelledExample(text="crude oil output rose", label="crude"),),
    )


def feedback(prediction_id: str) -> FeedbackSubmitted:
    return FeedbackSubmitted(
        domain="fin-news", prediction_id=prediction_id, text="oil", true_label="crude"
    )


async def write(
    bootstrap: str, topic: str, records: Sequence[tuple[Headers, bytes]], **send: Any
) -> list[int]:
    """Write `records` as an outside producer would, in order; returns their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        offsets = []
        for headers, body in records:
            metadata = await producer.send_and_wait(
                topic, body, key=b"fin-news", headers=headers, **send
            )
            offsets.append(metadata.offset)
        return offsets
    finally:
        await producer.stop()


def changes_of(*batch_ids: str) -> list[tuple[Headers, bytes]]:
    return [record_of(change(batch_id))[:2] for batch_id in batch_ids]


class BatchCalls:
    """What a batch handler was given, call by call: (batch_id, offset) of each delivery."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, int]]] = []

    def record(self, deliveries: Sequence[Delivery[DataBatchSubmitted]]) -> list[str]:
        self.calls.append([(d.event.batch_id, d.context.offset) for d in deliveries])
        return [d.event.batch_id for d in deliveries]

    @property
    def batch_ids(self) -> list[str]:
        return [batch_id for call in self.calls for batch_id, _ in call]


async def dead_letters(bootstrap: str, settings: MeshSettings, count: int) -> list[Any]:
    """The first `count` dead letters, after checking no more than `count` were written."""
    topic = topic_name(Stream.DEADLETTER, settings.topic_prefix)
    records = await read_records(bootstrap, topic, count)
    await asyncio.sleep(0.5)  # a second letter for the same record would be written by now
    assert sum((await end_offsets(bootstrap, topic)).values()) == count, "extra dead letters"
    return records


def consumer_spans(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in spans.get_finished_spans() if span.kind is SpanKind.CONSUMER]


def message_count(span: ReadableSpan) -> int:
    count = (span.attributes or {}).get("messaging.batch.message_count")
    assert isinstance(count, int), span.name
    return count


def trace_id_of(headers: Sequence[tuple[str, bytes]]) -> int:
    return int(dict(headers)["traceparent"].decode().split("-")[1], 16)


async def test_a_batch_handler_takes_many_records_in_few_calls_in_log_order(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = mesh_settings(kafka_bootstrap, unique_name, tmp_path)
    await provision_topics(settings)
    batch_ids = [f"b{n:03}" for n in range(250)]
    records = changes_of(*batch_ids)
    # A producer's retry: the same event twice in a row, so in one batch.
    records.insert(11, records[10])
    await write(kafka_bootstrap, topic_name(Stream.CHANGES, settings.topic_prefix), records)

    app = create_app(settings, "probe-batches")
    handled = BatchCalls()

    @app.handles_batch(Stream.CHANGES, DataBatchSubmitted, max_records=100)
    async def on_batches(deliveries: Sequence[Delivery[DataBatchSubmitted]]) -> None:
        handled.record(deliveries)

    async with app:
        await eventually(lambda: len(handled.batch_ids) >= len(batch_ids), 60)
        await asyncio.sleep(0.3)
    assert handled.batch_ids == batch_ids
    offsets = [offset for call in handled.calls for _, offset in call]
    assert offsets == sorted(offsets)
    assert 11 not in offsets, "the duplicate was delivered"
    assert max(len(call) for call in handled.calls) == 100
    assert len(handled.calls) <= 6, f"{len(handled.calls)} calls for {len(records)} records"


async def test_bad_records_in_batches_are_dead_lettered_once_each_and_the_rest_handled(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = mesh_settings(kafka_bootstrap, unique_name, tmp_path, max_event_bytes=4096)
    await provision_topics(settings)
    changes = topic_name(Stream.CHANGES, settings.topic_prefix)

    def bad(code: str) -> tuple[Headers, bytes]:
        headers, body, _ = record_of(change(f"bad-{code}"))

        def replaced(name: str, value: bytes) -> Headers:
            return [(k, value if k == name else v) for k, v in headers]

        if code == "invalid-json":
            return headers, b"{this is not json"
        if code == "invalid-envelope":
            return [(k, v) for k, v in headers if k != "ce_id"], body
        if code == "unknown-type":
            return replaced("ce_type", b"dev.adaptmesh.no.such"), body
        if code == "invalid-header":
            return replaced("ce_source", b"\xff\xfe not utf-8"), body
        assert code == "too-large"
        return headers, b'{"domain": "fin-news", "pad": "' + b"x" * 8192 + b'"}'

    codes = ["invalid-json", "invalid-envelope", "unknown-type", "too-large", "invalid-header"]
    valid = [f"ok-{n}" for n in range(len(codes) + 1)]
    records: list[tuple[Headers, bytes]] = []
    for n, code in enumerate(codes):
        records += [*changes_of(valid[n]), bad(code)]
    records += changes_of(valid[-1])
    offsets = await write(kafka_bootstrap, changes, records)

    app = create_app(settings, "probe-batch-garbage")
    handled = BatchCalls()

    @app.handles_batch(Stream.CHANGES, DataBatchSubmitted)
    async def on_batches(deliveries: Sequence[Delivery[DataBatchSubmitted]]) -> None:
        handled.record(deliveries)

    async with app:
        await eventually(lambda: len(handled.batch_ids) == len(valid), 60)
        letters = await dead_letters(kafka_bootstrap, settings, len(codes))
    assert handled.batch_ids == valid
    by_code = {
        body_json(r)["reason_code"]: DeadLetterRecorded.model_validate(body_json(r))
        for r in letters
    }
    assert sorted(by_code) == sorted(codes)
    for n, code in enumerate(codes):
        letter = by_code[code]
        sent_headers, sent_body = records[2 * n + 1]
        assert letter.source.topic == changes
        assert letter.source.offset == offsets[2 * n + 1], code
        assert letter.source.consumer_group == "adaptmesh.probe-batch-garbage"
        assert [(h.key, base64.b64decode(h.value_b64)) for h in letter.original_headers] == [
            (k, v) for k, v in sent_headers
        ], code
        assert letter.original_value_b64 is not None
        assert base64.b64decode(letter.original_value_b64) == sent_body, code
    assert "ce_id" in by_code["invalid-envelope"].reason
    assert "4,096-byte limit" in by_code["too-large"].reason
    assert "UTF-8" in by_code["invalid-header"].reason


async def test_a_rejected_delivery_is_dead_lettered_alone(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = mesh_settings(kafka_bootstrap, unique_name, tmp_path)
    await provision_topics(settings)
    records = changes_of("ok-1", "refuse-me", "ok-2")
    offsets = await write(
        kafka_bootstrap, topic_name(Stream.CHANGES, settings.topic_prefix), records
    )
    app = create_app(settings, "probe-batch-rejects")
    handled: list[str] = []

    @app.handles_batch(Stream.CHANGES, DataBatchSubmitted)
    async def on_batches(
        deliveries: Sequence[Delivery[DataBatchSubmitted]],
    ) -> list[tuple[Delivery[DataBatchSubmitted], str]]:
        refused = [d for d in deliveries if d.event.batch_id.startswith("refuse")]
        handled.extend(d.event.batch_id for d in deliveries if d not in refused)
        return [(d, f"{d.event.batch_id}: no such label") for d in refused]

    async with app:
        await eventually(lambda: len(handled) == 2, 60)
        [record] = await dead_letters(kafka_bootstrap, settings, 1)
    letter = DeadLetterRecorded.model_validate(body_json(record))
    assert handled == ["ok-1", "ok-2"]
    assert (letter.reason_code, letter.reason) == ("rejected", "refuse-me: no such label")
    assert letter.source.offset == offsets[1]
    assert letter.original_value_b64 is not None
    assert base64.b64decode(letter.original_value_b64) == records[1][1]


async def test_a_batch_handler_that_keeps_failing_dead_letters_its_batch_after_retries(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = mesh_settings(kafka_bootstrap, unique_name, tmp_path, handler_attempts=2)
    await provision_topics(settings)
    await write(
        kafka_bootstrap,
        topic_name(Stream.CHANGES, settings.topic_prefix),
        changes_of("a", "poison", "b"),
    )
    app = create_app(settings, "probe-batch-failing")
    handled = BatchCalls()

    @app.handles_batch(Stream.CHANGES, DataBatchSubmitted)
    async def on_batches(deliveries: Sequence[Delivery[DataBatchSubmitted]]) -> None:
        if "poison" in handled.record(deliveries):
            raise RuntimeError("cannot handle poison")

    async with app:
        await eventually(lambda: len(handled.calls) >= 2, 60)
        await app.publish(change("after"))
        await eventually(lambda: "after" in handled.batch_ids, 60)
        failing = [call for call in handled.calls if ("poison", 1) in call]
        failed_offsets = sorted({offset for _, offset in failing[0]})
        letters = await dead_letters(kafka_bootstrap, settings, len(failed_offsets))
    # Each failing batch was tried twice, the same records each time.
    assert len(failing) == 2
    assert failing[0] == failing[1]
    assert sorted(body_json(r)["source"]["offset"] for r in letters) == failed_offsets
    for record in letters:
        letter = DeadLetterRecorded.model_validate(body_json(record))
        assert letter.reason_code == "handler-error"
        assert "cannot handle poison" in letter.reason
        assert "after 2 attempts" in letter.reason


async def test_after_a_restart_reading_resumes_at_the_commit_and_nothing_is_handled_twice(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = mesh_settings(kafka_bootstrap, unique_name, tmp_path, state_dir=tmp_path / "state")
    await provision_topics(settings)
    changes = topic_name(Stream.CHANGES, settings.topic_prefix)
    partition = TopicPartition(changes, 0)
    first_ids = [f"first-{n}" for n in range(30)]
    await write(kafka_bootstrap, changes, changes_of(*first_ids))

    def service(handled: list[str], tracer_provider: TracerProvider | None = None) -> MeshApp:
        app = create_app(settings, "probe-batch-restart", tracer_provider=tracer_provider)

        @app.handles_batch(Stream.CHANGES, DataBatchSubmitted)
        async def on_batches(deliveries: Sequence[Delivery[DataBatchSubmitted]]) -> None:
            handled.extend(d.event.batch_id for d in deliveries)

        return app

    first: list[str] = []
    async with service(first):
        await eventually(lambda: len(first) == len(first_ids), 60)
    assert first == first_ids
    group = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id="adaptmesh.probe-batch-restart",
        enable_auto_commit=False,
    )
    await group.start()
    try:
        assert await group.committed(partition) == len(first_ids), "not committed at stop"
        # As if the last commits had been lost in a crash: the last ten are delivered again.
        group.assign([partition])
        await group.commit({partition: len(first_ids) - 10})
    finally:
        await group.stop()
    await write(kafka_bootstrap, changes, changes_of("second-0", "second-1"))

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    second: list[str] = []
    async with service(second, provider):
        await eventually(lambda: len(second) >= 2, 60)
        await asyncio.sleep(0.5)
    assert second == ["second-0", "second-1"]
    read = sum(message_count(span) for span in consumer_spans(spans))
    assert read == 12, "it did not read from the committed offset on"


async def test_each_batch_has_one_span_linked_to_the_traces_of_its_records(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = mesh_settings(kafka_bootstrap, unique_name, tmp_path)
    changes = topic_name(Stream.CHANGES, settings.topic_prefix)
    # Records as the mesh writes them: published through the kit, trace context included.
    async with create_app(settings, "probe-span-publisher", tracer_provider=TracerProvider()) as p:
        await p.publish_many([change(f"b{n}") for n in range(12)])
    written = await read_records(kafka_bootstrap, changes, 12)
    trace_by_offset = {record.offset: trace_id_of(record.headers) for record in written}
    assert len(set(trace_by_offset.values())) == 12

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = create_app(settings, "probe-batch-spans", tracer_provider=provider)
    handled = BatchCalls()
    causes: list[Envelope] = []

    @app.handles_batch(Stream.CHANGES, DataBatchSubmitted, max_records=5)
    async def on_batches(deliveries: Sequence[Delivery[DataBatchSubmitted]]) -> None:
        handled.record(deliveries)
        first = deliveries[0]
        causes.append(first.context.envelope)
        await first.context.publish(feedback(first.event.batch_id))

    async with app:
        await eventually(lambda: len(handled.batch_ids) == 12, 60)
        consequences = await read_records(
            kafka_bootstrap, topic_name(Stream.FEEDBACK, settings.topic_prefix), len(causes)
        )

    batch_spans = consumer_spans(spans)
    assert len(batch_spans) == len(handled.calls), "not one span per batch"
    by_count: dict[int, list[ReadableSpan]] = {}
    for span in sorted(batch_spans, key=lambda s: s.start_time or 0):
        assert span.name == f"{changes} process"
        assert span.parent is None
        assert span.attributes is not None
        assert span.attributes["messaging.system"] == "kafka"
        assert span.attributes["messaging.destination.name"] == changes
        assert span.attributes["messaging.operation.type"] == "process"
        by_count.setdefault(message_count(span), []).append(span)
    for call in handled.calls:
        span = by_count[len(call)].pop(0)
        assert [link.context.trace_id for link in span.links] == [
            trace_by_offset[offset] for _, offset in call
        ]

    # What a handler publishes is part of its batch's trace, caused by the record it names.
    span_of_trace = {span.context.trace_id: span for span in batch_spans}
    for cause, record in zip(causes, consequences, strict=True):
        headers = dict(record.headers)
        assert headers["ce_causationid"].decode() == cause.id
        assert headers["ce_correlationid"].decode() == cause.correlationid
        assert trace_id_of(record.headers) in span_of_trace
    producer_parents = {
        span.parent.span_id
        for span in spans.get_finished_spans()
        if span.kind is SpanKind.PRODUCER and span.parent is not None
    }
    assert {span.context.span_id for span in batch_spans} <= producer_parents


def group_assignment(app: MeshApp, topic: str) -> set[TopicPartition]:
    """The partitions of `topic` the app's consumer-group subscriber holds now."""
    for subscriber in app.broker.subscribers:
        consumer = getattr(subscriber, "consumer", None)
        if getattr(subscriber, "group_id", None) and isinstance(consumer, AIOKafkaConsumer):
            return {tp for tp in consumer.assignment() if tp.topic == topic}
    return set()


async def test_group_and_broadcast_on_one_stream_across_two_instances(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = mesh_settings(kafka_bootstrap, unique_name, tmp_path, topic_partitions=2)
    changes = topic_name(Stream.CHANGES, settings.topic_prefix)

    class Instance:
        def __init__(self) -> None:
            self.group = BatchCalls()
            self.broadcast: list[str] = []
            self.app = create_app(settings, "probe-twins")

            @self.app.handles_batch(Stream.CHANGES, DataBatchSubmitted)
            async def on_batches(deliveries: Sequence[Delivery[DataBatchSubmitted]]) -> None:
                self.group.record(deliveries)

            @self.app.handles(Stream.CHANGES, DataBatchSubmitted, broadcast=True)
            async def on_each(event: DataBatchSubmitted, context: EventContext) -> None:
                self.broadcast.append(event.batch_id)

    one, two = Instance(), Instance()
    async with one.app, two.app:
        await eventually(
            lambda: all(len(group_assignment(i.app, changes)) == 1 for i in (one, two)),
            60,
            "the two instances did not share the partitions",
        )
        batch_ids = [f"b{n}" for n in range(20)]
        for partition in (0, 1):
            await write(
                kafka_bootstrap, changes, changes_of(*batch_ids[partition::2]), partition=partition
            )
        headers, _, _ = record_of(change("bad"))
        [bad_offset] = await write(kafka_bootstrap, changes, [(headers, b"{not json")], partition=1)
        for instance in (one, two):
            await instance.app.caught_up(Stream.CHANGES, within_seconds=30)
        await eventually(
            lambda: len(one.group.batch_ids) + len(two.group.batch_ids) == len(batch_ids), 60
        )
        [letter] = await dead_letters(kafka_bootstrap, settings, 1)
    assert sorted(one.group.batch_ids + two.group.batch_ids) == sorted(batch_ids)
    assert one.group.batch_ids, "the other instance had all the partitions"
    assert two.group.batch_ids, "the other instance had all the partitions"
    assert sorted(one.broadcast) == sorted(two.broadcast) == sorted(batch_ids)
    body = body_json(letter)
    assert (body["reason_code"], body["source"]["partition"], body["source"]["offset"]) == (
        "invalid-json",
        1,
        bad_offset,
    )
