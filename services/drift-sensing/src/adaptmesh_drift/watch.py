"""One domain's production model under watch: its armed detectors, recent inputs, alarms.

When a model is promoted, every configured detector is calibrated on the model's reference
profile. The false-alarm budget of each stream (inference records, feedback) is shared by the
detectors watching it: with K of them each is calibrated to an ERT of K x `drift.ert`, so their
combined alarm (any of them) fires on a no-drift stream at most once every `drift.ert` records
of that stream on average (the union bound). After an alarm the detectors of the
stream that alarmed re-arm: they start again from their reference window.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from adaptmesh_drift.detectors import (
    Budget,
    Calibration,
    CannotArmError,
    Detector,
    Observation,
    Reading,
    Watched,
    detector_class,
)
from adaptmesh_drift.reference import ReferenceData
from adaptmesh_schemas.documents import LabelingItem

log = logging.getLogger(__name__)

CALIBRATION_VERSION = 1  # bump when a detector's simulation changes: cached thresholds expire


class CalibrationCache(Protocol):
    def get(self, key: str) -> Calibration | None: ...

    def put(self, key: str, calibration: Calibration) -> None: ...


class NoCache:
    def get(self, key: str) -> Calibration | None:
        return None

    def put(self, key: str, calibration: Calibration) -> None:
        return None


@dataclass(frozen=True, slots=True)
class RecentInput:
    """An inference record kept for the sample people are asked to label."""

    prediction_id: str
    text: str
    label: str
    confidence: float
    margin: float | None


@dataclass(frozen=True, slots=True)
class Alarm:
    """A detector fired: its reading, every reading of that stream, and what caused it."""

    domain: str
    model_version: str
    dataset_version: str
    detector: str
    watched: Watched
    readings: tuple[Reading, ...]
    trigger_id: str
    cause_event_ids: tuple[str, ...]

    @property
    def fired(self) -> Reading:
        return next(r for r in self.readings if r.detector == self.detector)


def arm(
    reference: ReferenceData,
    names: Sequence[str],
    *,
    cache: CalibrationCache | None = None,
    sample_size: int = 20,
) -> DomainWatch:
    """Calibrate the named detectors on `reference` (or take their cached calibration)."""
    cache = cache or NoCache()
    policy = reference.policy
    classes = {name: detector_class(name) for name in names}
    sharing = Counter(cls.watches for cls in classes.values())
    detectors: dict[str, Detector] = {}
    unarmed: dict[str, str] = {}
    for name, cls in classes.items():
        budget = Budget(
            ert=float(policy.ert) * sharing[cls.watches],
            window=policy.window * getattr(cls, "window_factor", 1),
        )
        key = (
            f"{name}:{CALIBRATION_VERSION}:{reference.profile_sha256}:"
            f"{budget.ert:g}:{budget.window}"
        )
        try:
            calibration = cache.get(key)
            if calibration is None:
                calibration = cls.calibrate(reference, budget)
                cache.put(key, calibration)
            detectors[name] = cls(reference, budget, calibration)
        except CannotArmError as error:
            unarmed[name] = str(error)
            log.warning(
                "%s detector not armed for %s model %s: %s",
                name,
                reference.domain,
                reference.model_version,
                error,
            )
    return DomainWatch(reference, detectors, unarmed, sample_size=sample_size)


class DomainWatch:
    """The armed detectors of one domain's production model and what they have seen."""

    def __init__(
        self,
        reference: ReferenceData,
        detectors: Mapping[str, Detector],
        unarmed: Mapping[str, str],
        *,
        sample_size: int,
    ) -> None:
        self.reference = reference
        self.detectors = dict(detectors)
        self.unarmed = dict(unarmed)
        self.sample_size = sample_size
        window = reference.policy.window
        self.recent: deque[RecentInput] = deque(maxlen=max(4 * sample_size, window))
        self._window_ids: dict[Watched, deque[str]] = {
            "inference": deque(maxlen=window),
            "feedback": deque(maxlen=window),
        }
        self.observed = 0

    @property
    def domain(self) -> str:
        return self.reference.domain

    @property
    def model_version(self) -> str:
        return self.reference.model_version

    def watching(self, watched: Watched) -> list[Detector]:
        return [d for d in self.detectors.values() if d.watches == watched]

    def observe_inference(
        self,
        *,
        event_id: str,
        prediction_id: str,
        label: str,
        confidence: float,
        sketch: Sequence[float],
        text: str | None = None,
        margin: float | None = None,
    ) -> Alarm | None:
        """Feed one inference record to the inference detectors; an alarm if one fires.

        Raises `ValueError` for a record the detectors cannot take (e.g. a sketch of the wrong
        size), leaving no trace of it: not in a window, the window's causes or the sample to
        label (the handler dead-letters it)."""
        observation = Observation(label=label, confidence=confidence, sketch=tuple(sketch))
        alarm = self._observe("inference", observation, event_id, prediction_id)
        if text:
            # After the detectors took it (the caller asks for the sample after an alarm).
            self.recent.append(RecentInput(prediction_id, text, label, confidence, margin))
        return alarm

    def observe_feedback(self, *, event_id: str, prediction_id: str, correct: bool) -> Alarm | None:
        """Feed one piece of ground truth to the feedback detectors."""
        return self._observe("feedback", Observation(correct=correct), event_id, prediction_id)

    def _observe(
        self, watched: Watched, observation: Observation, event_id: str, trigger_id: str
    ) -> Alarm | None:
        detectors = self.watching(watched)
        if not detectors:
            return None
        # Every detector must be able to take the record before any takes it: otherwise a
        # rejected record would sit in the windows of the detectors checked before the one
        # that refused it, and among the window's causes.
        for detector in detectors:
            detector.check(observation)
        self.observed += 1
        ids = self._window_ids[watched]
        ids.append(event_id)
        readings = tuple(detector.observe(observation) for detector in detectors)
        fired = next((reading for reading in readings if reading.drifted), None)
        if fired is None:
            return None
        alarm = Alarm(
            domain=self.domain,
            model_version=self.model_version,
            dataset_version=self.reference.dataset_version,
            detector=fired.detector,
            watched=watched,
            readings=readings,
            trigger_id=trigger_id,
            cause_event_ids=tuple(ids),
        )
        for detector in detectors:
            detector.reset()
        ids.clear()
        return alarm

    def to_label(self) -> list[LabelingItem]:
        """The least certain recent inputs (smallest margin, then lowest confidence)."""
        ranked = sorted(
            self.recent,
            key=lambda r: (r.margin if r.margin is not None else r.confidence, r.confidence),
        )
        return [
            LabelingItem(
                prediction_id=r.prediction_id,
                text=r.text,
                predicted=r.label,
                confidence=r.confidence,
                margin=r.margin,
            )
            for r in ranked[: self.sample_size]
        ]

    def state(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "profile_sha256": self.reference.profile_sha256,
            "observed": self.observed,
            "detectors": {name: d.state() for name, d in self.detectors.items()},
            "window_ids": {watched: list(ids) for watched, ids in self._window_ids.items()},
            "recent": [
                [r.prediction_id, r.text, r.label, r.confidence, r.margin] for r in self.recent
            ],
        }

    def restore(self, state: Mapping[str, Any]) -> bool:
        """Carry on from `state` if it belongs to this model and profile; False otherwise."""
        if (
            state.get("model_version") != self.model_version
            or state.get("profile_sha256") != self.reference.profile_sha256
        ):
            return False
        for name, detector_state in state.get("detectors", {}).items():
            if name in self.detectors:
                self.detectors[name].restore(detector_state)
        for watched, ids in state.get("window_ids", {}).items():
            if watched in self._window_ids:
                self._window_ids[watched].extend(ids)
        self.recent.extend(RecentInput(*row) for row in state.get("recent", []))
        self.observed = int(state.get("observed", 0))
        return True
