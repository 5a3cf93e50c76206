"""Thin subscribers: dataset versions and inference records in, pending retrain requests out.

The handlers never publish themselves: they write the request to the outbox and wake the
relay, which publishes it when it falls due (see `schedule.py`). What a request must carry from
the consumed event — its correlation id, its ce_id and its trace context — is taken here, while
the consumed record's span is current.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from faststream.kafka.message import KafkaMessage
from opentelemetry import propagate

from adaptmesh_drift.decisions import drift_request, explicit_request, untrainable_because
from adaptmesh_drift.monitor import InferenceMonitor, ReferenceBook
from adaptmesh_drift.schedule import Origin, RetrainScheduler
from adaptmesh_kit import EventContext
from adaptmesh_schemas import DecodeError, decode_event, read_envelope
from adaptmesh_schemas.events import DatasetVersioned, InferenceLogged

log = logging.getLogger(__name__)


def origin_of(context: EventContext) -> Origin:
    """The consumed event's chain, id and the current (processing) trace context."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return Origin(context.envelope.correlationid, context.envelope.id, carrier)


class DriftHandlers:
    """The service's handlers and the state they share."""

    def __init__(
        self,
        scheduler: RetrainScheduler,
        monitor: InferenceMonitor,
        references: ReferenceBook,
        *,
        wake_relay: Callable[[], None],
        max_event_bytes: int,
    ) -> None:
        self.scheduler = scheduler
        self.monitor = monitor
        self.references = references
        self._wake_relay = wake_relay
        self._max_event_bytes = max_event_bytes

    async def on_dataset_versioned(self, event: DatasetVersioned, context: EventContext) -> None:
        """An explicit change: retrain on the new version, unless nothing can be trained."""
        why_not = untrainable_because(event)
        if why_not is not None:
            log.warning(
                "no retrain request for %s: dataset version %s (%s change) is not trainable: %s",
                event.domain,
                event.dataset_version,
                event.change_kind,
                why_not,
            )
            dropped = self.scheduler.cancel(event.domain)
            if dropped is not None:
                log.warning(
                    "dropped the pending request for %s on %s: a newer version superseded it",
                    event.domain,
                    dropped.request.dataset_version,
                )
            return
        pending = self.scheduler.request(
            explicit_request(event, context.envelope.id), origin_of(context)
        )
        self._wake_relay()
        log.info(
            "retrain request for %s on %s pending (%d causes)",
            event.domain,
            event.dataset_version,
            len(pending.request.cause_event_ids),
        )

    async def on_inference_logged(self, event: InferenceLogged, context: EventContext) -> None:
        """Add the record to its domain's window; request retraining when a detector fires."""
        reference = self.references.get(event.domain)
        finding = self.monitor.observe(event, reference)
        if finding is None or reference is None:
            return
        request = drift_request(
            domain=event.domain,
            dataset_version=reference.dataset_version,
            dataset=reference.dataset,
            finding=finding,
            model_version=event.model_version,
            inference_event_id=context.envelope.id,
        )
        self.scheduler.request(request, origin_of(context))
        self._wake_relay()
        log.warning("drift in %s: %s", event.domain, request.detail)

    async def follow_dataset_versions(self, message: KafkaMessage) -> None:
        """Every instance reads every dataset version (no consumer group) to know each
        domain's reference: a domain's inference partition may be assigned to another
        instance than its dataset partition. Undecodable records are skipped here; the group
        subscription dead-letters them."""
        record: Any = message.raw_message
        value: bytes | None = record.value
        if value is None or len(value) > self._max_event_bytes:
            return
        try:
            event = decode_event(read_envelope(record.headers), value)
        except DecodeError:
            return
        if isinstance(event, DatasetVersioned):
            self.references.record(event)
