"""Drift-sensing on a real broker: bursts, drift alarms and their retrains, restarts, two
instances sharing domains, and garbage in the watched streams.

Models are promoted as the gate does it (a reference profile in the artifact store, a
model.ready naming it) before any inference record is written; streams come from
`SyntheticWorld` — 20 records like the reference, then the inputs shift — with a small drift
policy (ERT 100, window 10) so alarms come within a few records of the shift. At that ERT a
false alarm among the 20 steady records has a chance near 18% per domain; the streams are
seeded, and the seeds used here have none (each test checks its alarms came after the shift).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import murmur2

from adaptmesh_drift.app import DriftSensingApp, build_app
from adaptmesh_drift.handlers import DriftHandlers
from adaptmesh_kit.topic_ends import end_offsets
from adaptmesh_schemas import Stream, read_envelope
from adaptmesh_schemas.documents import LabelingSample
from adaptmesh_schemas.events import (
    DeadLetterRecorded,
    DriftDetected,
    InferenceLogged,
    RetrainReason,
)
from tests.integration.adaptmesh_drift.wire import (
    Headers,
    Record,
    Sent,
    batch_spans,
    drift_of,
    drift_settings,
    everything_on,
    header,
    linked_traces,
    new_traceparent,
    promote,
    recording_tracer,
    request_of,
    running,
    saved_observations,
    send,
    send_events,
    span_trace,
    stream_topic,
    trace_of,
    write,
)
from tests.meshtest import body_json, eventually, read_records, record_of
from tests.unit.adaptmesh_drift.builders import (
    SHIFTED_MIX,
    SyntheticRecord,
    SyntheticWorld,
    dataset,
)

pytestmark = pytest.mark.kafka

WINDOW = 10
POLICY: dict[str, Any] = {"ert": 100, "window": WINDOW}
WINDOWS = {"embedding-mmd": WINDOW, "prediction-shift": WINDOW, "estimated-accuracy": 10 * WINDOW}
"""Each inference detector's window (estimated accuracy looks at ten times the recipe's)."""
INFERENCE_DETECTORS = set(WINDOWS)
# The detectors of a stream share its false-alarm budget (the default set: three watch the
# inference records, one the feedback).
INFERENCE_ERT = POLICY["ert"] * len(INFERENCE_DETECTORS)
FEEDBACK_ERT = POLICY["ert"]
STEADY = 20  # records like the reference before the shift


def shifting(world: SyntheticWorld, shifted: int = 60) -> list[SyntheticRecord]:
    """Records like the reference, then inputs moved and only the two rarest labels."""
    return world.records(STEADY) + world.records(shifted, mix=SHIFTED_MIX, shift=0.25)


def logged(domain: str, records: Sequence[SyntheticRecord]) -> list[InferenceLogged]:
    return [record.logged(domain, n) for n, record in enumerate(records)]


def index_of(prediction_id: str | None) -> int:
    """Position in its stream of the record with this prediction id (`<domain>-p<n>`)."""
    assert prediction_id is not None
    return int(prediction_id.rsplit("-p", 1)[1])


def positions(event_ids: Iterable[str], sent: Sequence[Sent]) -> list[int]:
    where = {record.event_id: n for n, record in enumerate(sent)}
    return [where[event_id] for event_id in event_ids]


def by_domain(records: Iterable[Record]) -> dict[str, list[DriftDetected]]:
    found: dict[str, list[DriftDetected]] = {}
    for record in records:
        drift = drift_of(record)
        found.setdefault(drift.domain, []).append(drift)
    return found


def handlers_of(app: DriftSensingApp) -> DriftHandlers:
    assert app.handlers is not None
    return app.handlers


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
    retrain = stream_topic(settings, Stream.RETRAIN)
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
    assert trace_of(record) == trace_id


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
    retrain = stream_topic(settings, Stream.RETRAIN)
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


async def test_a_shift_publishes_drift_detected_then_a_retrain_traced_to_its_inference_records(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    # `fin` retrains on drift, `legal` (recipe: on_detect alert) only alerts; both have a
    # dataset version with feedback the champion was not trained on. Retry at once: the
    # explicit retrain on ds-2 stands for one the gate rejected long ago (within
    # drift_retry_seconds an alarm does not ask again for the version just requested).
    settings = drift_settings(
        kafka_bootstrap,
        unique_name,
        tmp_path,
        drift_settle_ms=100,
        drift_cooldown_seconds=0.2,
        drift_retry_seconds=0,
    )
    provider, spans = recording_tracer()
    app = build_app(settings, tracer_provider=provider)
    world = SyntheticWorld(4)
    policies = {"fin": POLICY, "legal": {**POLICY, "on_detect": "alert"}}
    profiles = {d: world.profile(300, domain=d, **policy) for d, policy in policies.items()}
    streams = {domain: logged(domain, shifting(world)) for domain in policies}
    inference = stream_topic(settings, Stream.INFERENCE)
    drift_topic = stream_topic(settings, Stream.DRIFT)
    retrain = stream_topic(settings, Stream.RETRAIN)
    async with app:
        for domain, profile in profiles.items():
            await app.publish(dataset(domain, "ds-1"))
            await promote(app, profile)
            await app.publish(dataset(domain, "ds-2", parent="ds-1", change_kind="feedback"))
        # The explicit requests for the two versions go out first (merged or not).
        await eventually(
            lambda: (
                not app.outbox.pending()
                and all((app.outbox.last_requested(d) or ("",))[0] == "ds-2" for d in policies)
            ),
            30,
            "the explicit requests never went out",
        )
        explicit = len(await everything_on(kafka_bootstrap, retrain, quiet_seconds=0.3))
        sent = {
            domain: await send_events(kafka_bootstrap, settings, events, traced=True)
            for domain, events in streams.items()
        }
        await read_records(kafka_bootstrap, drift_topic, 2)
        [drift_request] = await read_records(
            kafka_bootstrap,
            retrain,
            1,
            where=lambda r: request_of(r).reason is RetrainReason.DRIFT,
        )
        drifts = await everything_on(kafka_bootstrap, drift_topic, quiet_seconds=1.0)
        requests = await everything_on(kafka_bootstrap, retrain, quiet_seconds=0.5)
        assert app.outbox.pending() == []

    alarms = by_domain(drifts)
    assert sorted(alarms) == ["fin", "legal"]
    assert [len(found) for found in alarms.values()] == [1, 1], "one alarm per domain"
    for domain, [alarm] in alarms.items():
        assert alarm.model_version == "m-1"
        assert alarm.dataset_version == "ds-1"
        # Evidence of every inference detector (feedback has had no records), the fired one
        # drifted, each calibrated to its share of the domain's ERT.
        assert {e.detector for e in alarm.evidence} == INFERENCE_DETECTORS
        assert [e.detector for e in alarm.evidence if e.drifted] == [alarm.detector]
        for evidence in alarm.evidence:
            assert evidence.drifted is not None
            assert evidence.ert == INFERENCE_ERT
            assert evidence.records_seen is not None
            assert evidence.window_size == min(evidence.records_seen, WINDOWS[evidence.detector])
        [fired] = [e for e in alarm.evidence if e.drifted]
        assert fired.statistic > fired.threshold
        # The alarm comes after the shift began, on the record that tipped it, with the
        # window's records as its causes.
        trigger = index_of(alarm.trigger_prediction_id)
        assert trigger >= STEADY, f"{domain}: alarm before the shift"
        window = list(range(trigger - WINDOW + 1, trigger + 1))
        assert positions(alarm.cause_event_ids, sent[domain]) == window
        # The sample to label: recent inputs, least certain first, with their texts.
        assert alarm.to_label is not None
        sample = app.artifacts.get_document(alarm.to_label, LabelingSample)
        assert sample.domain == domain
        assert 0 < len(sample.items) <= settings.drift_label_sample_size
        texts = {event.prediction_id: event.text for event in streams[domain]}
        seen = {f"{domain}-p{n}" for n in range(trigger + 1)}
        for item in sample.items:
            assert item.prediction_id in seen, "only records seen up to the alarm"
            assert item.text == texts[item.prediction_id]
        margins = [item.margin for item in sample.items if item.margin is not None]
        assert len(margins) == len(sample.items)
        assert margins == sorted(margins)

    [fin_alarm], [legal_alarm] = alarms["fin"], alarms["legal"]
    assert fin_alarm.action == "retrain-requested"
    assert legal_alarm.action == "alert-only"
    # One retrain for the drift, on the newest version (never the champion's), caused by the
    # drift event; none for the domain whose recipe only alerts.
    fin_drift_record = next(r for r in drifts if drift_of(r).domain == "fin")
    drift_id = read_envelope(fin_drift_record.headers).id
    request = request_of(drift_request)
    assert request.domain == "fin"
    assert request.dataset_version == "ds-2"
    assert request.cause_event_ids == (drift_id,)
    assert request.evidence is not None
    assert request.evidence.detector == fin_alarm.detector
    assert header(drift_request, "ce_causationid") == drift_id
    assert len(requests) == explicit + 1
    assert [request_of(r).reason for r in requests].count(RetrainReason.DRIFT) == 1

    # The retrain's trace is that of the batch whose records tipped the alarm: its span is
    # linked to the trace each inference record was sent in, the trigger's among them.
    trace = trace_of(drift_request)
    assert trace_of(fin_drift_record) == trace
    [alarming_batch] = [s for s in batch_spans(spans, inference) if span_trace(s) == trace]
    assert alarming_batch.dropped_links == 0
    links = linked_traces(alarming_batch)
    fin_sent = sent["fin"]
    assert fin_sent[index_of(fin_alarm.trigger_prediction_id)].trace_id in links
    assert links <= {record.trace_id for records in sent.values() for record in records}
    window_traces = {
        record.trace_id for record in fin_sent if record.event_id in fin_alarm.cause_event_ids
    }
    assert window_traces & links, "the batch holds records of the alarming window"


async def test_a_restart_mid_window_alarms_on_the_same_record_as_no_restart(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    world = SyntheticWorld(7)
    profile = world.profile(300, domain="fin", **POLICY)
    stream = logged("fin", shifting(world))

    # Two runs on their own topics, started together: one without a restart (where does the
    # alarm come?), and one that stops a few records before that, mid-window.
    straight = drift_settings(kafka_bootstrap, f"{unique_name}-straight", tmp_path)
    state_dir = tmp_path / "state"
    settings = drift_settings(
        kafka_bootstrap, f"{unique_name}-restarted", tmp_path, state_dir=state_dir
    )
    drift_topic = stream_topic(settings, Stream.DRIFT)
    uninterrupted, first = build_app(straight), build_app(settings)
    async with running(uninterrupted, first):
        await promote(uninterrupted, profile)
        await promote(first, profile)
        straight_sent = await send_events(kafka_bootstrap, straight, stream)
        [record] = await read_records(kafka_bootstrap, stream_topic(straight, Stream.DRIFT), 1)
        baseline = drift_of(record)
        trigger = index_of(baseline.trigger_prediction_id)
        # Stop after the shift began, a few records before that alarm: mid-window.
        split = trigger - 3
        assert split > STEADY, f"the alarm at record {trigger} comes too early for this test"
        before = await send_events(kafka_bootstrap, settings, stream[:split])
        await eventually(
            lambda: saved_observations(state_dir, "fin") == split,
            30,
            "the watch state was not saved after the records before the restart",
        )
    assert await everything_on(kafka_bootstrap, drift_topic, quiet_seconds=0.5) == []

    async with build_app(settings):
        after = await send_events(kafka_bootstrap, settings, stream[split:])
        await read_records(kafka_bootstrap, drift_topic, 1)
        # The count carried on from the saved state too.
        await eventually(lambda: saved_observations(state_dir, "fin") == len(stream), 30)
        records = await everything_on(kafka_bootstrap, drift_topic, quiet_seconds=0.5)
    [alarm] = [drift_of(record) for record in records]
    # The restored window carries on exactly: the same record tips it, with the same window
    # of causes (records from before and after the restart).
    assert alarm.trigger_prediction_id == baseline.trigger_prediction_id
    assert alarm.detector == baseline.detector
    window = list(range(trigger - WINDOW + 1, trigger + 1))
    assert positions(baseline.cause_event_ids, straight_sent) == window
    assert positions(alarm.cause_event_ids, [*before, *after]) == window
    assert {r.event_id for r in before} & set(alarm.cause_event_ids), "window spans the restart"


def domains_over_partitions(partitions: int, per_partition: int) -> list[str]:
    """Domain names that Kafka's default partitioner spreads evenly over `partitions`."""
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    n = 0
    while any(len(names) < per_partition for names in chosen.values()):
        name = f"domain-{n}"
        partition = partition_of(name, partitions)
        if len(chosen[partition]) < per_partition:
            chosen[partition].append(name)
        n += 1
    return [name for names in chosen.values() for name in names]


