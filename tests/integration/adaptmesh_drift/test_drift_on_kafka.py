"""Drift-sensing on a real broker: bursts, drift, restarts and two instances sharing domains."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.partitioner import murmur2

from adaptmesh_drift.app import DriftSensingApp, build_app
from adaptmesh_drift.settings import DriftSettings
from adaptmesh_kit import create_app
from adaptmesh_schemas import MeshEvent, Stream, read_envelope, topic_name
from adaptmesh_schemas.events import DeadLetterRecorded, RetrainReason, RetrainRequested
from tests.meshtest import body_json, eventually, mesh_settings, read_records, record_of
from tests.unit.adaptmesh_drift.builders import dataset, inference

pytestmark = pytest.mark.kafka


def drift_settings(bootstrap: str, name: str, tmp_path: Path, **overrides: Any) -> DriftSettings:
    drift = {key: overrides.pop(key) for key in list(overrides) if key.startswith("drift_")}
    base = mesh_settings(bootstrap, name, tmp_path, **overrides)
    return DriftSettings(**{**base.model_dump(), **drift})


def new_traceparent() -> tuple[str, str]:
    trace_id = os.urandom(16).hex()
    return trace_id, f"00-{trace_id}-{os.urandom(8).hex()}-01"


async def send(
    bootstrap: str,
    settings: DriftSettings,
    event: MeshEvent,
    *,
    traceparent: str | None = None,
    correlation_id: str | None = None,
) -> str:
    """Publish `event` as ingestion would (plain aiokafka); returns its ce_id."""
    updates = {"correlationid": correlation_id} if correlation_id else {}
    headers, body, envelope = record_of(event, **updates)
    if traceparent:
        headers.append(("traceparent", traceparent.encode()))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic_name(event.stream, settings.topic_prefix),
            body,
            key=event.domain.encode(),
            headers=headers,
        )
    finally:
        await producer.stop()
    return envelope.id


async def everything_on(
    bootstrap: str, topic: str, *, quiet_seconds: float = 2.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic`, read until nothing new arrived for `quiet_seconds`."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(quiet_seconds * 1000))
            if not batch:
                return found
            for records in batch.values():
                found.extend(records)
    finally:
        await consumer.stop()


def request_of(record: ConsumerRecord[bytes, bytes]) -> RetrainRequested:
    return RetrainRequested.model_validate(body_json(record))


def header(record: ConsumerRecord[bytes, bytes], name: str) -> str:
    value: bytes = dict(record.headers)[name]
    return value.decode()


async def test_a_burst_of_dataset_versions_makes_one_request_in_the_newest_changes_trace(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = drift_settings(
        kafka_bootstrap,
        unique_name,
        tmp_path,
        drift_settle_ms=500,
        drift_cooldown_seconds=5,
    )
    retrain = topic_name(Stream.RETRAIN, settings.topic_prefix)
    async with build_app(settings):
        _, first_trace = new_traceparent()
        first = await send(
            kafka_bootstrap,
            settings,
            dataset("fin-news", "ds-1", change_kind="taxonomy", causes=("chg-tax",)),
            traceparent=first_trace,
            correlation_id="chg-tax",
        )
        await asyncio.sleep(0.1)
        trace_id, second_trace = new_traceparent()
        second = await send(
            kafka_bootstrap,
            settings,
            dataset("fin-news", "ds-2", change_kind="regulation", causes=("chg-reg",)),
            traceparent=second_trace,
            correlation_id="chg-reg",
        )
        await read_records(kafka_bootstrap, retrain, 1)
        records = await everything_on(kafka_bootstrap, retrain)
    [record] = records
    request = request_of(record)
    assert request.dataset_version == "ds-2"
    assert request.reason is RetrainReason.REGULATION
    assert request.cause_event_ids == ("chg-tax", first, "chg-reg", second)
    assert record.key == b"fin-news"
    assert header(record, "ce_correlationid") == "chg-reg"
    assert header(record, "ce_causationid") == second
    assert header(record, "traceparent").split("-")[1] == trace_id


async def test_a_skewed_inference_stream_raises_a_drift_request_after_the_cool_down(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = drift_settings(
        kafka_bootstrap,
        unique_name,
        tmp_path,
        drift_settle_ms=100,
        drift_cooldown_seconds=1.0,
        drift_window_size=50,
        drift_test_every=10,
    )
    retrain = topic_name(Stream.RETRAIN, settings.topic_prefix)
    datasets = topic_name(Stream.DATASETS, settings.topic_prefix)
    async with build_app(settings):
        # Garbage first: the group handler dead-letters it, the reference follower skips it.
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                datasets, b"{not json", key=b"fin-news", headers=[("ce_id", b"\xff\xfe")]
            )
        finally:
            await producer.stop()
        await send(kafka_bootstrap, settings, dataset("fin-news", "ds-1"))
        [explicit] = await read_records(kafka_bootstrap, retrain, 1)

        serving = create_app(settings, "test-serving")
        async with serving:
            # Healthy at first: the balanced reference, confident predictions.
            labels = ("acq", "crude", "earn", "grain")
            await serving.publish_many(inference("fin-news", labels[n % 4], n=n) for n in range(50))
            # Then the model sees only one kind of text.
            await serving.publish_many(inference("fin-news", "grain", n=n) for n in range(60))
            [_, drift] = await read_records(kafka_bootstrap, retrain, 2)
        [letter] = await read_records(
            kafka_bootstrap, topic_name(Stream.DEADLETTER, settings.topic_prefix), 1
        )
    assert request_of(explicit).reason is RetrainReason.DATA
    request = request_of(drift)
    assert request.reason is RetrainReason.DRIFT
    assert request.dataset_version == "ds-1"
    assert request.evidence is not None
    assert request.evidence.detector == "label-chi2"
    assert request.evidence.p_value is not None
    assert request.evidence.p_value < settings.drift_p_threshold
    assert request.evidence.window_size == 50
    assert len(request.cause_event_ids) == 1
    assert header(drift, "ce_causationid") == request.cause_event_ids[0]
    gap = read_envelope(drift.headers).time - read_envelope(explicit.headers).time
    assert gap.total_seconds() >= settings.drift_cooldown_seconds
    assert DeadLetterRecorded.model_validate(body_json(letter)).source.topic == datasets


async def test_a_pending_request_survives_a_restart(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = drift_settings(
        kafka_bootstrap,
        unique_name,
        tmp_path,
        state_dir=tmp_path / "state",
        drift_settle_ms=3000,
    )
    retrain = topic_name(Stream.RETRAIN, settings.topic_prefix)
    first_instance = build_app(settings)
    async with first_instance:
        sent = await send(
            kafka_bootstrap, settings, dataset("fin-news", "ds-1"), correlation_id="chg-1"
        )
        await eventually(lambda: bool(first_instance.outbox.pending()), 60, "nothing pending")
    # Stopped before the settle ended: nothing published, the dataset's offset committed.
    assert await everything_on(kafka_bootstrap, retrain, quiet_seconds=0.5) == []

    async with build_app(settings):
        [record] = await read_records(kafka_bootstrap, retrain, 1)
        records = await everything_on(kafka_bootstrap, retrain, quiet_seconds=1.0)
    assert len(records) == 1
    assert request_of(record).cause_event_ids == ("change-1", sent)
    assert header(record, "ce_correlationid") == "chg-1"


def domains_over_partitions(partitions: int, per_partition: int) -> list[str]:
    """Domain names that Kafka's default partitioner spreads evenly over `partitions`."""
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    n = 0
    while any(len(names) < per_partition for names in chosen.values()):
        name = f"domain-{n}"
        partition = (murmur2(name.encode()) & 0x7FFFFFFF) % partitions
        if len(chosen[partition]) < per_partition:
            chosen[partition].append(name)
        n += 1
    return [name for names in chosen.values() for name in names]


