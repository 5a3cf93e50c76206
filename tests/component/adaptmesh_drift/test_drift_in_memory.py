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
from adaptmesh_schemas.events import RetrainReason, RetrainRequested
from tests.meshtest import eventually
from tests.unit.adaptmesh_drift.builders import dataset, inference

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


async def test_a_skewed_inference_stream_requests_retraining_with_evidence(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path, drift_window_size=40, drift_test_every=1))
    async with running(app) as requests:
        await app.publish(dataset("fin", "ds-1"))
        await eventually(lambda: len(requests.received) == 1, 10, "no request for the dataset")
        await asyncio.sleep(0.3)  # past the cool-down
        for n in range(40):
            await app.publish(inference("fin", "grain", n=n))
        await eventually(lambda: len(requests.received) == 2, 10, "no drift request")
    request, envelope = requests.received[1]
    assert request.reason is RetrainReason.DRIFT
    assert request.dataset_version == "ds-1"
    assert request.evidence is not None
    assert request.evidence.detector == "label-chi2"
    assert request.evidence.p_value is not None
    assert request.evidence.p_value < 0.001
    assert request.evidence.window_size == 40
    assert request.cause_event_ids == (envelope.causationid,)
