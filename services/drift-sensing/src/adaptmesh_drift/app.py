"""Wiring: `build_app(settings)` makes the drift-sensing service.

Consumes `mesh.datasets.v1` (explicit changes), `mesh.inference.v1` and `mesh.feedback.v1` (in
batches) in the service's consumer group — instances share domains by partition — and reads
`mesh.datasets.v1` and `mesh.models.ready.v1` by broadcast, so every instance knows every
domain's dataset versions and production model. Publishes `drift.detected` on `mesh.drift.v1`
from the batch handlers and `retrain.requested` on `mesh.retrain.v1` from an outbox relay that
runs while the broker runs — started and stopped by `async with app:` and by `app.run()`.
"""

from __future__ import annotations

import time

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider

from adaptmesh_drift.handlers import DriftHandlers
from adaptmesh_drift.monitor import DatasetBook, DriftMonitor
from adaptmesh_drift.outbox import Outbox, PendingRequest
from adaptmesh_drift.relay import OutboxRelay
from adaptmesh_drift.schedule import Clock, RetrainScheduler
from adaptmesh_drift.settings import DriftSettings
from adaptmesh_drift.state import DriftState
from adaptmesh_kit import ArtifactStore, MeshApp
from adaptmesh_schemas import Stream
from adaptmesh_schemas.documents import ReferenceProfile
from adaptmesh_schemas.events import (
    DatasetVersioned,
    FeedbackSubmitted,
    InferenceLogged,
    ModelReady,
)

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
        self.handlers: DriftHandlers | None = None

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
    state_dir = settings.state_dir
    state = DriftState(state_dir / f"{SERVICE}.detectors.sqlite3" if state_dir else None)
    app.on_close(state.close)
    monitor = DriftMonitor(
        settings.drift_detectors,
        state,
        lambda ref: app.artifacts.get_document(ref, ReferenceProfile),
        sample_size=settings.drift_label_sample_size,
    )
    handlers = DriftHandlers(
        app,
        settings,
        app.scheduler,
        monitor,
        DatasetBook(),
        wake_relay=app.relay.wake,
        clock=clock,
    )
    app.handlers = handlers
    # Explicit changes by partition (one request per version, whoever owns the domain)...
    app.handles(Stream.DATASETS, DatasetVersioned)(handlers.on_dataset_versioned)
    # ...and every version of every domain by broadcast: a domain's inference partition may
    # belong to another instance than its dataset partition.
    app.handles(Stream.DATASETS, DatasetVersioned, broadcast=True)(handlers.follow_dataset_version)
    app.handles(Stream.MODELS_READY, ModelReady, broadcast=True)(handlers.follow_model_ready)
    batch = settings.drift_batch_max_records
    app.handles_batch(Stream.INFERENCE, InferenceLogged, max_records=batch)(
        handlers.on_inference_batch
    )
    app.handles_batch(Stream.FEEDBACK, FeedbackSubmitted, max_records=batch)(
        handlers.on_feedback_batch
    )
    return app
