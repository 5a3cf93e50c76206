"""Wiring: `build_app(settings)` makes the drift-sensing service.

Consumes `mesh.datasets.v1` and `mesh.inference.v1` in the service's consumer group (instances
share domains by partition), reads `mesh.datasets.v1` a second time without a group (every
instance knows every domain's reference distribution), and publishes `retrain.requested` on
`mesh.retrain.v1` from an outbox relay that runs while the broker runs — started and stopped
by `async with app:` as well as by `app.run()`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.middlewares import AckPolicy
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider

from adaptmesh_drift.detectors import build_detectors
from adaptmesh_drift.handlers import DriftHandlers
from adaptmesh_drift.monitor import InferenceMonitor, ReferenceBook
from adaptmesh_drift.outbox import Outbox, PendingRequest
from adaptmesh_drift.relay import OutboxRelay
from adaptmesh_drift.schedule import Clock, RetrainScheduler
from adaptmesh_drift.settings import DriftSettings
from adaptmesh_kit import ArtifactStore, MeshApp
from adaptmesh_schemas import Stream
from adaptmesh_schemas.events import DatasetVersioned, InferenceLogged

SERVICE = "drift-sensing"


class DriftSensingApp(MeshApp):
    """The kit's app plus the outbox relay, which runs exactly while the broker runs."""

    def __init__(
        self,
        settings: DriftSettings,
        *,
        clock: Clock = time.time,
        tracer_provider: TracerProvider | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        super().__init__(settings, SERVICE, tracer_provider, artifacts)
        state = settings.state_dir
        self.outbox = Outbox(state / f"{SERVICE}.outbox.sqlite3" if state else None)
        self.scheduler = RetrainScheduler(self.outbox, settings.timing(), clock)
        # Without a state dir the outbox dies with the process: publish what is pending on the
        # way down rather than lose it (the offsets of its causes are already committed).
        self.relay = OutboxRelay(
            self.scheduler, self._publish_pending, flush_on_stop=not self.outbox.durable
        )
        # The relay runs exactly while the broker runs; it stops before the broker so that it
        # can still publish (and flush).
        self.while_running(self._start_relay, self.relay.stop)
        self.on_close(self.outbox.close)

    async def _publish_pending(self, pending: PendingRequest) -> None:
        # Published outside the handler that made it: attach the consumed record's trace
        # context so the request (and training after it) stays in the change's trace.
        token = otel_context.attach(propagate.extract(pending.trace_context))
        try:
            await self.publish(
                pending.request,
                correlation_id=pending.correlation_id,
                causation_id=pending.causation_id,
                event_id=pending.request_id,
            )
        finally:
            otel_context.detach(token)

    async def _start_relay(self) -> None:
        self.relay.start()


def build_app(
    settings: DriftSettings,
    *,
    clock: Clock = time.time,
    tracer_provider: TracerProvider | None = None,
    artifacts: ArtifactStore | None = None,
) -> DriftSensingApp:
    """The drift-sensing service, ready for `async with app:` or `app.run()`."""
    app = DriftSensingApp(
        settings, clock=clock, tracer_provider=tracer_provider, artifacts=artifacts
    )
    handlers = DriftHandlers(
        app.scheduler,
        InferenceMonitor(
            build_detectors(settings.drift_detectors, settings.thresholds()),
            settings.drift_window_size,
            settings.drift_test_every,
        ),
        ReferenceBook(),
        wake_relay=app.relay.wake,
        max_event_bytes=settings.max_event_bytes,
    )
    app.handles(Stream.DATASETS, DatasetVersioned)(handlers.on_dataset_versioned)
    app.handles(Stream.INFERENCE, InferenceLogged)(handlers.on_inference_logged)
    app.broker.subscriber(
        app.topic(Stream.DATASETS),
        group_id=None,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
        decoder=_the_message_itself,
        title=f"{SERVICE}:{Stream.DATASETS.value}:references",
    )(handlers.follow_dataset_versions)
    return app


async def _the_message_itself(message: Any, original: Callable[..., Awaitable[Any]]) -> Any:
    """The follower reads headers and bytes itself (like the kit's handlers do)."""
    return message
