"""Exactly-once consumption: what a handler publishes and the record's offset, in one Kafka
transaction, written by a producer that a new owner of the partition fences.

The classic Kafka pattern for consume-transform-produce (before KIP-447, which aiokafka's
`send_offsets_to_transaction(offsets, group_id)` does not speak): one transactional producer per
input partition, with a `transactional.id` derived from the group, topic and partition. When a
partition moves, its new owner starts a producer with the same id before it handles any of the
partition's records; `init_transactions` bumps the id's epoch, aborts whatever the old owner
had open and makes every later commit of the old owner fail (`ProducerFenced`). So an instance
that lost a partition while it was busy with a record can no longer publish the outcome, and the
new owner re-handles the record from the last committed offset.

Publishes of a handler are buffered and written after it returns, in one short transaction
(not held open while the handler works: an open transaction holds back every `read_committed`
reader of the topics it writes). Records the handlers skip (types for other consumers) are
committed the ordinary way, on the kit's timer, serialised with the transactions so an older
offset never overwrites a newer one.

All the exactly-once streams of a service are read by one consumer with the range assignor:
partition p of each of them (same partition count) goes to the same instance, so everything
keyed to one domain — e.g. a candidate and a rollback of it — is handled by one owner, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import KafkaError, ProducerFenced
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from adaptmesh_kit._internal.discipline import (
    Defect,
    Discipline,
)
from adaptmesh_kit._internal.idempotency import body_digest
from adaptmesh_kit._internal.offsets import HandledOffsets
from adaptmesh_kit._internal.subscriptions import RecordSubscription
from adaptmesh_kit._internal.tracing import INSTRUMENTATION_NAME
from adaptmesh_kit.handling import Outbox
from adaptmesh_schemas.topics import Stream

log = logging.getLogger(__name__)

# A transaction holds back read_committed readers while open; ours stay open for the few sends
# of one record, so a crashed instance's dangling one should not block them for the broker's
# default minute.
TRANSACTION_TIMEOUT_MS = 15_000
# How long a record waits between attempts to commit its transaction when Kafka fails.
COMMIT_RETRY_SECONDS = 1.0


class PartitionLostError(RuntimeError):
    """The instance no longer owns the partition: another one handles the record."""


def transactional_id(consumer_group: str, topic: str, partition: int) -> str:
    """One id per input partition: its owner's producer, fenced by the next owner's."""
    return f"{consumer_group}.{topic}.{partition}"


class PartitionProducers:
    """The transactional producer of each partition this instance owns.

    Started when the partition is assigned (which fences the previous owner), stopped when it
    is revoked. A record waits for its partition's producer before its handler runs, so a
    handler never works on a record whose previous owner could still publish.
    """

    def __init__(
        self, client_kwargs: Mapping[str, Any], consumer_group: str, client_id: str
    ) -> None:
        # `kafka_client_kwargs(settings)`: where the broker is and how to reach it securely.
        self._client_kwargs = dict(client_kwargs)
        self._consumer_group = consumer_group
        self._client_id = client_id
        self._producers: dict[TopicPartition, asyncio.Task[AIOKafkaProducer]] = {}

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            if tp not in self._producers:
                self._producers[tp] = asyncio.get_running_loop().create_task(self._start(tp))

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            task = self._producers.pop(tp, None)
            if task is not None:
                await self._stop(task)

    async def close(self) -> None:
        tasks = list(self._producers.values())
        self._producers.clear()
        for task in tasks:
            await self._stop(task)

    async def producer_for(self, tp: TopicPartition) -> AIOKafkaProducer:
        """The partition's producer once it has fenced the previous owner."""
        task = self._producers.get(tp)
        if task is None:
            raise PartitionLostError(f"{tp.topic}[{tp.partition}] is not assigned here")
        try:
            return await asyncio.shield(task)
        except KafkaError as error:
            # Starting failed (e.g. the broker is restarting): try again on the next record.
            if self._producers.get(tp) is task:
                del self._producers[tp]
                self.assigned([tp])
            raise error from None

    def replace(self, tp: TopicPartition) -> None:
        """Start the partition's producer afresh (after a fatal error of the old one)."""
        task = self._producers.pop(tp, None)
        if task is not None:
            asyncio.get_running_loop().create_task(self._stop(task))
        self.assigned([tp])

    async def _start(self, tp: TopicPartition) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **self._client_kwargs,
            client_id=f"{self._client_id}-txn-{tp.partition}",
            transactional_id=transactional_id(self._consumer_group, tp.topic, tp.partition),
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
        )
        try:
            await producer.start()  # init_transactions: fences the previous owner
        except BaseException:
            await producer.stop()
            raise
        log.info("fenced earlier owners of %s[%d]", tp.topic, tp.partition)
        return producer

    @staticmethod
    async def _stop(task: asyncio.Task[AIOKafkaProducer]) -> None:
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            producer = await task
            await producer.stop()


