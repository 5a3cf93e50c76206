"""The runtime kit on a real broker: envelope, trace, dead letters, dedupe, tolerance."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings import kafka as ce_kafka

from adaptmesh_kit import EventContext, MeshApp, create_app
from adaptmesh_schemas import Envelope, Stream, topic_name
from adaptmesh_schemas.events import DataBatchSubmitted, DeadLetterRecorded, FeedbackSubmitted
from adaptmesh_schemas.values import ArtifactRef, LabelledExample
from tests.meshtest import body_json, eventually, mesh_settings, read_records, record_of

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[2]


def batch(domain: str, batch_id: str = "b1") -> DataBatchSubmitted:
    return DataBatchSubmitted(
        domain=domain,
        batch_id=batch_id,
        examples=(LabelledExample(text="crude oil output rose", label="crude"),),
    )


async def raw_producer(bootstrap: str) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
    await producer.start()
    return producer


class Received:
    """Collects what a test handler was given."""

    def __init__(self) -> None:
        self.events: list[DataBatchSubmitted] = []
        self.envelopes: list[Envelope] = []

    def attach(self, app: MeshApp) -> None:
        @app.handles(Stream.CHANGES, DataBatchSubmitted)
        async def on_batch(event: DataBatchSubmitted, context: EventContext) -> None:
            self.events.append(event)
            self.envelopes.append(context.envelope)


async def test_typed_event_reaches_another_process_with_cloudevents_headers_and_trace(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    out = tmp_path / "received.jsonl"
    sub_dir = tmp_path / "subscriber"
    sub_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.kit_subscriber",
            kafka_bootstrap,
            unique_name,
            str(sub_dir),
            str(out),
        ],
        cwd=REPO,
        env=env,
    )
    try:
        await eventually(lambda: (sub_dir / "ready").exists() or child.poll() is not None, 60)
        assert child.poll() is None, "subscriber process died"
        settings = mesh_settings(kafka_bootstrap, unique_name, tmp_path)
        async with create_app(settings, "probe-publisher") as app:
            sent = await app.publish(batch("fin-news"))
        await eventually(lambda: out.exists() and out.read_text().strip() != "", 60, "no delivery")
    finally:
        child.terminate()
        child.wait(20)

    received = json.loads(out.read_text().splitlines()[0])
    assert DataBatchSubmitted.model_validate(received["event"]) == batch("fin-news")
    assert received["envelope"]["id"] == sent.id

    [record] = await read_records(
        kafka_bootstrap, topic_name(Stream.CHANGES, f"t-{unique_name}."), 1
    )
    headers = dict(record.headers)
    for name in (
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_subject",
        "ce_dataschema",
        "ce_correlationid",
        "content-type",
        "traceparent",
    ):
        assert name in headers, f"missing header {name}"
    assert record.key == b"fin-news"
    trace_id = headers["traceparent"].decode().split("-")[1]
    assert received["trace_id"] == trace_id, "the subscriber's span is not in the publisher's trace"

    # Independent check: the official CloudEvents SDK reads the raw record.
    cloud_event = ce_kafka.from_binary_event(
        ce_kafka.KafkaMessage(headers=headers, key=record.key, value=record.value)
    )
    assert cloud_event.get_id() == sent.id
    assert cloud_event.get_type() == "dev.adaptmesh.change.data_batch"
    assert cloud_event.get_source() == "urn:adaptmesh:service:probe-publisher"
    assert cloud_event.get_subject() == "fin-news"
    assert cloud_event.get_dataschema() == "urn:adaptmesh:schema:change.data_batch:1.1"
    assert cloud_event.get_extension("correlationid") == sent.id
    data = cloud_event.get_data()
    assert isinstance(data, dict)
    assert data["batch_id"] == "b1"


async def test_malformed_records_are_dead_lettered_and_the_consumer_carries_on(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = mesh_settings(kafka_bootstrap, unique_name, tmp_path)
    received = Received()
    app = create_app(settings, "probe-consumer")
    received.attach(app)
    changes = topic_name(Stream.CHANGES, settings.topic_prefix)
    good_headers, good_body, _ = record_of(batch("fin-news"))

    def replace(name: str, value: bytes) -> list[tuple[str, bytes]]:
        return [(k, value if k == name else v) for k, v in good_headers]

    huge_body = b'{"domain": "fin-news", "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    malformed: dict[str, tuple[list[tuple[str, bytes]], bytes]] = {
        "invalid-json": (good_headers, b"{this is not json"),
        "schema-violation": (good_headers, b'{"domain": "fin-news", "batch_id": "b1"}'),
        "unknown-type": (replace("ce_type", b"dev.adaptmesh.no.such.event"), good_body),
        "invalid-envelope": ([(k, v) for k, v in good_headers if k != "ce_id"], good_body),
        "too-large": (good_headers, huge_body),
        "invalid-header": (replace("ce_source", b"\xff\xfe\xfa not utf-8"), good_body),
    }
    async with app:
        producer = await raw_producer(kafka_bootstrap)
        try:
            for headers, body in malformed.values():
                await producer.send_and_wait(changes, body, key=b"fin-news", headers=headers)
            valid_headers, valid_body, valid_envelope = record_of(
                batch("fin-news", "after-garbage")
            )
            await producer.send_and_wait(
                changes, valid_body, key=b"fin-news", headers=valid_headers
            )
        finally:
            await producer.stop()
        await eventually(lambda: len(received.events) == 1, 60, "the valid event was not handled")
        assert received.events[0].batch_id == "after-garbage"
        assert received.envelopes[0].id == valid_envelope.id

        letters = await read_records(
            kafka_bootstrap, topic_name(Stream.DEADLETTER, settings.topic_prefix), len(malformed)
        )
    by_code = {
        body_json(r)["reason_code"]: (r, DeadLetterRecorded.model_validate(body_json(r)))
        for r in letters
    }
    assert set(by_code) == set(malformed)
    for code, (sent_headers, sent_body) in malformed.items():
        record, letter = by_code[code]
        assert record.key == changes.encode(), "dead letters are keyed by source topic"
        assert letter.reason, code
        assert letter.source.topic == changes
        assert letter.source.consumer_group == "adaptmesh.probe-consumer"
        assert [(h.key, base64.b64decode(h.value_b64)) for h in letter.original_headers] == [
            (k, v) for k, v in sent_headers
        ]
        if letter.original_value is not None:
            original = app.artifacts.get_bytes(letter.original_value)
        else:
            assert letter.original_value_b64 is not None
            original = base64.b64decode(letter.original_value_b64)
        assert original == sent_body, f"{code}: original bytes not preserved"
    offsets = sorted(letter.source.offset for _, letter in by_code.values())
    assert offsets == list(range(len(malformed)))
    assert "5,242,9" in by_code["too-large"][1].reason
    assert isinstance(by_code["too-large"][1].original_value, ArtifactRef)
    assert "ce_id" in by_code["invalid-envelope"][1].reason
    assert "UTF-8" in by_code["invalid-header"][1].reason
    assert "not JSON" in by_code["invalid-json"][1].reason
    assert "examples" in by_code["schema-violation"][1].reason
    assert "no.such.event" in by_code["unknown-type"][1].reason


async def test_the_same_event_delivered_twice_is_handled_once(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = mesh_settings(kafka_bootstrap, unique_name, tmp_path, state_dir=tmp_path / "state")
    changes = topic_name(Stream.CHANGES, settings.topic_prefix)
    headers, body, _ = record_of(batch("fin-news", "once"))
    _, marker_body, _ = record_of(batch("fin-news", "marker"))
    producer = await raw_producer(kafka_bootstrap)
    received = Received()
    app = create_app(settings, "probe-dedupe")
    received.attach(app)
    try:
        async with app:
            await producer.send_and_wait(changes, body, key=b"fin-news", headers=headers)
            await producer.send_and_wait(changes, body, key=b"fin-news", headers=headers)
            marker_headers, _, _ = record_of(batch("fin-news", "marker"))
            await producer.send_and_wait(
                changes, marker_body, key=b"fin-news", headers=marker_headers
            )
            await eventually(lambda: any(e.batch_id == "marker" for e in received.events), 60)
        assert [e.batch_id for e in received.events] == ["once", "marker"]

        # A redelivery after a restart (e.g. the offset commit was lost) is skipped too:
        # the processed-id log lives in the service's state dir.
        await producer.send_and_wait(changes, body, key=b"fin-news", headers=headers)
        again = Received()
        restarted = create_app(settings, "probe-dedupe")
        again.attach(restarted)
        _, late_body, _ = record_of(batch("fin-news", "late"))
        late_headers, _, _ = record_of(batch("fin-news", "late"))
        async with restarted:
            await producer.send_and_wait(changes, late_body, key=b"fin-news", headers=late_headers)
            await eventually(lambda: any(e.batch_id == "late" for e in again.events), 60)
        assert [e.batch_id for e in again.events] == ["late"]
    finally:
        await producer.stop()


async def test_consumers_accept_events_with_unknown_fields(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = mesh_settings(kafka_bootstrap, unique_name, tmp_path)
    headers, body, _ = record_of(batch("fin-news", "from-the-future"))
    newer: dict[str, Any] = {**json.loads(body), "priority": "high", "provenance": {"system": "x"}}
    received = Received()
    app = create_app(settings, "probe-tolerant")
    received.attach(app)
    async with app:
        producer = await raw_producer(kafka_bootstrap)
        try:
            await producer.send_and_wait(
                topic_name(Stream.CHANGES, settings.topic_prefix),
                json.dumps(newer).encode(),
                key=b"fin-news",
                headers=headers,
            )
        finally:
            await producer.stop()
        await eventually(lambda: len(received.events) == 1, 60)
    assert received.events[0].batch_id == "from-the-future"


async def test_a_handler_that_keeps_failing_is_dead_lettered_and_others_continue(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = mesh_settings(kafka_bootstrap, unique_name, tmp_path, handler_attempts=2)
    handled: list[str] = []
    app = create_app(settings, "probe-failing")

    @app.handles(Stream.CHANGES, DataBatchSubmitted)
    async def on_batch(event: DataBatchSubmitted, context: EventContext) -> None:
        if event.batch_id == "poison":
            raise RuntimeError("cannot handle poison")
        handled.append(event.batch_id)

    async with app:
        await app.publish(batch("fin-news", "poison"))
        await app.publish(batch("fin-news", "fine"))
        await eventually(lambda: handled == ["fine"], 60)
        [letter] = await read_records(
            kafka_bootstrap, topic_name(Stream.DEADLETTER, settings.topic_prefix), 1
        )
    body = body_json(letter)
    assert body["reason_code"] == "handler-error"
    assert "cannot handle poison" in body["reason"]
    assert "after 2 attempts" in body["reason"]


async def test_offsets_are_committed_after_handling(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = mesh_settings(kafka_bootstrap, unique_name, tmp_path)
    received = Received()
    app = create_app(settings, "probe-commits")
    received.attach(app)
    async with app:
        for n in range(5):
            await app.publish(batch("fin-news", f"b{n}"))
        await eventually(lambda: len(received.events) == 5, 60)
    # A new instance of the same group starts after what was handled: nothing is replayed.
    again = Received()
    restarted = create_app(settings, "probe-commits")
    again.attach(restarted)
    async with restarted:
        await restarted.publish(batch("fin-news", "b5"))
        await eventually(lambda: len(again.events) >= 1, 60)
        await asyncio.sleep(0.5)
    assert [e.batch_id for e in again.events] == ["b5"]


async def test_offsets_of_every_group_subscription_are_committed(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    # A long commit interval leaves all committing to the stop, when both streams have
    # handled offsets pending (each stream has its own consumer in the group).
    settings = mesh_settings(kafka_bootstrap, unique_name, tmp_path, commit_interval_ms=60_000)

    def feedback(prediction_id: str) -> FeedbackSubmitted:
        return FeedbackSubmitted(
            domain="fin-news", prediction_id=prediction_id, text="oil", true_label="crude"
        )

    def service(handled: list[str]) -> MeshApp:
        app = create_app(settings, "probe-two-streams")

        @app.handles(Stream.CHANGES, DataBatchSubmitted)
        async def on_batch(event: DataBatchSubmitted, context: EventContext) -> None:
            handled.append(event.batch_id)

        @app.handles(Stream.FEEDBACK, FeedbackSubmitted)
        async def on_feedback(event: FeedbackSubmitted, context: EventContext) -> None:
            handled.append(event.prediction_id)

        return app

    first: list[str] = []
    async with service(first) as app:
        await app.publish(batch("fin-news", "change-1"))
        await app.publish(feedback("feedback-1"))
        await eventually(lambda: len(first) == 2, 60)
    # Without a state dir the restarted instance has no memory of handled ids: only the
    # committed offsets keep it from handling the first two again.
    again: list[str] = []
    async with service(again) as app:
        await app.publish(batch("fin-news", "change-2"))
        await app.publish(feedback("feedback-2"))
        await eventually(lambda: {"change-2", "feedback-2"} <= set(again), 60)
        await asyncio.sleep(0.5)
    assert sorted(again) == ["change-2", "feedback-2"]
