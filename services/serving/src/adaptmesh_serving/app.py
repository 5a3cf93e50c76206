"""Wiring: the kit's broker and the FastAPI app in one process.

FastAPI is the ASGI app uvicorn serves; its lifespan starts and stops the kit's `MeshApp`
(`async with mesh`). The kit's own `MeshApp.asgi()` is not used: FastStream's `AsgiFastStream`
matches routes by exact path, so it cannot host an API with path parameters, and FastStream's
FastAPI integration (`faststream.kafka.fastapi.KafkaRouter`) builds a broker of its own instead
of the kit's (dead letters, dedupe, telemetry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from opentelemetry.sdk.trace import TracerProvider

from adaptmesh_kit import ArtifactStore, MeshApp, create_app
from adaptmesh_ml import Classifier
from adaptmesh_schemas import Stream
from adaptmesh_schemas.events import InferenceLogged, ModelReady
from adaptmesh_schemas.values import ArtifactRef
from adaptmesh_serving.api import ServingRuntime, create_api
from adaptmesh_serving.catchup import StartupCatchUp
from adaptmesh_serving.handlers import ModelReadyHandler
from adaptmesh_serving.predictions import PredictionService
from adaptmesh_serving.registry import ModelOrigin, ModelRegistry, Predictor
from adaptmesh_serving.settings import ServingSettings

log = logging.getLogger(__name__)

SERVICE = "serving"
CATCH_UP_POLL_SECONDS = 0.25
SHUTDOWN_GRACE_SECONDS = 30

StoreLoader = Callable[[ArtifactStore, ArtifactRef], Predictor]


@dataclass(frozen=True, slots=True)
class ServingApp:
    """The serving process: the HTTP app (which runs the broker) and what it serves from."""

    http: FastAPI
    mesh: MeshApp
    registry: ModelRegistry
    catch_up: StartupCatchUp
    settings: ServingSettings

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM; then finish requests in hand, publish pending inference
        logs, and stop the broker (the record in hand finishes)."""
        logging.basicConfig(
            level=self.settings.log_level,
            format=f"%(asctime)s {SERVICE} %(levelname)s %(name)s: %(message)s",
        )
        uvicorn.run(
            self.http,
            host=self.settings.serving_host,
            port=self.settings.serving_port,
            log_level=self.settings.log_level.lower(),
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        )


def build_app(
    settings: ServingSettings,
    *,
    tracer_provider: TracerProvider | None = None,
    artifacts: ArtifactStore | None = None,
    load_model: StoreLoader | None = None,
) -> ServingApp:
    """Wire serving: the `model.ready` subscriber, the registry and the HTTP API."""
    mesh = create_app(settings, SERVICE, tracer_provider=tracer_provider, artifacts=artifacts)
    registry = ModelRegistry()
    catch_up = StartupCatchUp()
    load = load_model or Classifier.load
    handler = ModelReadyHandler(registry, lambda ref: load(mesh.artifacts, ref), catch_up)
    mesh.handles(Stream.MODELS_READY, ModelReady, broadcast=True)(handler)

    async def publish_inference(event: InferenceLogged, origin: ModelOrigin | None) -> object:
        if origin is None:
            return await mesh.publish(event)
        # A model's first prediction continues the chain of the change that produced it.
        return await mesh.publish(
            event, correlation_id=origin.correlation_id, causation_id=origin.event_id
        )

    predictions = PredictionService(
        registry,
        tracer=mesh.tracer_provider.get_tracer("adaptmesh_serving"),
        publish=publish_inference,
        sample_rate=settings.serving_inference_sample_rate,
        batch_size=settings.serving_max_batch,
        log_texts=settings.serving_log_texts,
    )
    models_topic = mesh.topic(Stream.MODELS_READY)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with mesh:
            start, end = await _log_bounds(settings.kafka_bootstrap_servers, models_topic)
            catch_up.begin(start, end)
            watcher = asyncio.create_task(
                _watch_catch_up(mesh.broker, models_topic, catch_up, handler)
            )
            try:
                yield
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                await predictions.drain()

    runtime = ServingRuntime(
        registry=registry,
        predictions=predictions,
        is_ready=lambda: catch_up.ready,
        is_healthy=mesh.healthy,
        max_batch=settings.serving_max_batch,
        max_text_chars=settings.serving_max_text_chars,
    )
    return ServingApp(create_api(runtime, lifespan=lifespan), mesh, registry, catch_up, settings)


async def _log_bounds(bootstrap_servers: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """First and next offset of each partition of `topic`, as the log is now."""
    # Subscribed, so `start` waits for the topic's metadata and its partitions are known.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            raise RuntimeError(f"topic {topic} has no partitions (does it exist?)")
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return (
        {tp.partition: offset for tp, offset in starts.items()},
        {tp.partition: offset for tp, offset in ends.items()},
    )


async def _watch_catch_up(
    broker: KafkaBroker, topic: str, catch_up: StartupCatchUp, handler: ModelReadyHandler
) -> None:
    """Feed the subscriber's positions to `catch_up` until it is ready (see catchup.py)."""
    while not catch_up.ready:
        await asyncio.sleep(CATCH_UP_POLL_SECONDS)
        consumer = _consumer_of(broker, topic)
        if consumer is None:
            continue
        positions: dict[int, int] = {}
        for partition in consumer.assignment():
            if partition.topic == topic:
                with contextlib.suppress(Exception):  # not assigned or not positioned yet
                    positions[partition.partition] = await asyncio.wait_for(
                        consumer.position(partition), CATCH_UP_POLL_SECONDS
                    )
        catch_up.observe_positions(positions, handler_busy=handler.busy)
    log.info("start-up read of %s caught up", topic)


def _consumer_of(broker: KafkaBroker, topic: str) -> AIOKafkaConsumer | None:
    """The aiokafka consumer of the broker's subscriber to `topic`, once started."""
    for subscriber in broker.subscribers:
        consumer = getattr(subscriber, "consumer", None)
        if isinstance(consumer, AIOKafkaConsumer) and topic in consumer.subscription():
            return consumer
    return None