@dataclasses.dataclass(frozen=True, slots=True)
class TransactionalStreams:
    """The exactly-once streams of a service: topic -> stream, and the shared machinery."""

    by_topic: Mapping[str, Stream]
    producers: PartitionProducers


class ExactlyOnceConsumer:
    """Hands the records of a service's exactly-once streams to their handlers, one at a time,
    and commits each handled record's outcome and offset in one transaction."""

    def __init__(
        self,
        discipline: Discipline,
        streams: TransactionalStreams,
        tracer_provider: trace.TracerProvider,
    ) -> None:
        self._discipline = discipline
        self._streams = streams
        self._tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME)

    async def consume(self, record: ConsumerRecord[Any, Any], consumer: object) -> None:
        if not isinstance(consumer, AIOKafkaConsumer):
            # FastStream's in-memory test broker: no Kafka to make a transaction with.
            await self._consume_without_kafka(record)
            return
        tp = TopicPartition(record.topic, record.partition)
        try:
            await self._consume(record, consumer, tp)
        except PartitionLostError as lost:
            log.warning(
                "%s[%d]@%d not committed here: %s (its new owner handles it)",
                record.topic,
                record.partition,
                record.offset,
                lost,
            )

    async def _consume(
        self, record: ConsumerRecord[Any, Any], consumer: AIOKafkaConsumer, tp: TopicPartition
    ) -> None:
        discipline = self._discipline
        while True:
            # Before the handler: its work must not start while a previous owner may publish.
            try:
                await self._streams.producers.producer_for(tp)
                break
            except KafkaError as error:
                self._still_owned(consumer, tp)
                log.warning("no transactional producer for %s yet (%s); retrying", tp, error)
                await asyncio.sleep(COMMIT_RETRY_SECONDS)
        outbox = Outbox()
        outcome = await self._handle(record, outbox)
        if outcome is None:
            # Nothing to write: a type for other consumers, or a duplicate. Its offset goes
            # with the next transaction, or on the kit's commit timer.
            discipline.offsets.handled(consumer, record.topic, record.partition, record.offset)
            return
        defect, event_id = outcome
        if defect is not None:
            discipline.dead_letter_into(outbox, record, defect)
        await self._commit(record, consumer, tp, outbox)
        if event_id is not None:
            discipline.processed.remember(
                discipline.consumer_group, event_id, body_digest(record.value)
            )
        # The transaction committed this offset; the timer must not commit an older one later.
        discipline.offsets.handled(consumer, record.topic, record.partition, record.offset)

    async def _handle(
        self, record: ConsumerRecord[Any, Any], outbox: Outbox
    ) -> tuple[Defect | None, str | None] | None:
        """Run the record's handler with its publishes going to `outbox`.

        None: nothing to commit in a transaction. Otherwise (why to dead-letter it, if so; the
        event id to remember once committed).
        """
        discipline = self._discipline
        stream = self._streams.by_topic[record.topic]
        subscription = discipline.subscriptions.of(stream).group
        assert isinstance(subscription, RecordSubscription)  # exactly-once is per record
        checked = discipline.screen(stream, record)
        if isinstance(checked, Defect):
            return checked, None
        envelope = checked
        handler = subscription.handlers.get(envelope.type)
        if handler is None:
            return None  # a known event meant for other consumers of this topic
        handled = discipline.processed.recall(discipline.consumer_group, envelope.id)
        if handled is not None:
            conflict = discipline.repeated(envelope, handled, body_digest(record.value))
            return None if conflict is None else (conflict, None)
        event = discipline.decode(envelope, record.value)
        if isinstance(event, Defect):
            return event, None
        context = dataclasses.replace(discipline.context_for(envelope, record), outbox=outbox)
        return await discipline.run_record_handler(handler, event, context), envelope.id

    async def _commit(
        self,
        record: ConsumerRecord[Any, Any],
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        outbox: Outbox,
    ) -> None:
        """Write the outbox and the record's offset atomically; retried until Kafka takes it,
        unless the partition is lost (then the new owner handles the record)."""
        producers = self._streams.producers
        offsets = {tp: record.offset + 1}
        group = self._discipline.consumer_group
        while True:
            self._still_owned(consumer, tp)
            producer = await producers.producer_for(tp)
            try:
                # No plain commit may run meanwhile: it could land after ours, older.
                async with self._discipline.offsets.exclusive(), producer.transaction():
                    for item in outbox.items:
                        await self._send(producer, item.topic, item.key, item.value, item.headers)
                    await producer.send_offsets_to_transaction(offsets, group)
            except ProducerFenced as fenced:
                raise PartitionLostError(f"fenced by a newer owner ({fenced})") from None
            except KafkaError as error:
                # Only the owner may start a producer with the partition's id: anyone else
                # would fence the owner.
                self._still_owned(consumer, tp)
                log.warning(
                    "transaction for %s[%d]@%d failed (%s); retrying",
                    record.topic,
                    record.partition,
                    record.offset,
                    error,
                )
                # A failed transaction may leave the producer unusable; a fresh one with the
                # same id resumes (and fences nobody but its own predecessor).
                producers.replace(tp)
                await asyncio.sleep(COMMIT_RETRY_SECONDS)
            else:
                return

    async def _send(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        key: bytes,
        value: bytes,
        headers: Mapping[str, str],
    ) -> None:
        # The record's process span is current: the publish is its child, and its traceparent
        # carries the trace on (what FastStream's middleware does for ordinary publishes).
        with self._tracer.start_as_current_span(
            f"{topic} publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": topic,
                "messaging.operation.type": "publish",
            },
        ):
            carrier = dict(headers)
            propagate.inject(carrier)
            await producer.send(
                topic,
                value,
                key=key,
                headers=[(name, text.encode()) for name, text in carrier.items()],
            )

    @staticmethod
    def _still_owned(consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        if tp not in consumer.assignment():
            raise PartitionLostError(f"{tp.topic}[{tp.partition}] was revoked")

    async def _consume_without_kafka(self, record: ConsumerRecord[Any, Any]) -> None:
        outbox = Outbox()
        outcome = await self._handle(record, outbox)
        if outcome is None:
            return
        defect, event_id = outcome
        if defect is not None:
            self._discipline.dead_letter_into(outbox, record, defect)
        await self._discipline.publish_outbox(outbox)
        if event_id is not None:
            self._discipline.processed.remember(
                self._discipline.consumer_group, event_id, body_digest(record.value)
            )


class TransactionalRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Rebalance listener of the exactly-once consumer: commit skipped records' offsets and
    stop the producers of revoked partitions; start (fence) producers for assigned ones."""

    def __init__(self, offsets: HandledOffsets, producers: PartitionProducers) -> None:
        self._offsets = offsets
        self._producers = producers

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._offsets.commit(only=set(revoked))
        await self._producers.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._producers.assigned(assigned)