def assignment(app: DriftSensingApp, stream: Stream) -> set[int]:
    """Partitions of `stream` this instance's consumer-group members hold."""
    topic = app.topic(stream)
    held: set[int] = set()
    for subscriber in app.broker.subscribers:
        consumer = getattr(subscriber, "consumer", None)
        if getattr(subscriber, "group_id", None) == app.consumer_group and consumer is not None:
            held |= {tp.partition for tp in consumer.assignment() if tp.topic == topic}
    return held


def disjoint_cover(assignments: Iterable[set[int]], partitions: int) -> bool:
    held = list(assignments)
    return all(held) and sorted(p for a in held for p in a) == list(range(partitions))


async def test_two_instances_in_one_group_share_the_domains(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    partitions = 4
    settings = drift_settings(
        kafka_bootstrap,
        unique_name,
        tmp_path,
        topic_partitions=partitions,
        drift_settle_ms=200,
    )
    domains = domains_over_partitions(partitions, per_partition=2)
    retrain = topic_name(Stream.RETRAIN, settings.topic_prefix)
    one, two = build_app(settings), build_app(settings)
    async with one, two:
        # Every member has joined (no rebalance still to come) and each holds some partitions.
        await eventually(
            lambda: all(
                disjoint_cover([assignment(one, stream), assignment(two, stream)], partitions)
                for stream in (Stream.DATASETS, Stream.INFERENCE)
            ),
            60,
            "the two instances never split the partitions",
        )
        for domain in domains:
            await send(kafka_bootstrap, settings, dataset(domain, "ds-1"))
        await read_records(kafka_bootstrap, retrain, len(domains))
        records = await everything_on(kafka_bootstrap, retrain)
        # Each instance's outbox remembers the domains it published requests for.
        by_one = {d for d in domains if one.outbox.last_request_at(d) is not None}
        by_two = {d for d in domains if two.outbox.last_request_at(d) is not None}
    requested = sorted(request_of(record).domain for record in records)
    assert requested == sorted(domains), "every domain exactly one request"
    assert by_one
    assert by_two
    assert by_one.isdisjoint(by_two)
    assert by_one | by_two == set(domains)
