"""`create_app`: the one wiring every service uses.

It builds a FastStream `KafkaBroker` with OpenTelemetry and gives services two verbs:
`@app.handles(stream, EventType, ...)` for typed handlers and `app.publish(event)`. Around each
handler it does what every consumer in the mesh must do, so no service repeats it:

* records too large, with a bad envelope, an unknown type or an invalid body go to
  `mesh.deadletter.v1` with the reason, original bytes and headers and where they came from,
  and the consumer carries on;
* an event already handled by this consumer group (same `ce_id`) is skipped;
* a handler that keeps failing is retried, then dead-lettered;
* offsets are committed only after the handler (and so every publish it awaited) finished;
* events published from a handler carry its correlation id and name it as their cause.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import traceback
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import uvicorn
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from faststream.asgi import AsgiFastStream, make_ping_asgi
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.middlewares import AckPolicy
from opentelemetry.sdk.trace import TracerProvider

from adaptmesh_kit._internal.deadletter import dead_letter_for
from adaptmesh_kit._internal.idempotency import ProcessedLog
from adaptmesh_kit._internal.offsets import CommitOnRevoke, HandledOffsets
from adaptmesh_kit._internal.positions import ReadPositions
from adaptmesh_kit._internal.provisioning import provision_topics
from adaptmesh_kit.artifacts import ArtifactStore
from adaptmesh_kit.settings import MeshSettings
from adaptmesh_kit.telemetry import tracer_provider_from_env
from adaptmesh_kit.topic_ends import log_bounds
from adaptmesh_schemas.envelope import (
    DecodeError,
    Envelope,
    decode_event,
    encode_event,
    read_envelope,
)
from adaptmesh_schemas.topics import Stream, topic_name
from adaptmesh_schemas.versioning import EVENT_TYPES, MeshEvent

log = logging.getLogger(__name__)

EventT = TypeVar("EventT", bound=MeshEvent)
Handler = Callable[[Any, "EventContext"], Awaitable[None]]
HANDLER_RETRY_DELAY_SECONDS = 0.2


class RejectedEvent(Exception):  # noqa: N818  (it names the outcome, not a failure of ours)
    """Raised by a handler for an event that is valid in form but unacceptable in content
    (e.g. a label the taxonomy does not have). It is dead-lettered at once with this reason,
    not retried: retrying cannot make it acceptable."""


@dataclasses.dataclass(frozen=True, slots=True)
class EventContext:
    """What a handler knows about the record it handles, and how it publishes consequences."""

    envelope: Envelope
    topic: str
    partition: int
    offset: int
    app: MeshApp

    async def publish(self, event: MeshEvent, *, event_id: str | None = None) -> Envelope:
        """Publish `event` as a consequence of the event being handled.

        `event_id` fixes its `ce_id` (default: a fresh uuid): derive it from the handled
        event's id and a redelivery republishes the same ids, which consumers drop as seen."""
        return await self.app.publish(
            event,
            correlation_id=self.envelope.correlationid,
            causation_id=self.envelope.id,
            event_id=event_id,
        )