def partition_of(domain: str, partitions: int) -> int:
    partition: int = (murmur2(domain.encode()) & 0x7FFFFFFF) % partitions
    return partition


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


async def test_two_instances_split_the_domains_and_each_shift_is_detected_once(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    partitions = 4
    settings = drift_settings(kafka_bootstrap, unique_name, tmp_path, topic_partitions=partitions)
    domains = domains_over_partitions(partitions, per_partition=1)
    inference = stream_topic(settings, Stream.INFERENCE)
    drift_topic = stream_topic(settings, Stream.DRIFT)
    world = SyntheticWorld(14)
    (provider_one, spans_one), (provider_two, spans_two) = recording_tracer(), recording_tracer()
    one = build_app(settings, tracer_provider=provider_one)
    two = build_app(settings, tracer_provider=provider_two)
    async with running(one, two):
        # Every member has joined (no rebalance still to come) and each holds some partitions.
        await eventually(
            lambda: all(
                disjoint_cover([assignment(one, stream), assignment(two, stream)], partitions)
                for stream in (Stream.DATASETS, Stream.INFERENCE)
            ),
            60,
            "the two instances never split the partitions",
        )
        held = {"one": assignment(one, Stream.INFERENCE), "two": assignment(two, Stream.INFERENCE)}
        for domain in domains:
            await promote(one, world.profile(300, domain=domain, **POLICY))
        # Both know every domain's champion, whichever of them owns its partitions.
        await eventually(
            lambda: all(
                getattr(handlers_of(app).monitor.champion(domain), "model_version", None) == "m-1"
                for app in (one, two)
                for domain in domains
            ),
            30,
            "an instance does not know every champion",
        )
        events = [event for domain in domains for event in logged(domain, shifting(world))]
        # Interleaved, as serving would log them.
        events.sort(key=lambda event: index_of(event.prediction_id))
        sent = await send_events(kafka_bootstrap, settings, events, traced=True)
        await read_records(kafka_bootstrap, drift_topic, len(domains))
        records = await everything_on(kafka_bootstrap, drift_topic, quiet_seconds=1.0)
        assert held == {
            "one": assignment(one, Stream.INFERENCE),
            "two": assignment(two, Stream.INFERENCE),
        }, "a rebalance during the test"

    alarms = by_domain(records)
    assert sorted(alarms) == sorted(domains)
    assert all(len(found) == 1 for found in alarms.values()), "each shift detected exactly once"
    # Each alarm was raised by the instance holding its domain's inference partition: the
    # drift record is in the trace of a batch that instance consumed, linked to the record
    # that tipped the alarm, which was written to that partition.
    sent_by_id = {event.prediction_id: record for event, record in zip(events, sent, strict=True)}
    alarmed_by: dict[str, set[str]] = {"one": set(), "two": set()}
    for record in records:
        alarm = drift_of(record)
        assert index_of(alarm.trigger_prediction_id) >= STEADY, f"{alarm.domain}: before the shift"
        assert alarm.trigger_prediction_id is not None
        trigger = sent_by_id[alarm.trigger_prediction_id]
        [(name, span)] = [
            (name, span)
            for name, spans in (("one", spans_one), ("two", spans_two))
            for span in batch_spans(spans, inference)
            if span_trace(span) == trace_of(record)
        ]
        assert span.dropped_links == 0
        assert trigger.trace_id in linked_traces(span)
        assert trigger.partition == partition_of(alarm.domain, partitions) == record.partition
        assert trigger.partition in held[name]
        alarmed_by[name].add(alarm.domain)
    assert alarmed_by["one"]
    assert alarmed_by["two"]
    assert alarmed_by["one"] | alarmed_by["two"] == set(domains)


def malformed_inference(world: SyntheticWorld) -> dict[str, tuple[Headers, bytes]]:
    """One inference record per way of being unacceptable, by the dead letter's reason code."""
    [record] = world.records(1, mix=SHIFTED_MIX, shift=0.25)

    def written(event: InferenceLogged) -> tuple[Headers, bytes]:
        headers, body, _ = record_of(event)
        return headers, body

    headers, body = written(record.logged("fin", 1000))
    wrong_type = json.loads(body)
    wrong_type["confidence"] = "very sure"
    # Valid in form, but a sketch of 3 values for a model whose sketches have 16; the least
    # certain input of all, were it taken.
    short_sketch = record.logged("fin", 1003).model_copy(
        update={"embedding_sketch": (0.1, 0.2, 0.3), "margin": 0.0, "text": "short sketch"}
    )
    return {
        "invalid-json": (headers, b'{"domain": "fin", "prediction_id": '),
        "invalid-envelope": ([], written(record.logged("fin", 1001))[1]),
        "schema-violation": (
            written(record.logged("fin", 1002))[0],
            json.dumps(wrong_type).encode(),
        ),
        "rejected": written(short_sketch),
    }


async def test_malformed_records_are_dead_lettered_once_and_the_valid_ones_still_alarm(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    # `fin` gets a shifting inference stream, `legal` feedback whose accuracy falls (its
    # predictions stay right for 30 records, then 80% are wrong); garbage is mixed into both
    # before their alarms.
    settings = drift_settings(kafka_bootstrap, unique_name, tmp_path)
    world = SyntheticWorld(4)
    inference = stream_topic(settings, Stream.INFERENCE)
    feedback = stream_topic(settings, Stream.FEEDBACK)
    drift_topic = stream_topic(settings, Stream.DRIFT)
    deadletter = stream_topic(settings, Stream.DEADLETTER)

    profiles = [world.profile(300, domain=domain, **POLICY) for domain in ("fin", "legal")]
    bad_inference = malformed_inference(world)
    valid_inference = [(e.domain, *record_of(e)[:2]) for e in logged("fin", shifting(world))]
    # Garbage early in the shifted part, one record apart, so valid records surround each.
    inference_records = list(valid_inference)
    for n, (headers, body) in enumerate(bad_inference.values()):
        inference_records.insert(STEADY + 2 * n, ("fin", headers, body))

    answered = world.records(90)
    verdicts = [n < 30 or n % 5 == 0 for n in range(len(answered))]
    valid_feedback = [
        ("legal", *record_of(record.feedback("legal", n, correct=right))[:2])
        for n, (record, right) in enumerate(zip(answered, verdicts, strict=True))
    ]
    feedback_headers, feedback_body, _ = record_of(answered[0].feedback("legal", 999))
    no_label = {k: v for k, v in json.loads(feedback_body).items() if k != "true_label"}
    feedback_records = list(valid_feedback)
    feedback_records.insert(32, ("legal", feedback_headers, json.dumps(no_label).encode()))

    app = build_app(settings)
    async with app:
        for profile in profiles:
            await promote(app, profile)
        inference_at = await write(kafka_bootstrap, inference, inference_records)
        feedback_at = await write(kafka_bootstrap, feedback, feedback_records)
        await read_records(kafka_bootstrap, drift_topic, 2)
        letters = await read_records(kafka_bootstrap, deadletter, len(bad_inference) + 1)
        await asyncio.sleep(0.5)  # a second letter for the same record would be written by now
        written = sum((await end_offsets(kafka_bootstrap, deadletter)).values())
        drifts = await everything_on(kafka_bootstrap, drift_topic, quiet_seconds=0.5)
    assert written == len(bad_inference) + 1, "each malformed record dead-lettered exactly once"

    # Each malformed record has its letter: where it came from, why, and its bytes.
    by_offset = {
        (letter.source.topic, letter.source.offset): letter
        for letter in (DeadLetterRecorded.model_validate(body_json(r)) for r in letters)
    }
    expected = {
        (inference, inference_at[inference_records.index(("fin", *bad))][1]): (code, bad)
        for code, bad in bad_inference.items()
    }
    bad_feedback = feedback_records[32]
    expected[feedback, feedback_at[32][1]] = ("schema-violation", bad_feedback[1:])
    assert sorted(by_offset) == sorted(expected)
    for where, (code, (headers, body)) in expected.items():
        letter = by_offset[where]
        assert letter.reason_code == code, where
        assert letter.reason, where
        assert letter.service == "drift-sensing"
        assert letter.original_value_b64 is not None
        assert base64.b64decode(letter.original_value_b64) == body
        assert [(h.key, base64.b64decode(h.value_b64)) for h in letter.original_headers] == [
            (k, v) for k, v in headers
        ]
    [rejected] = [letter for letter in by_offset.values() if letter.reason_code == "rejected"]
    assert "embedding sketch of 3 values" in rejected.reason
    [invalid_feedback] = [letter for where, letter in by_offset.items() if where[0] == feedback]
    assert "true_label" in invalid_feedback.reason

    # The valid records around them were all watched: both alarms came.
    alarms = by_domain(drifts)
    [inference_alarm] = alarms["fin"]
    [feedback_alarm] = alarms["legal"]
    assert inference_alarm.detector in INFERENCE_DETECTORS
    assert index_of(inference_alarm.trigger_prediction_id) >= STEADY
    # The rejected record left no trace in the watch: not among the causes, not offered for
    # labelling (it would be first: the least certain input of all).
    rejected_id = read_envelope(bad_inference["rejected"][0]).id
    assert rejected_id not in inference_alarm.cause_event_ids
    assert inference_alarm.to_label is not None
    sample = app.artifacts.get_document(inference_alarm.to_label, LabelingSample)
    assert "fin-p1003" not in {item.prediction_id for item in sample.items}

    # Falling accuracy on feedback: the feedback detector fires, after the fall began.
    assert feedback_alarm.detector == "feedback-accuracy"
    [fired] = [e for e in feedback_alarm.evidence if e.drifted]
    assert fired.detector == "feedback-accuracy"
    assert fired.ert == FEEDBACK_ERT
    assert fired.statistic > fired.threshold
    assert index_of(feedback_alarm.trigger_prediction_id) >= 30
    assert feedback_alarm.action == "no-new-labelled-data"


async def test_a_domains_inference_and_feedback_arriving_together_feed_one_watch(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Both streams' first batches find the domain's watch not armed yet, and each handler
    # arms it off the event loop: it must be armed once, and every record of both streams
    # must end up in that one watch (saved, to carry on after a restart).
    caplog.set_level(logging.INFO, logger="adaptmesh_drift.monitor")
    state_dir = tmp_path / "state"
    settings = drift_settings(kafka_bootstrap, unique_name, tmp_path, state_dir=state_dir)
    world = SyntheticWorld(9)
    profile = world.profile(300, domain="fin", **POLICY)
    records = world.records(200)
    async with build_app(settings) as app:
        assert isinstance(app, DriftSensingApp)
        await promote(app, profile)
        await asyncio.gather(
            send_events(kafka_bootstrap, settings, logged("fin", records)),
            send_events(
                kafka_bootstrap,
                settings,
                [record.feedback("fin", n) for n, record in enumerate(records)],
            ),
        )
        with contextlib.suppress(TimeoutError):
            await eventually(lambda: saved_observations(state_dir, "fin") == 2 * len(records), 10)
    armed = [r for r in caplog.records if r.getMessage().startswith("fin: watching m-1")]
    assert len(armed) == 1, "the domain was armed more than once"
    assert saved_observations(state_dir, "fin") == 2 * len(records), "records were lost"
