"""Spans for consuming, per record (FastStream's middleware) and per batch (the kit's own).

FastStream's `KafkaTelemetryMiddleware` gives a record its `<topic> process` span as a child of
the trace in the record's `traceparent`, and every publish its producer spans; the kit keeps it
for that. For a batch it does not follow the OpenTelemetry messaging conventions: it makes two
consumer spans per batch (a `<topic> create` span holding the links, then `<topic> process` as
its child, without links), and links only records that carry FastStream's own `correlation_id`
header, one link per correlation id, so records from any other producer are not linked at all.
So batches are left out of the middleware here, and the kit makes the one span a batch gets:
`<topic> process`, kind CONSUMER, a new trace, linked to the creation context of every record
(its W3C `traceparent`). Handlers run with it current, so what they publish is its descendant.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka.opentelemetry.provider import telemetry_attributes_provider_factory
from faststream.kafka.response import KafkaPublishCommand
from faststream.opentelemetry import TelemetryMiddleware
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind

INSTRUMENTATION_NAME = "adaptmesh_kit"

# OpenTelemetry messaging semantic conventions (the consumer side of a batch).
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_DESTINATION_NAME = "messaging.destination.name"
MESSAGING_DESTINATION_PARTITION_ID = "messaging.destination.partition.id"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_BATCH_MESSAGE_COUNT = "messaging.batch.message_count"
MESSAGING_CONSUMER_GROUP_NAME = "messaging.consumer.group.name"


def telemetry_middleware(
    tracer_provider: trace.TracerProvider,
) -> TelemetryMiddleware[KafkaPublishCommand]:
    """FastStream's Kafka telemetry (what `KafkaTelemetryMiddleware` builds), for publishes
    and single records only: a batch gets its span from `BatchSpans`."""
    return TelemetryMiddleware[KafkaPublishCommand](
        settings_provider_factory=_records_and_publishes,
        tracer_provider=tracer_provider,
        include_messages_counters=True,
    )


def _records_and_publishes(message: Any) -> Any:
    # FastStream hands the factory what it consumes (a record, or a batch as a sequence of
    # them) or None for a publish; no settings provider means no spans and no metrics.
    if isinstance(message, Sequence):
        return None
    return telemetry_attributes_provider_factory(message)


def creation_context(
    record: ConsumerRecord[Any, Any], fields: frozenset[str] | None = None
) -> SpanContext | None:
    """The span context the record's producer sent along (its `traceparent`), if valid.

    `fields`: the headers the configured propagator reads (`traceparent`, `tracestate`, ...),
    when the caller has them at hand already."""
    fields = fields if fields is not None else frozenset(propagate.get_global_textmap().fields)
    # One pass over the headers into the propagator's text carrier (it would scan them once
    # per field it reads).
    carrier: dict[str, str] = {}
    for key, raw in record.headers:
        if key in fields and raw is not None:
            try:
                carrier[key] = raw.decode("ascii")
            except UnicodeDecodeError:
                continue
    if not carrier:
        return None
    span_context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    return span_context if span_context.is_valid else None


class BatchSpans:
    """Makes the one `process` span of each batch a subscription consumes."""

    def __init__(self, tracer_provider: trace.TracerProvider, consumer_group: str) -> None:
        self._tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME)
        self._consumer_group = consumer_group

    @contextmanager
    def process(self, topic: str, records: Sequence[ConsumerRecord[Any, Any]]) -> Iterator[Span]:
        """A current span for processing `records` of `topic`, linked to each one's trace."""
        fields = frozenset(propagate.get_global_textmap().fields)
        links = [
            Link(span_context)
            for record in records
            if (span_context := creation_context(record, fields)) is not None
        ]
        attributes: dict[str, str | int] = {
            MESSAGING_SYSTEM: "kafka",
            MESSAGING_DESTINATION_NAME: topic,
            MESSAGING_OPERATION_TYPE: "process",
            MESSAGING_OPERATION_NAME: "process",
            MESSAGING_BATCH_MESSAGE_COUNT: len(records),
            MESSAGING_CONSUMER_GROUP_NAME: self._consumer_group,
        }
        partitions = {record.partition for record in records}
        if len(partitions) == 1:
            attributes[MESSAGING_DESTINATION_PARTITION_ID] = str(partitions.pop())
        # An empty parent context: a batch's records belong to many traces, none of them its
        # parent (the conventions' batch processing: links, not a parent).
        with self._tracer.start_as_current_span(
            f"{topic} process",
            context=Context(),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        ) as span:
            yield span
