"""Drift-sensing's handlers and outbox relay on FastStream's in-memory broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from faststream.kafka import TestKafkaBroker

from adaptmesh_drift.app import DriftSensingApp, build_app
from adaptmesh_drift.settings import DriftSettings
from adaptmesh_schemas import Envelope, Stream, read_envelope, topic_name
from adaptmesh_schemas.documents import LabelingSample
from adaptmesh_schemas.events import (
    DriftDetected,
    InferenceLogged,
    ModelReady,
    RetrainReason,
    RetrainRequested,
)
from tests.meshtest import eventually
from tests.unit.adaptmesh_drift.builders import SyntheticWorld, dataset, model_ready

SETTLE_MS = 200


def settings(tmp_path: Path, **overrides: Any) -> DriftSettings:
    values: dict[str, Any] = {
        "artifact_root": f"file://{tmp_path}/artifacts",
        "provision_topics": False,
        "drift_settle_ms": SETTLE_MS,
        "drift_cooldown_seconds": 0.2,
        **overrides,
    }
    return DriftSettings(**values)


class Requests:
    """Retrain requests the service published, with their envelopes."""

    def __init__(self) -> None:
        self.received: list[tuple[RetrainRequested, Envelope]] = []

    def attach(self, app: DriftSensingApp) -> None:
        async def the_message(message: Any, original: Callable[..., Any]) -> Any:
            return message

        @app.broker.subscriber(topic_name(Stream.RETRAIN), decoder=the_message)
        async def on_request(message: Any) -> None:
            record = message.raw_message
            self.received.append(
                (RetrainRequested.model_validate_json(record.value), read_envelope(record.headers))
            )


@asynccontextmanager
async def running(app: DriftSensingApp) -> AsyncIterator[Requests]:
    requests = Requests()
    requests.attach(app)
    async with TestKafkaBroker(app.broker):
        # The in-memory broker replaces `app.start()`; the relay starts as it would there.
        app.relay.start()
        try:
            yield requests
        finally:
            await app.relay.stop()


async def test_two_versions_in_quick_succession_make_one_request_for_the_newer(
    tmp_path: Path,
) -> None:
    app = build_app(settings(tmp_path))
    async with running(app) as requests:
        first = await app.publish(dataset("fin", "ds-1", change_kind="taxonomy", causes=("c1",)))
        await asyncio.sleep(0.05)
        second = await app.publish(
            dataset("fin", "ds-2", change_kind="regulation", causes=("c2",)),
            correlation_id="the-regulation-change",
        )
        await eventually(lambda: len(requests.received) >= 1, 10, "no retrain request")
        await asyncio.sleep(3 * SETTLE_MS / 1000)  # room for a second request to show up
    [(request, envelope)] = requests.received
    assert request.dataset_version == "ds-2"
    assert request.reason is RetrainReason.REGULATION
    assert request.cause_event_ids == ("c1", first.id, "c2", second.id)
    assert envelope.correlationid == "the-regulation-change"
    assert envelope.causationid == second.id
    assert app.outbox.pending() == []


async def test_an_untrainable_dataset_requests_nothing(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    async with running(app) as requests:
        await app.publish(dataset("fin", "ds-1", per_label={"acq": 10}, change_kind="recipe"))
        await app.publish(dataset("legal", "ds-1", train=0))
        await asyncio.sleep(3 * SETTLE_MS / 1000)
        assert app.outbox.pending() == []
    assert requests.received == []


class Alarms:
    """`drift.detected` events the service published."""

    def __init__(self) -> None:
        self.received: list[tuple[DriftDetected, Envelope]] = []

    def attach(self, app: DriftSensingApp) -> None:
        async def the_message(message: Any, original: Callable[..., Any]) -> Any:
            return message

        @app.broker.subscriber(topic_name(Stream.DRIFT), decoder=the_message)
        async def on_drift(message: Any) -> None:
            record = message.raw_message
            self.received.append(
                (DriftDetected.model_validate_json(record.value), read_envelope(record.headers))
            )


async def promote(app: DriftSensingApp, world: SyntheticWorld, **policy: Any) -> ModelReady:
    """The gate's part: a profile in the artifact store and a model.ready naming it."""
    profile = world.profile(300, domain="fin", model_version="m-1", **policy)
    ref = app.artifacts.put_document(profile)
    ready = model_ready("fin", "m-1", "ds-1", ref)
    await app.publish(ready)
    return ready


