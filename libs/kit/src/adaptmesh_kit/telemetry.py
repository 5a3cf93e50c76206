"""OpenTelemetry tracing configured by the standard `OTEL_*` variables.

Spans go to an OTLP/HTTP collector (Jaeger all-in-one takes OTLP on :4318) when
`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, or when
`OTEL_TRACES_EXPORTER=otlp` asks for the default endpoint; `OTEL_TRACES_EXPORTER=none` or
`OTEL_SDK_DISABLED=true` turn exporting off. The exporter itself reads endpoint, headers,
timeout and compression from the same variables. Without any of them spans are still created
(trace context still propagates through Kafka headers), just not exported anywhere.

A batch's span links every record it processes; the SDK's default of 128 links a span would
drop most of a full batch's, so spans here take up to `LINKS_PER_SPAN` unless
`OTEL_SPAN_LINK_COUNT_LIMIT` sets the limit.
"""

from __future__ import annotations

import os

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.environment_variables import OTEL_SPAN_LINK_COUNT_LIMIT
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

LINKS_PER_SPAN = 1000


def exporting_requested() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporters == "none":
        return False
    return "otlp" in exporters.split(",") or any(
        os.environ.get(name)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def tracer_provider_from_env(service_name: str) -> TracerProvider:
    """A provider named after the service (unless `OTEL_SERVICE_NAME` says otherwise)."""
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service_name)})
    links = None if OTEL_SPAN_LINK_COUNT_LIMIT in os.environ else LINKS_PER_SPAN
    provider = TracerProvider(resource=resource, span_limits=SpanLimits(max_links=links))
    if exporting_requested():
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
