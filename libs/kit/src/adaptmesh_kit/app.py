"""`create_app`: the one wiring every service uses.

It builds a FastStream `KafkaBroker` with OpenTelemetry and gives services three verbs:
`@app.handles(stream, EventType, ...)` for typed handlers of single records,
`@app.handles_batch(stream, EventType, ...)` for handlers of fetched batches, and
`app.publish(event)`. Around each handler it does what every consumer in the mesh must do, so no
service repeats it:

* records too large, with a bad envelope, an unknown type or an invalid body go to
  `mesh.deadletter.v1` with the reason, original bytes and headers and where they came from,
  and the consumer carries on;
* an event already handled by this consumer group (same `ce_id`, same body) is skipped; a
  record reusing a handled `ce_id` with another body is dead-lettered as `conflict`;
* a handler that keeps failing is retried, then dead-lettered;
* offsets are committed only after the handler (and so every publish it awaited) finished;
* events published from a handler carry its correlation id and name it as their cause;
* on the streams a service names `exactly_once`, what a handler publishes and the record's
  offset are committed in one Kafka transaction, by a producer the partition's next owner
  fences (`_internal/transactions.py`);
* every subscription reads `read_committed`: records of aborted transactions never arrive.

The consuming itself lives in `_internal/`: `records.py` and `batches.py` (the two ways a
subscription hands records to handlers), `subscriptions.py` (which subscriptions a stream may
have), `discipline.py` (what they all do alike) and `tracing.py` (their spans).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from typing import Any, TypeVar

import uvicorn
from aiokafka import ConsumerRecord
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from faststream.asgi import AsgiFastStream, make_ping_asgi
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from faststream.middlewares import AckPolicy
from opentelemetry.sdk.trace import TracerProvider

from adaptmesh_kit._internal.batches import BatchConsumer
from adaptmesh_kit._internal.deadletter import causation_of, dead_letter_for
from adaptmesh_kit._internal.discipline import Defect, Discipline
from adaptmesh_kit._internal.heap import freeze_startup_heap
from adaptmesh_kit._internal.hosting import ASGIApp, requiring_lifespan
from adaptmesh_kit._internal.idempotency import ProcessedLog
from adaptmesh_kit._internal.offsets import CommitOnRevoke, HandledOffsets
from adaptmesh_kit._internal.parsing import batch_message, header, raw_decoder, tolerant_parser
from adaptmesh_kit._internal.provisioning import provision_topics
from adaptmesh_kit._internal.records import RecordConsumer
from adaptmesh_kit._internal.subscriptions import (
    BatchSubscription,
    RecordSubscription,
    Subscriptions,
)
from adaptmesh_kit._internal.tracing import BatchSpans, telemetry_middleware
from adaptmesh_kit._internal.transactions import (
    ExactlyOnceConsumer,
    PartitionProducers,
    TransactionalRebalance,
    TransactionalStreams,
)
from adaptmesh_kit.artifacts import ArtifactStore
from adaptmesh_kit.handling import (
    BatchHandler,
    Delivery,
    EventContext,
    EventT,
    Handler,
    Outbox,
    OutboxItem,
    RejectedEvent,
)
from adaptmesh_kit.kafka_security import kafka_client_kwargs, kafka_security
from adaptmesh_kit.settings import MeshSettings
from adaptmesh_kit.telemetry import tracer_provider_from_env
from adaptmesh_kit.topic_ends import log_bounds
from adaptmesh_schemas.envelope import Envelope, encode_event
from adaptmesh_schemas.topics import Stream, topic_name
from adaptmesh_schemas.versioning import MeshEvent

__all__ = [
    "BatchHandler",
    "Delivery",
    "EventContext",
    "Handler",
    "MeshApp",
    "RejectedEvent",
    "create_app",
]

log = logging.getLogger(__name__)

# Every member of a consumer group must offer a common assignor. The exactly-once subscriber
# needs the range assignor (it keeps partition p of several topics together), so every group
# subscriber offers it first; round robin, aiokafka's default, is offered too so that members
# still running an older kit can share the group while instances are replaced one by one.
GROUP_ASSIGNORS = (RangePartitionAssignor, RoundRobinPartitionAssignor)

BatchHandlerT = TypeVar("BatchHandlerT", bound=BatchHandler)

HEALTH_TIMEOUT_SECONDS = 5.0
"""`/health` is 204 when Kafka answers a ping within this long."""
HTTP_GRACEFUL_SHUTDOWN_SECONDS = 30
"""At SIGTERM, how long a hosted HTTP app's requests in hand may take to finish."""


