"""Sliding windows of inference records per domain, tested by the configured detectors.

Each domain keeps its last N predictions with running label counts. A full window is tested
again after every `test_every` new records, not after each one: consecutive windows share all
but one record, so testing each would repeat a nearly identical test N times per window (more
false alarms for no new information) at ~0.7 ms a chi-squared test. A window restarts when the model
that answers changes (the old model's predictions say nothing about the new one) and after a
detection (the evidence has been used).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

from adaptmesh_drift.decisions import untrainable_because
from adaptmesh_drift.detectors import Detector, Finding, Reference, WindowSummary
from adaptmesh_schemas.events import DatasetVersioned, InferenceLogged
from adaptmesh_schemas.values import ArtifactRef


@dataclass(frozen=True, slots=True)
class DatasetReference:
    """What drift-sensing keeps of a domain's latest dataset version."""

    domain: str
    dataset_version: str
    dataset: ArtifactRef
    per_label: dict[str, int]
    untrainable_because: str | None

    @classmethod
    def of(cls, event: DatasetVersioned) -> DatasetReference:
        return cls(
            domain=event.domain,
            dataset_version=event.dataset_version,
            dataset=event.artifact,
            per_label=dict(event.counts.per_label),
            untrainable_because=untrainable_because(event),
        )


class ReferenceBook:
    """The latest dataset version of every domain, in log order."""

    def __init__(self) -> None:
        self._latest: dict[str, DatasetReference] = {}

    def record(self, event: DatasetVersioned) -> None:
        self._latest[event.domain] = DatasetReference.of(event)

    def get(self, domain: str) -> DatasetReference | None:
        return self._latest.get(domain)

    def __len__(self) -> int:
        return len(self._latest)


class _Window:
    def __init__(self, size: int) -> None:
        self.records: deque[tuple[str, float]] = deque()
        self.size = size
        self.model_version: str | None = None
        self.label_counts: Counter[str] = Counter()
        self.added_since_test = 0

    def add(self, label: str, confidence: float) -> None:
        if len(self.records) == self.size:
            old_label, _ = self.records.popleft()
            self.label_counts[old_label] -= 1
            if not self.label_counts[old_label]:
                del self.label_counts[old_label]
        self.records.append((label, confidence))
        self.label_counts[label] += 1
        self.added_since_test += 1

    def clear(self) -> None:
        self.records.clear()
        self.label_counts.clear()
        self.added_since_test = 0

    @property
    def full(self) -> bool:
        return len(self.records) == self.size

    def summary(self) -> WindowSummary:
        # Summing afresh: a running float sum drifts by rounding over millions of records.
        return WindowSummary(dict(self.label_counts), sum(c for _, c in self.records))


class InferenceMonitor:
    """Feeds inference records into per-domain windows and reports the first drift found."""

    def __init__(
        self, detectors: Sequence[Detector], window_size: int, test_every: int = 1
    ) -> None:
        if window_size < 1 or test_every < 1:
            raise ValueError("window_size and test_every must be at least 1")
        self.detectors = list(detectors)
        self.window_size = window_size
        self.test_every = test_every
        self._windows: dict[str, _Window] = {}

    def observe(
        self, record: InferenceLogged, reference: DatasetReference | None
    ) -> Finding | None:
        """Add `record`; a finding when a full window drifted from `reference`.

        Nothing is tested before the window is full, until `test_every` records arrived since
        the last test, or while the domain has no trainable dataset version (a retrain
        request could not name one).
        """
        window = self._windows.setdefault(record.domain, _Window(self.window_size))
        if window.model_version != record.model_version:
            window.clear()
            window.model_version = record.model_version
        window.add(record.label, record.confidence)
        if not window.full or window.added_since_test < self.test_every:
            return None
        if reference is None or reference.untrainable_because is not None:
            return None
        window.added_since_test = 0
        summary = window.summary()
        expected = Reference(reference.per_label)
        for detector in self.detectors:
            finding = detector.examine(summary, expected)
            if finding.drifted:
                window.clear()
                return finding
        return None

    def filled(self, domain: str) -> int:
        """How many records the domain's window holds."""
        window = self._windows.get(domain)
        return len(window.records) if window else 0