class MeshApp:
    """A service's broker plus the mesh's consumer discipline. Build it with `create_app`."""

    def __init__(
        self,
        settings: MeshSettings,
        service: str,
        tracer_provider: TracerProvider | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        """Defaults: tracing from the `OTEL_*` environment, artifacts at `artifact_root`."""
        tracer_provider = tracer_provider or tracer_provider_from_env(service)
        artifacts = artifacts or ArtifactStore(settings.artifact_root)
        self.settings = settings
        self.service = service
        self.source = f"urn:adaptmesh:service:{service}"
        self.consumer_group = settings.consumer_group or f"adaptmesh.{service}"
        self.tracer_provider = tracer_provider
        self.artifacts = artifacts
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id=f"adaptmesh-{service}",
            middlewares=(KafkaTelemetryMiddleware(tracer_provider=tracer_provider),),
            # `provision_topics` creates topics with their configs before the broker starts, so
            # FastStream's own creation (partitions only) finds them there; with provisioning
            # off the topics are someone else's to create.
            allow_auto_create_topics=settings.provision_topics,
            logger=logging.getLogger(f"adaptmesh.{service}.broker"),
            # FastStream logs every message received and processed; at INFO that costs ~20% of
            # throughput, so those lines only show when the service runs at DEBUG.
            log_level=logging.DEBUG,
            # Handlers here take the raw message (the kit decodes it), so FastStream's
            # dependency injection would only add a thread hop per record.
            apply_types=False,
            graceful_timeout=30.0,
        )
        state = settings.state_dir
        self._processed = ProcessedLog(state / f"{service}.processed.sqlite3" if state else None)
        self._offsets = HandledOffsets(settings.commit_interval_ms / 1000)
        self._handlers: dict[Stream, dict[str, Handler]] = {}
        self._broadcast: dict[Stream, bool] = {}
        self._positions: dict[Stream, ReadPositions] = {}
        self._activities: list[
            tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]
        ] = []
        self._closers: list[Callable[[], Awaitable[None] | None]] = []
        self._started = False

    def topic(self, stream: Stream) -> str:
        return topic_name(stream, self.settings.topic_prefix)

    # -- consuming ----------------------------------------------------------------------------

    def handles(
        self, stream: Stream, *event_types: type[MeshEvent], broadcast: bool = False
    ) -> Callable[
        [Callable[[EventT, EventContext], Awaitable[None]]],
        Callable[[EventT, EventContext], Awaitable[None]],
    ]:
        """Register a handler for `event_types` arriving on `stream`.

        Other known event types on the stream are skipped (they are for other consumers);
        unknown ones are dead-lettered. By default the instances of a service share the
        stream's partitions (one consumer group). With `broadcast=True` every instance reads
        the whole stream from its beginning at each start, without a group, commits or dedupe
        (serving replicas must each know every domain's production model), so such handlers
        must be idempotent; `caught_up(stream)` waits until such a read has reached the end.
        """
        for event_type in event_types:
            if event_type.stream is not stream:
                raise ValueError(
                    f"{event_type.__name__} travels on {event_type.stream}, not {stream}"
                )

        def register(
            handler: Callable[[EventT, EventContext], Awaitable[None]],
        ) -> Callable[[EventT, EventContext], Awaitable[None]]:
            if stream not in self._handlers:
                self._handlers[stream] = {}
                self._broadcast[stream] = broadcast
                if broadcast:
                    self._positions[stream] = ReadPositions()
                self._subscribe(stream)
            elif self._broadcast[stream] != broadcast:
                raise ValueError(f"{stream} is subscribed both broadcast and as a group")
            for event_type in event_types:
                self._handlers[stream][event_type.ce_type()] = handler
            return handler

        return register

    def _subscribe(self, stream: Stream) -> None:
        async def consume(message: KafkaMessage) -> None:
            await self._consume(stream, message.raw_message, message.consumer)

        broadcast = self._broadcast[stream]
        self.broker.subscriber(
            self.topic(stream),
            group_id=None if broadcast else self.consumer_group,
            auto_offset_reset="earliest" if broadcast else self.settings.auto_offset_reset,
            max_poll_interval_ms=self.settings.max_poll_interval_ms,
            ack_policy=AckPolicy.MANUAL,
            listener=None if broadcast else CommitOnRevoke(self._offsets),
            parser=_tolerant_parser,
            decoder=_raw_decoder,
            title=f"{self.service}:{stream.value}",
        )(consume)

    async def _consume(
        self, stream: Stream, record: ConsumerRecord[Any, Any], consumer: Any
    ) -> None:
        outcome = await self._handle_record(stream, record)
        if outcome is not None:
            code, reason = outcome
            await self._dead_letter(record, code, reason)
        if stream in self._positions:
            await self._positions[stream].advance(record.partition, record.offset)
        elif isinstance(consumer, AIOKafkaConsumer):
            self._offsets.handled(consumer, record.topic, record.partition, record.offset)

    async def caught_up(self, stream: Stream, *, within_seconds: float) -> None:
        """Wait until the broadcast subscription to `stream` has consumed every record the
        topic holds now, so a handler can trust a view built from it to be complete.

        Raises `TimeoutError` after `within_seconds`, saying how far behind it still is.
        """
        positions = self._positions.get(stream)
        if positions is None:
            raise ValueError(f"{stream} has no broadcast subscription in {self.service}")
        topic = self.topic(stream)
        bounds = await log_bounds(self.settings.kafka_bootstrap_servers, topic)
        try:
            async with asyncio.timeout(within_seconds):
                await positions.reach(bounds)
        except TimeoutError:
            raise TimeoutError(
                f"{topic} not read to its end within {within_seconds:g}s "
                f"(unread records per partition: {positions.behind(bounds)})"
            ) from None

    async def _handle_record(  # noqa: PLR0911  (one return per way a record can end)
        self, stream: Stream, record: ConsumerRecord[Any, Any]
    ) -> tuple[str, str] | None:
        """Handle one record; returns (reason code, reason) when it must be dead-lettered."""
        value: bytes | None = record.value
        size = len(value) if value else 0
        if size > self.settings.max_event_bytes:
            return "too-large", (
                f"body of {size:,} bytes exceeds the {self.settings.max_event_bytes:,}-byte limit "
                "(MESH_MAX_EVENT_BYTES); put large payloads in the artifact store and send "
                "a reference"
            )
        try:
            envelope = read_envelope(record.headers)
        except DecodeError as error:
            return error.code, str(error)
        event_type = EVENT_TYPES.get(envelope.type)
        if event_type is None:
            return "unknown-type", f"unknown ce_type {envelope.type!r}"
        if event_type.stream is not stream:
            return "wrong-topic", f"{envelope.type} belongs on {self.topic(event_type.stream)}"
        handler = self._handlers[stream].get(envelope.type)
        if handler is None:
            return None  # a known event meant for other consumers of this topic
        broadcast = self._broadcast[stream]
        if not broadcast and self._processed.seen(self.consumer_group, envelope.id):
            log.info("skipping %s %s: already handled", envelope.type, envelope.id)
            return None
        try:
            event = decode_event(envelope, value)
        except DecodeError as error:
            return error.code, str(error)
        context = EventContext(envelope, record.topic, record.partition, record.offset, self)
        outcome = await self._run_handler(handler, event, context)
        if not broadcast:  # handled, rejected or failed for good: a redelivery changes nothing
            self._processed.remember(self.consumer_group, envelope.id)
        return outcome

    async def _run_handler(
        self, handler: Handler, event: MeshEvent, context: EventContext
    ) -> tuple[str, str] | None:
        """Call the handler, retrying failures; a rejection is final at once."""
        for attempt in range(1, self.settings.handler_attempts + 1):
            try:
                await handler(event, context)
            except RejectedEvent as rejection:
                return "rejected", str(rejection)
            except Exception as error:  # noqa: BLE001  (any handler failure has the same fate)
                if attempt == self.settings.handler_attempts:
                    return "handler-error", (
                        f"{type(error).__name__}: {error} (after {attempt} attempts)\n"
                        + "".join(traceback.format_exception(error, limit=-3))
                    )
                log.warning("handler for %s failed (%s), retrying", context.envelope.type, error)
                await asyncio.sleep(HANDLER_RETRY_DELAY_SECONDS * attempt)
            else:
                return None
        return None

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], code: str, reason: str) -> None:
        letter = dead_letter_for(
            record,
            service=self.service,
            consumer_group=self.consumer_group,
            reason_code=code,
            reason=reason,
            artifacts=self.artifacts,
            inline_limit=self.settings.deadletter_inline_bytes,
        )
        log.warning(
            "dead-lettered %s[%d]@%d: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            code,
            reason.splitlines()[0],
        )
        causation = _header(record, "ce_id")
        await self.publish(letter, causation_id=causation, key=record.topic)

    # -- publishing ---------------------------------------------------------------------------

    async def publish(
        self,
        event: MeshEvent,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        event_id: str | None = None,
        key: str | None = None,
    ) -> Envelope:
        """Publish one event and wait until the broker has it."""
        envelope = Envelope.for_event(
            event,
            source=self.source,
            correlation_id=correlation_id,
            causation_id=causation_id,
            event_id=event_id,
        )
        await self._send(event, envelope, key=key, confirm=True)
        return envelope

    async def publish_many(
        self, events: Iterable[MeshEvent], *, correlation_id: str | None = None
    ) -> list[Envelope]:
        """Publish several events pipelined (no round trip each), then wait for all of them."""
        envelopes: list[Envelope] = []
        pending: list[Awaitable[Any]] = []
        for event in events:
            envelope = Envelope.for_event(event, source=self.source, correlation_id=correlation_id)
            future = await self._send(event, envelope, confirm=False)
            if future is not None:  # FastStream's in-memory test broker has nothing to await
                pending.append(future)
            envelopes.append(envelope)
        await asyncio.gather(*pending)
        return envelopes

    async def _send(
        self, event: MeshEvent, envelope: Envelope, *, confirm: bool, key: str | None = None
    ) -> Any:
        """The record: JSON body, CloudEvents headers, keyed by domain unless told otherwise.

        With `confirm` it returns once the broker has the record; without, a future for that.
        """
        return await self.broker.publish(
            encode_event(event),
            self.topic(event.stream),
            key=(key or event.domain).encode(),
            headers=envelope.header_texts(),
            no_confirm=not confirm,
        )

    # -- life cycle ---------------------------------------------------------------------------

    def while_running(
        self,
        start: Callable[[], Awaitable[None]],
        stop: Callable[[], Awaitable[None]],
    ) -> None:
        """Run a background activity (e.g. an outbox relay) exactly while the broker runs:
        `start` after the broker started, `stop` before it stops (so it can still publish).
        Works the same under `async with app:` and `app.run()`."""
        self._activities.append((start, stop))

    def on_close(self, close: Callable[[], Awaitable[None] | None]) -> None:
        """Release a resource (a state file, a cache) after the broker stopped."""
        self._closers.append(close)

    async def start(self) -> None:
        await self._before_broker_starts()
        await self.broker.start()
        await self._after_broker_started()

    async def stop(self) -> None:
        if self._started:
            await self._before_broker_stops()
            await self.broker.stop()
        await self._after_broker_stopped()

    async def _before_broker_starts(self) -> None:
        if self.settings.provision_topics:
            await provision_topics(self.settings)

    async def _after_broker_started(self) -> None:
        self._started = True
        for start, _ in self._activities:
            await start()

    async def _before_broker_stops(self) -> None:
        for _, stop in reversed(self._activities):
            await stop()
        # Committing needs the consumers still alive.
        await self._offsets.close()

    async def _after_broker_stopped(self) -> None:
        self._started = False
        self._processed.close()
        for close in reversed(self._closers):
            result = close()
            if result is not None:
                await result
        self.tracer_provider.force_flush()

    async def __aenter__(self) -> MeshApp:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def healthy(self, within_seconds: float = 5.0) -> bool:
        return await self.broker.ping(within_seconds)

    def asgi(self, *routes: tuple[str, Any]) -> AsgiFastStream:
        """An ASGI app running the broker, with `GET /health` (204 when Kafka answers)."""
        return AsgiFastStream(
            self.broker,
            asgi_routes=[("/health", make_ping_asgi(self.broker, timeout=5.0)), *routes],
            on_startup=[self._before_broker_starts],
            after_startup=[self._after_broker_started],
            on_shutdown=[self._before_broker_stops],
            after_shutdown=[self._after_broker_stopped],
        )

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM, then drain: finish the record in hand and commit."""
        logging.basicConfig(
            level=self.settings.log_level,
            format=f"%(asctime)s {self.service} %(levelname)s %(name)s: %(message)s",
        )
        uvicorn.run(
            self.asgi(),
            host=self.settings.health_host,
            port=self.settings.health_port,
            log_level=self.settings.log_level.lower(),
        )


def create_app(
    settings: MeshSettings,
    service: str,
    *,
    tracer_provider: TracerProvider | None = None,
    artifacts: ArtifactStore | None = None,
) -> MeshApp:
    """Wire a service: broker, telemetry, dead letters, dedupe, commits, health."""
    return MeshApp(settings, service, tracer_provider, artifacts)


async def _tolerant_parser(
    record: ConsumerRecord[Any, Any], original: Callable[..., Awaitable[Any]]
) -> Any:
    """FastStream's parser, minus its crash on non-UTF-8 headers (faststream#2458).

    The parser sees text copies (undecodable bytes replaced); the message keeps the original
    record, whose exact bytes the dead letter preserves.
    """
    try:
        for _, raw in record.headers:
            (raw or b"").decode("utf-8")
    except UnicodeDecodeError:
        readable = tuple(
            (key, (raw or b"").decode("utf-8", "replace").encode()) for key, raw in record.headers
        )
        message = await original(dataclasses.replace(record, headers=readable))
        message.raw_message = record
        return message
    return await original(record)


async def _raw_decoder(message: KafkaMessage, original: Callable[..., Awaitable[Any]]) -> Any:
    """Hand the handler the message itself: the kit decodes bodies, so bad JSON gets a dead
    letter instead of failing inside FastStream."""
    return message


def _header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    for key, raw in record.headers:
        if key == name:
            try:
                return str(raw.decode("utf-8")) or None
            except UnicodeDecodeError:
                return None
    return None