class MeshApp:
    """A service's broker plus the mesh's consumer discipline. Build it with `create_app`."""

    def __init__(
        self,
        settings: MeshSettings,
        service: str,
        tracer_provider: TracerProvider | None = None,
        artifacts: ArtifactStore | None = None,
        exactly_once: Collection[Stream] = (),
    ) -> None:
        """Defaults: tracing from the `OTEL_*` environment, artifacts at `artifact_root` (and
        `artifact_roots` per residency)."""
        tracer_provider = tracer_provider or tracer_provider_from_env(service)
        artifacts = artifacts or ArtifactStore(
            settings.artifact_root, residency_roots=settings.artifact_roots
        )
        self.settings = settings
        self.service = service
        self.source = f"urn:adaptmesh:service:{service}"
        self.consumer_group = settings.consumer_group or f"adaptmesh.{service}"
        self.tracer_provider = tracer_provider
        self.artifacts = artifacts
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            security=kafka_security(settings),
            client_id=f"adaptmesh-{service}",
            # FastStream's Kafka telemetry for publishes and single records; batches get their
            # span from the kit (see _internal/tracing.py).
            middlewares=(telemetry_middleware(tracer_provider),),
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
        self._subscriptions = Subscriptions()
        self._discipline = Discipline(
            settings=settings,
            consumer_group=self.consumer_group,
            subscriptions=self._subscriptions,
            processed=self._processed,
            offsets=self._offsets,
            topic_of=self.topic,
            dead_letter=self._dead_letter,
            context_for=self._context_for,
            letter_for=self._letter_for,
            write_outbox=self._write_outbox,
        )
        self._batch_spans = BatchSpans(tracer_provider, self.consumer_group)
        self._activities: list[
            tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]
        ] = []
        self._closers: list[Callable[[], Awaitable[None] | None]] = []
        self._started = False
        self._exactly_once = frozenset(exactly_once)
        self._producers = PartitionProducers(
            kafka_client_kwargs(settings), self.consumer_group, f"adaptmesh-{service}"
        )
        if self._exactly_once:
            self._subscribe_exactly_once()

    def topic(self, stream: Stream) -> str:
        return topic_name(stream, self.settings.topic_prefix)

    # -- consuming ----------------------------------------------------------------------------

    def handles(
        self, stream: Stream, *event_types: type[MeshEvent], broadcast: bool = False
    ) -> Callable[
        [Callable[[EventT, EventContext], Awaitable[None]]],
        Callable[[EventT, EventContext], Awaitable[None]],
    ]:
        """Register a handler for `event_types` arriving on `stream`, one record at a time.

        Other known event types on the stream are skipped (they are for other consumers);
        unknown ones are dead-lettered. By default the instances of a service share the
        stream's partitions (one consumer group). With `broadcast=True` every instance reads
        the whole stream from its beginning at each start, without a group, commits or dedupe
        (serving replicas must each know every domain's production model), so such handlers
        must be idempotent; `caught_up(stream)` waits until such a read has reached the end.

        A stream may have both: group handlers (these, or one `handles_batch` handler) and
        broadcast handlers, each kind with its own subscriber, handlers and types (the same
        type may be in both). Then a bad record (too large, bad envelope, unknown type,
        invalid body — also of a type only the broadcast handlers take) is dead-lettered once,
        by the group subscription; the broadcast one logs it at DEBUG and moves on, as it
        would otherwise be dead-lettered again by every instance. A handler that rejects a
        record or keeps failing on it dead-letters it in either kind. A broadcast-only stream
        dead-letters its bad records itself.

        On a stream the service named in `create_app(..., exactly_once=...)`, the group
        handlers are exactly-once: what they publish is written after they return, in one
        Kafka transaction with the record's offset (and a dead letter, if the record is
        rejected); an instance that lost the partition meanwhile is fenced and writes nothing.
        """
        self._check_types(stream, event_types)
        if stream in self._exactly_once and broadcast:
            raise ValueError(f"{stream} is exactly-once: broadcast handlers cannot be on it")

        def register(
            handler: Callable[[EventT, EventContext], Awaitable[None]],
        ) -> Callable[[EventT, EventContext], Awaitable[None]]:
            created = self._subscriptions.add_record_handler(
                stream, [t.ce_type() for t in event_types], handler, broadcast=broadcast
            )
            # Exactly-once streams share the one subscriber made in __init__.
            if created is not None and stream not in self._exactly_once:
                self._subscribe_records(stream, created, broadcast=broadcast)
            return handler

        return register

    def handles_batch(
        self,
        stream: Stream,
        *event_types: type[MeshEvent],
        max_records: int = 500,
        max_wait_ms: int = 100,
    ) -> Callable[[BatchHandlerT], BatchHandlerT]:
        """Register one handler for the batches of `event_types` the consumer group fetches
        from `stream`: up to `max_records` at a time, waiting up to `max_wait_ms` when none
        are there (a batch is what has arrived, never held back to fill up).

        Each record of a batch is checked as `handles` checks one, and each bad record is
        dead-lettered on its own; the handler gets the valid records not handled before, as
        `Delivery`s (event and context) in log order, in one call. It may return some of them
        with a reason, `[(delivery, reason), ...]`: those are dead-lettered as `rejected`, the
        rest count as handled. Raising `RejectedEvent` rejects the whole batch; any other
        exception retries the whole batch (`handler_attempts` times), then dead-letters every
        record of it as `handler-error`. So a handler's effects must be safe to repeat for
        the records of a retried batch. Once the handler has finished, every record of the
        batch counts as handled (its offset can be committed, its id is remembered).

        Each batch gets one span, `<topic> process`, linked to the trace of every record
        (OpenTelemetry's batch processing; the kit's own tracer provider allows 1000 links a
        span unless `OTEL_SPAN_LINK_COUNT_LIMIT` says otherwise); the handler runs inside
        it, so what it publishes is part of that trace, not of its records' traces (they are
        linked). A stream on a change's causal path that must keep one trace per change stays
        with `handles`.

        A stream has one group subscription: a batch handler cannot share it with `handles`
        handlers of the group, nor with a second batch handler (take all the types in one).
        It can have broadcast handlers beside it (see `handles`).
        """
        self._check_types(stream, event_types)
        if stream in self._exactly_once:
            raise ValueError(f"{stream} is exactly-once: its handlers take one record at a time")
        if not event_types:
            raise ValueError("handles_batch needs at least one event type")
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, not {max_records}")
        if max_wait_ms < 1:
            # FastStream pauses that long after an empty fetch: 0 would poll in a busy loop.
            raise ValueError(f"max_wait_ms must be at least 1, not {max_wait_ms}")

        def register(handler: BatchHandlerT) -> BatchHandlerT:
            subscription = BatchSubscription(
                handler=handler,
                event_types=frozenset(t.ce_type() for t in event_types),
                max_records=max_records,
                max_wait_ms=max_wait_ms,
            )
            self._subscriptions.add_batch_handler(stream, subscription)
            self._subscribe_batches(stream, subscription)
            return handler

        return register

    @staticmethod
    def _check_types(stream: Stream, event_types: tuple[type[MeshEvent], ...]) -> None:
        for event_type in event_types:
            if event_type.stream is not stream:
                raise ValueError(
                    f"{event_type.__name__} travels on {event_type.stream}, not {stream}"
                )

    def _subscribe_records(
        self, stream: Stream, subscription: RecordSubscription, *, broadcast: bool
    ) -> None:
        consumer = RecordConsumer(self._discipline, stream, subscription, broadcast=broadcast)

        async def consume(message: KafkaMessage) -> None:
            await consumer.consume(message.raw_message, message.consumer)

        self.broker.subscriber(
            self.topic(stream),
            group_id=None if broadcast else self.consumer_group,
            auto_offset_reset="earliest" if broadcast else self.settings.auto_offset_reset,
            max_poll_interval_ms=self.settings.max_poll_interval_ms,
            isolation_level="read_committed",
            partition_assignment_strategy=GROUP_ASSIGNORS,
            ack_policy=AckPolicy.MANUAL,
            listener=None if broadcast else CommitOnRevoke(self._offsets),
            parser=tolerant_parser,
            decoder=raw_decoder,
            # Titles name subscribers apart: a stream may have a group and a broadcast one.
            title=f"{self.service}:{stream.value}" + (":broadcast" if broadcast else ""),
        )(consume)

    def _subscribe_batches(self, stream: Stream, subscription: BatchSubscription) -> None:
        consumer = BatchConsumer(self._discipline, stream, subscription, self._batch_spans)
        subscriber = self.broker.subscriber(
            self.topic(stream),
            batch=True,
            max_records=subscription.max_records,
            batch_timeout_ms=subscription.max_wait_ms,
            group_id=self.consumer_group,
            auto_offset_reset=self.settings.auto_offset_reset,
            max_poll_interval_ms=self.settings.max_poll_interval_ms,
            isolation_level="read_committed",
            partition_assignment_strategy=GROUP_ASSIGNORS,
            ack_policy=AckPolicy.MANUAL,
            listener=CommitOnRevoke(self._offsets),
            parser=batch_message,
            decoder=raw_decoder,
            title=f"{self.service}:{stream.value}",
        )

        async def consume(message: KafkaMessage) -> None:
            # The subscriber's consumer fetched the batch: it commits the batch's offsets.
            await consumer.consume(message.raw_message, subscriber.consumer)

        subscriber(consume)

    def _subscribe_exactly_once(self) -> None:
        """One group subscriber for every exactly-once stream: with the range assignor and
        equal partition counts, partition p of each goes to the same instance."""
        by_topic = {self.topic(stream): stream for stream in sorted(self._exactly_once)}
        streams = TransactionalStreams(by_topic=by_topic, producers=self._producers)
        consumer = ExactlyOnceConsumer(self._discipline, streams, self.tracer_provider)

        async def consume(message: KafkaMessage) -> None:
            await consumer.consume(message.raw_message, message.consumer)

        self.broker.subscriber(
            *by_topic,
            group_id=self.consumer_group,
            auto_offset_reset=self.settings.auto_offset_reset,
            max_poll_interval_ms=self.settings.max_poll_interval_ms,
            isolation_level="read_committed",
            partition_assignment_strategy=(RangePartitionAssignor,),
            ack_policy=AckPolicy.MANUAL,
            listener=TransactionalRebalance(self._offsets, self._producers),
            parser=tolerant_parser,
            decoder=raw_decoder,
            title=f"{self.service}:exactly-once",
        )(consume)

    def _context_for(self, envelope: Envelope, record: ConsumerRecord[Any, Any]) -> EventContext:
        return EventContext(envelope, record.topic, record.partition, record.offset, self)

    async def caught_up(self, stream: Stream, *, within_seconds: float) -> None:
        """Wait until the broadcast subscription to `stream` has consumed every record the
        topic holds now, so a handler can trust a view built from it to be complete.

        Raises `TimeoutError` after `within_seconds`, saying how far behind it still is.
        """
        positions = self._subscriptions.of(stream).positions
        if positions is None:
            raise ValueError(f"{stream} has no broadcast subscription in {self.service}")
        topic = self.topic(stream)
        bounds = await log_bounds(self.settings, topic)
        try:
            async with asyncio.timeout(within_seconds):
                await positions.reach(bounds)
        except TimeoutError:
            raise TimeoutError(
                f"{topic} not read to its end within {within_seconds:g}s "
                f"(unread records per partition: {positions.behind(bounds)})"
            ) from None

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], defect: Defect) -> None:
        await self._write_outbox(Outbox([self._letter_for(record, defect)]))

    def _letter_for(self, record: ConsumerRecord[Any, Any], defect: Defect) -> OutboxItem:
        """The dead letter of `record`, as the record to write."""
        letter = dead_letter_for(
            record,
            service=self.service,
            consumer_group=self.consumer_group,
            reason_code=defect.code,
            reason=defect.reason,
            artifacts=self.artifacts,
            inline_limit=self.settings.deadletter_inline_bytes,
        )
        log.warning(
            "dead-lettered %s[%d]@%d: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            defect.code,
            letter.reason.splitlines()[0],
        )
        envelope = self.envelope_for(letter, causation_id=causation_of(header(record, "ce_id")))
        return self.record_for(letter, envelope, key=record.topic)

    async def _write_outbox(self, outbox: Outbox) -> None:
        """Write an outbox's records one by one, each confirmed (no transaction)."""
        for item in outbox.items:
            await self.broker.publish(
                item.value, item.topic, key=item.key, headers=item.headers, no_confirm=False
            )

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
        envelope = self.envelope_for(
            event, correlation_id=correlation_id, causation_id=causation_id, event_id=event_id
        )
        await self._send(event, envelope, key=key, confirm=True)
        return envelope

    def envelope_for(
        self,
        event: MeshEvent,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        event_id: str | None = None,
    ) -> Envelope:
        """The CloudEvents envelope this service gives `event`."""
        return Envelope.for_event(
            event,
            source=self.source,
            correlation_id=correlation_id,
            causation_id=causation_id,
            event_id=event_id,
        )

    def record_for(
        self, event: MeshEvent, envelope: Envelope, *, key: str | None = None
    ) -> OutboxItem:
        """The Kafka record of `event`: its stream's topic, keyed by domain unless told
        otherwise, JSON body, CloudEvents headers."""
        return OutboxItem(
            topic=self.topic(event.stream),
            key=(key or event.domain).encode(),
            value=encode_event(event),
            headers=envelope.header_texts(),
        )

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
        record = self.record_for(event, envelope, key=key)
        return await self.broker.publish(
            record.value,
            record.topic,
            key=record.key,
            headers=record.headers,
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
        if self.settings.freeze_startup_heap:
            freeze_startup_heap()
        for start, _ in self._activities:
            await start()

    async def _before_broker_stops(self) -> None:
        for _, stop in reversed(self._activities):
            await stop()
        # Committing needs the consumers still alive.
        await self._offsets.close()

    async def _after_broker_stopped(self) -> None:
        self._started = False
        await self._producers.close()
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

    @contextlib.asynccontextmanager
    async def lifespan(self, _http: object = None) -> AsyncIterator[None]:
        """The app running for the body of an `async with`, as `async with app:` does.

        Shaped as an ASGI framework's lifespan, so an HTTP app the service hosts runs the
        service: `FastAPI(lifespan=app.lifespan)` (the argument, the HTTP app, is ignored), or
        `async with app.lifespan(): yield` inside a lifespan of its own. Work of the service's
        own that must run exactly while the broker does goes in `while_running`.
        """
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    @property
    def running(self) -> bool:
        """Whether the broker has started and not yet stopped."""
        return self._started

    async def healthy(self, within_seconds: float = HEALTH_TIMEOUT_SECONDS) -> bool:
        """Whether Kafka answers a ping within `within_seconds`: what `/health` reports."""
        return await self.broker.ping(within_seconds)

    def health_asgi(self) -> Any:
        """`GET /health` as every service answers it (204 when Kafka answers within 5 s, 500
        when not), as an ASGI app a hosted HTTP app can route to, e.g. Starlette's or
        FastAPI's `http.add_route("/health", app.health_asgi())`."""
        return make_ping_asgi(self.broker, timeout=HEALTH_TIMEOUT_SECONDS)

    def asgi(self, *routes: tuple[str, Any]) -> AsgiFastStream:
        """An ASGI app running the broker, with `GET /health` (204 when Kafka answers)."""
        return AsgiFastStream(
            self.broker,
            asgi_routes=[("/health", self.health_asgi()), *routes],
            on_startup=[self._before_broker_starts],
            after_startup=[self._after_broker_started],
            on_shutdown=[self._before_broker_stops],
            after_shutdown=[self._after_broker_stopped],
        )

    def run(
        self, http: ASGIApp | None = None, *, host: str | None = None, port: int | None = None
    ) -> None:
        """Serve until SIGINT/SIGTERM, then drain: finish the record in hand and commit.

        Without `http`, the kit's own ASGI app (`asgi()`: `/health`) listens on
        `health_host:health_port`. With `http`, that ASGI app listens instead, on `host:port`
        (default: the health ones); its lifespan must run this app (`lifespan=app.lifespan`),
        or start-up fails saying so. At SIGTERM the server stops accepting, lets requests in
        hand finish (up to `HTTP_GRACEFUL_SHUTDOWN_SECONDS`), then the lifespan stops the
        service: `while_running` activities, then the broker (the record in hand finishes).
        """
        logging.basicConfig(
            level=self.settings.log_level,
            format=f"%(asctime)s {self.service} %(levelname)s %(name)s: %(message)s",
        )
        if http is None:
            uvicorn.run(
                self.asgi(),
                host=self.settings.health_host,
                port=self.settings.health_port,
                log_level=self.settings.log_level.lower(),
            )
            return
        uvicorn.run(
            requiring_lifespan(http, lambda: self.running, self.service),
            host=self.settings.health_host if host is None else host,
            port=self.settings.health_port if port is None else port,
            log_level=self.settings.log_level.lower(),
            lifespan="on",
            timeout_graceful_shutdown=HTTP_GRACEFUL_SHUTDOWN_SECONDS,
        )


def create_app(
    settings: MeshSettings,
    service: str,
    *,
    tracer_provider: TracerProvider | None = None,
    artifacts: ArtifactStore | None = None,
    exactly_once: Collection[Stream] = (),
) -> MeshApp:
    """Wire a service: broker, telemetry, dead letters, dedupe, commits, health.

    `exactly_once`: streams whose group handlers commit what they publish together with the
    record's offset, in one Kafka transaction (see `MeshApp.handles`). They must have equal
    partition counts (the kit provisions them so): one instance owns partition p of all.
    """
    return MeshApp(settings, service, tracer_provider, artifacts, exactly_once)
