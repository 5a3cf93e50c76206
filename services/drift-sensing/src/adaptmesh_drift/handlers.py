"""Thin subscribers: dataset versions, production models, inference records and feedback in;
`drift.detected` and pending retrain requests out.

Retrain requests are never published here: they go to the outbox and the relay publishes them
when they fall due (see `schedule.py`). What a request must carry from the consumed event — its
correlation id, its ce_id and its trace context — is taken here, while that record's (or its
batch's) span is current.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import propagate

from adaptmesh_drift.decisions import drift_request, explicit_request, untrainable_because
from adaptmesh_drift.detectors import Reading
from adaptmesh_drift.monitor import DatasetBook, DriftMonitor, NewData
from adaptmesh_drift.schedule import Clock, Origin, RetrainScheduler
from adaptmesh_drift.settings import DriftSettings
from adaptmesh_drift.watch import Alarm, DomainWatch
from adaptmesh_kit import Delivery, EventContext, MeshApp
from adaptmesh_kit.faults import fault_point
from adaptmesh_schemas import Stream
from adaptmesh_schemas.documents import LabelingSample
from adaptmesh_schemas.events import (
    DatasetVersioned,
    DriftAction,
    DriftDetected,
    FeedbackSubmitted,
    InferenceLogged,
    ModelReady,
)
from adaptmesh_schemas.values import ArtifactRef

log = logging.getLogger(__name__)

PREDICTIONS_REMEMBERED = 100_000
"""Recent inference records kept (id -> model, label) to judge feedback that does not say
what the model predicted."""


def origin_of(context: EventContext) -> Origin:
    """The consumed event's chain, id and the current (processing) trace context."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return Origin(context.envelope.correlationid, context.envelope.id, carrier)


