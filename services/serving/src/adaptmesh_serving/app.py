"""Wiring: the kit's app, the `model.ready` subscriber, batching and the FastAPI app.

Serving runs through the kit like every service: `MeshApp.run(http=...)` serves the FastAPI
app, whose lifespan is the kit's (`lifespan=mesh.lifespan`), so the broker starts before the
API listens and stops after the last request in hand; what must run exactly while the broker
does (the wait for the start-up read, batching and inference logs) is registered with
`mesh.while_running`. The kit's `MeshApp.asgi()` is not used: FastStream's `AsgiFastStream`
matches routes by exact path, so it cannot host an API with path parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from adaptmesh_kit import ArtifactStore, MeshApp, create_app
from adaptmesh_ml import SharedBaseModels, configure_torch_threads
from adaptmesh_schemas import Stream
from adaptmesh_schemas.events import InferenceLogged, ModelReady
from adaptmesh_schemas.values import ArtifactRef
from adaptmesh_serving.api import ServingRuntime, create_api
from adaptmesh_serving.batching import BatchLimits
from adaptmesh_serving.handlers import ModelReadyHandler
from adaptmesh_serving.heartbeat import ReplicaHeartbeat
from adaptmesh_serving.loading import ModelSource, SeparateModels, SharedBaseSource
from adaptmesh_serving.predictions import PredictionService
from adaptmesh_serving.readiness import StartupRead
from adaptmesh_serving.registry import ModelOrigin, ModelRegistry, Predictor
from adaptmesh_serving.settings import ServingSettings

SERVICE = "serving"
SHUTDOWN_GRACE_SECONDS = 30.0
"""At shutdown, how long requests still queued may take to be answered."""

StoreLoader = Callable[[ArtifactStore, ArtifactRef], Predictor]


@dataclass(frozen=True, slots=True)
class ServingApp:
    """The serving process: the HTTP app (whose lifespan runs the kit's app) and what it
    serves from."""

    http: FastAPI
    mesh: MeshApp
    registry: ModelRegistry
    predictions: PredictionService
    startup_read: StartupRead
    settings: ServingSettings
    models: SharedBaseModels | None
    """The base models and the domains' adapters on them (None when models load whole)."""

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM; then finish requests in hand, publish pending inference
        logs, and stop the broker (the record in hand finishes)."""
        self.mesh.run(
            http=self.http, host=self.settings.serving_host, port=self.settings.serving_port
        )


def batch_limits(settings: ServingSettings) -> BatchLimits:
    """Batching's limits from `MESH_SERVING_*`."""
    return BatchLimits(
        max_batch_size=settings.serving_max_batch_size,
        max_wait_seconds=settings.serving_max_wait_ms / 1000,
        max_queue=settings.serving_max_queue,
        timeout_seconds=settings.serving_request_timeout_ms / 1000,
    )


def build_app(
    settings: ServingSettings,
    *,
    tracer_provider: TracerProvider | None = None,
    artifacts: ArtifactStore | None = None,
    load_model: StoreLoader | None = None,
) -> ServingApp:
    """Wire serving: the `model.ready` subscriber, the registry, batching and the HTTP API.

    Models are adapters on base models loaded once each (`SharedBaseSource`), unless
    `load_model` loads each model whole (tests' fakes).
    """
    mesh = create_app(settings, SERVICE, tracer_provider=tracer_provider, artifacts=artifacts)
    registry = ModelRegistry()
    source: ModelSource
    shared: SharedBaseModels | None = None
    if load_model is None:
        threads = settings.serving_torch_threads or configure_torch_threads()
        shared = SharedBaseModels(
            capacity=settings.serving_max_resident_models,
            threads_per_call=max(1, threads // settings.serving_calls_per_base),
        )
        source = SharedBaseSource(shared, mesh.artifacts)
    else:
        source = SeparateModels(lambda ref: load_model(mesh.artifacts, ref))
    heartbeat = ReplicaHeartbeat(
        registry,
        mesh.publish,
        replica_id=settings.serving_replica_id,
        interval_seconds=settings.serving_status_interval_seconds,
    )
    handler = ModelReadyHandler(
        registry, source, replica_id=settings.serving_replica_id, on_swap=heartbeat.models_changed
    )
    mesh.handles(Stream.MODELS_READY, ModelReady, broadcast=True)(handler)
    mesh.while_running(heartbeat.start, heartbeat.stop)

    async def publish_inference(event: InferenceLogged, origin: ModelOrigin | None) -> object:
        if origin is None:
            return await mesh.publish(event)
        # A model's first prediction continues the chain of the change that produced it.
        return await mesh.publish(
            event, correlation_id=origin.correlation_id, causation_id=origin.event_id
        )

    limits = batch_limits(settings)
    predictions = PredictionService(
        registry,
        tracer=mesh.tracer_provider.get_tracer("adaptmesh_serving"),
        publish=publish_inference,
        sample_rate=settings.serving_inference_sample_rate,
        limits=limits,
        log_texts=settings.serving_log_texts,
        calls_per_base=settings.serving_calls_per_base,
    )

    async def caught_up(within_seconds: float) -> None:
        await mesh.caught_up(Stream.MODELS_READY, within_seconds=within_seconds)

    startup_read = StartupRead(caught_up, mesh.topic(Stream.MODELS_READY))
    mesh.while_running(startup_read.start, startup_read.stop)

    async def nothing_to_start() -> None:
        return None

    async def stop_predicting() -> None:
        # Before the broker stops: the last answers' inference logs can still be published.
        await predictions.close(min(SHUTDOWN_GRACE_SECONDS, limits.timeout_seconds))
        await handler.close()

    mesh.while_running(nothing_to_start, stop_predicting)

    runtime = ServingRuntime(
        registry=registry,
        predictions=predictions,
        is_ready=lambda: startup_read.ready,
        is_healthy=mesh.healthy,
        max_batch=settings.serving_max_batch,
        max_text_chars=settings.serving_max_text_chars,
        max_body_bytes=settings.serving_max_body_bytes,
    )
    http = create_api(runtime, lifespan=mesh.lifespan)
    return ServingApp(http, mesh, registry, predictions, startup_read, settings, shared)