async def shifted_stream(app: DriftSensingApp, world: SyntheticWorld, count: int) -> None:
    for n, record in enumerate(world.records(count, mix=(0, 0, 0, 0.5, 0.5))):
        await app.publish(
            InferenceLogged(
                domain="fin",
                prediction_id=f"p-{n}",
                model_version="m-1",
                label=record.predicted,
                confidence=record.confidence,
                margin=record.margin,
                embedding_sketch=record.sketch,
                text=f"text {n}",
            )
        )


async def test_a_shift_publishes_drift_detected_and_retrains_on_the_new_labelled_data(
    tmp_path: Path,
) -> None:
    # Retry at once: the explicit retrain on ds-2 stands for one the gate rejected long ago
    # (within drift_retry_seconds an alarm does not ask again for the version just requested).
    app = build_app(settings(tmp_path, drift_catch_up_seconds=0, drift_retry_seconds=0))
    alarms = Alarms()
    alarms.attach(app)
    world = SyntheticWorld(5)
    async with running(app) as requests:
        await app.publish(dataset("fin", "ds-1"))
        await promote(app, world, ert=100, window=10)
        await app.publish(dataset("fin", "ds-2", parent="ds-1", change_kind="feedback"))
        await eventually(lambda: len(requests.received) == 1, 10, "no request for the datasets")
        await asyncio.sleep(0.3)  # past the cool-down
        await shifted_stream(app, world, 60)
        await eventually(lambda: len(alarms.received) >= 1, 10, "no drift.detected")
        await eventually(lambda: len(requests.received) == 2, 10, "no drift request")
    drift, drift_envelope = alarms.received[0]
    assert drift.model_version == "m-1"
    assert drift.dataset_version == "ds-1"
    assert drift.action == "retrain-requested"
    fired = [evidence for evidence in drift.evidence if evidence.drifted]
    assert [evidence.detector for evidence in fired] == [drift.detector]
    assert {evidence.detector for evidence in drift.evidence} >= {
        "embedding-mmd",
        "prediction-shift",
        "estimated-accuracy",
    }
    assert drift.to_label is not None
    sample = app.artifacts.get_document(drift.to_label, LabelingSample)
    assert sample.items
    assert all(item.text.startswith("text ") for item in sample.items)
    margins = [item.margin or 0.0 for item in sample.items]
    assert margins == sorted(margins)
    request, envelope = requests.received[1]
    assert request.reason is RetrainReason.DRIFT
    assert request.dataset_version == "ds-2"  # never the champion's ds-1
    assert request.cause_event_ids == (drift_envelope.id,)
    assert envelope.causationid == drift_envelope.id


async def test_with_alert_only_or_without_new_data_no_retrain_follows(tmp_path: Path) -> None:
    for policy, dataset_after, action in (
        ({"on_detect": "alert"}, True, "alert-only"),
        ({}, False, "no-new-labelled-data"),
    ):
        root = tmp_path / action
        app = build_app(settings(root, drift_catch_up_seconds=0))
        alarms = Alarms()
        alarms.attach(app)
        world = SyntheticWorld(6)
        async with running(app) as requests:
            await app.publish(dataset("fin", "ds-1"))
            await promote(app, world, ert=100, window=10, **policy)
            if dataset_after:
                await app.publish(dataset("fin", "ds-2", parent="ds-1", change_kind="data"))
            await eventually(lambda: len(requests.received) == 1, 10, "no dataset request")
            await asyncio.sleep(0.3)
            await shifted_stream(app, world, 60)
            await eventually(lambda: bool(alarms.received), 10, "no drift.detected")  # noqa: B023
            await asyncio.sleep(3 * SETTLE_MS / 1000)
        assert alarms.received[0][0].action == action
        assert len(requests.received) == 1, action