class DriftHandlers:
    """The service's handlers and the state they share."""

    def __init__(
        self,
        app: MeshApp,
        settings: DriftSettings,
        scheduler: RetrainScheduler,
        monitor: DriftMonitor,
        datasets: DatasetBook,
        *,
        wake_relay: Callable[[], None],
        clock: Clock = time.time,
    ) -> None:
        self.app = app
        self.settings = settings
        self.scheduler = scheduler
        self.monitor = monitor
        self.datasets = datasets
        self._wake_relay = wake_relay
        self._clock = clock
        self._caught_up = False
        self._last_alert: dict[tuple[str, str], float] = {}
        self._predictions: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self.alarms_suppressed = 0

    # -- explicit changes ----------------------------------------------------------------------

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
        fault_point("drift.requested")  # in the outbox, not yet published nor committed
        self._wake_relay()
        log.info(
            "retrain request for %s on %s pending (%d causes)",
            event.domain,
            event.dataset_version,
            len(pending.request.cause_event_ids),
        )

    # -- what every instance knows (broadcast) -------------------------------------------------

    async def follow_dataset_version(self, event: DatasetVersioned, context: EventContext) -> None:
        """Every dataset version of every domain: what an alarm could retrain on."""
        self.datasets.record(event)

    async def follow_model_ready(self, event: ModelReady, context: EventContext) -> None:
        """The production model of every domain, and where its reference profile is."""
        self.monitor.crown(event)

    # -- watching ------------------------------------------------------------------------------

    async def on_inference_batch(
        self, batch: Sequence[Delivery[Any]]
    ) -> list[tuple[Delivery[Any], str]]:
        """Feed a batch of inference records to their domains' watches."""
        await self._catch_up_once()
        watches = await self._watches({delivery.event.domain for delivery in batch})
        rejected: list[tuple[Delivery[Any], str]] = []
        touched: set[str] = set()
        for delivery in batch:
            record: InferenceLogged = delivery.event
            self._remember_prediction(record)
            watch = watches[record.domain]
            if watch is None or record.model_version != watch.model_version:
                continue  # nothing watches it, or another model answered: says nothing here
            try:
                alarm = watch.observe_inference(
                    event_id=delivery.context.envelope.id,
                    prediction_id=record.prediction_id,
                    label=record.label,
                    confidence=record.confidence,
                    sketch=record.embedding_sketch,
                    text=record.text,
                    margin=record.margin,
                )
            except ValueError as error:
                rejected.append((delivery, f"cannot watch {record.domain}: {error}"))
                continue
            touched.add(record.domain)
            if alarm is not None:
                await self._alarm(alarm, watch, delivery.context)
        await self._save(touched)
        return rejected

    async def on_feedback_batch(
        self, batch: Sequence[Delivery[Any]]
    ) -> list[tuple[Delivery[Any], str]]:
        """Feed ground truth to the feedback detectors of its domain's production model."""
        await self._catch_up_once()
        watches = await self._watches({delivery.event.domain for delivery in batch})
        touched: set[str] = set()
        for delivery in batch:
            feedback: FeedbackSubmitted = delivery.event
            watch = watches[feedback.domain]
            if watch is None:
                continue
            answered = self._predictions.get(feedback.prediction_id)
            if answered is not None and answered[0] != watch.model_version:
                continue  # ground truth on an earlier model's answer
            predicted = feedback.predicted_label or (answered[1] if answered else None)
            if predicted is None:
                log.debug(
                    "feedback %s: what the model predicted is unknown", feedback.prediction_id
                )
                continue
            alarm = watch.observe_feedback(
                event_id=delivery.context.envelope.id,
                prediction_id=feedback.prediction_id,
                correct=predicted == feedback.true_label,
            )
            touched.add(feedback.domain)
            if alarm is not None:
                await self._alarm(alarm, watch, delivery.context)
        await self._save(touched)
        return []

    async def _save(self, domains: set[str]) -> None:
        """Save the watches a batch touched: states copied here, written off the loop."""
        await asyncio.to_thread(
            self.monitor.state.save_watches, self.monitor.states(sorted(domains))
        )

    async def _watches(self, domains: set[str]) -> dict[str, DomainWatch | None]:
        """The watch of each domain in a batch, resolved once per batch; arming loads a
        profile and may simulate for a second, so a domain not armed yet is armed off the
        event loop (one thread hop per batch, not per record)."""
        armed = {domain: self.monitor.armed(domain) for domain in domains}
        if all(found is not False for found in armed.values()):
            return {domain: found or None for domain, found in armed.items()}

        def arm_all() -> dict[str, DomainWatch | None]:
            return {domain: self.monitor.watch(domain) for domain in domains}

        return await asyncio.to_thread(arm_all)

    async def _catch_up_once(self) -> None:
        """Before the first batch: read every model.ready written so far, so records are
        judged against the model that answered them rather than skipped as unknown."""
        if self._caught_up or self.settings.drift_catch_up_seconds == 0:
            return
        await self.app.caught_up(
            Stream.MODELS_READY, within_seconds=self.settings.drift_catch_up_seconds
        )
        self._caught_up = True

    def _remember_prediction(self, record: InferenceLogged) -> None:
        self._predictions[record.prediction_id] = (record.model_version, record.label)
        if len(self._predictions) > PREDICTIONS_REMEMBERED:
            self._predictions.popitem(last=False)

    # -- alarms --------------------------------------------------------------------------------

    async def _alarm(self, alarm: Alarm, watch: DomainWatch, context: EventContext) -> None:
        """Publish `drift.detected` and, when the policy and the data allow, queue a retrain."""
        key = (alarm.domain, alarm.model_version)
        now = self._clock()
        last = self._last_alert.get(key)
        if last is not None and now - last < self.settings.drift_alert_cooldown_seconds:
            self.alarms_suppressed += 1
            log.info(
                "%s drift alarm (%s) within the alert cool-down: detectors re-armed, nothing "
                "published",
                alarm.domain,
                alarm.fired.describe(),
            )
            return
        action, action_detail, new_data = self._action(alarm, watch)
        to_label = await self._labeling_sample(watch)
        drift = DriftDetected(
            domain=alarm.domain,
            model_version=alarm.model_version,
            dataset_version=alarm.dataset_version,
            detector=alarm.detector,
            evidence=tuple(reading.evidence() for reading in _all_readings(alarm, watch)),
            action=action,
            action_detail=action_detail,
            trigger_prediction_id=alarm.trigger_id,
            to_label=to_label,
            cause_event_ids=alarm.cause_event_ids,
        )
        # Fixed by what caused it: a batch redelivered after a crash republishes the same id.
        envelope = await context.publish(
            drift, event_id=f"drift.{alarm.domain}.{alarm.model_version}.{alarm.trigger_id}"
        )
        # Only once published: an alarm whose publish failed must not silence the next one.
        self._last_alert[key] = now
        log.warning(
            "drift in %s (model %s): %s -> %s: %s",
            alarm.domain,
            alarm.model_version,
            alarm.fired.describe(),
            action,
            action_detail,
        )
        if new_data is None:
            return
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        self.scheduler.request(
            drift_request(
                domain=alarm.domain,
                dataset_version=new_data.latest.dataset_version,
                dataset=new_data.latest.dataset,
                evidence=alarm.fired.evidence(),
                detail=f"model {alarm.model_version} drifted ({alarm.fired.describe()}); "
                f"{new_data.description}",
                drift_event_id=envelope.id,
            ),
            Origin(envelope.correlationid, envelope.id, carrier),
        )
        self._wake_relay()

    def _action(self, alarm: Alarm, watch: DomainWatch) -> tuple[DriftAction, str, NewData | None]:
        policy = watch.reference.policy
        if policy.on_detect == "alert":
            return "alert-only", "the recipe's drift.on_detect is alert", None
        found = self.datasets.unseen_labelled_data(alarm.domain, alarm.dataset_version)
        if isinstance(found, str):
            return (
                "no-new-labelled-data",
                f"no retrain: {found}; label the sample and send it as feedback",
                None,
            )
        last = self.scheduler.outbox.last_requested(alarm.domain)
        version = found.latest.dataset_version
        if (
            last is not None
            and last[0] == version
            and self._clock() - last[1] < self.settings.drift_retry_seconds
        ):
            return (
                "no-new-labelled-data",
                f"a retrain on {version} was requested {self._clock() - last[1]:.0f}s ago and "
                "may still be under way",
                None,
            )
        return "retrain-requested", f"retrain on {version}: {found.description}", found

    async def _labeling_sample(self, watch: DomainWatch) -> ArtifactRef | None:
        items = watch.to_label()
        if not items:
            return None
        sample = LabelingSample(
            domain=watch.domain, model_version=watch.model_version, items=tuple(items)
        )
        # Under the domain's residency root, as its dataset versions say.
        latest = self.datasets.latest(watch.domain)
        store = self.app.artifacts.for_residency(latest.residency if latest else None)
        return await asyncio.to_thread(store.put_document, sample)


def _all_readings(alarm: Alarm, watch: DomainWatch) -> list[Reading]:
    """The alarming stream's readings, then the other stream's current ones."""
    others = [
        detector.reading()
        for detector in watch.detectors.values()
        if detector.watches != alarm.watched and detector.reading().steps > 0
    ]
    return [*alarm.readings, *others]
