"""Per-domain sliding windows and when they are tested."""

from __future__ import annotations

from adaptmesh_drift.detectors import DetectorThresholds, build_detectors
from adaptmesh_drift.monitor import DatasetReference, InferenceMonitor, ReferenceBook
from tests.unit.adaptmesh_drift.builders import dataset, inference

LABELS = ("acq", "crude", "earn", "grain")


def monitor(window: int = 40, test_every: int = 1) -> InferenceMonitor:
    return InferenceMonitor(
        build_detectors(["label-chi2", "confidence-drop"], DetectorThresholds()),
        window,
        test_every,
    )


def reference(domain: str = "fin") -> DatasetReference:
    return DatasetReference.of(dataset(domain))


def test_no_detection_before_the_window_is_full() -> None:
    watcher = monitor(40)
    findings = [watcher.observe(inference("fin", "acq", n=n), reference()) for n in range(39)]
    assert findings == [None] * 39
    assert watcher.filled("fin") == 39
    finding = watcher.observe(inference("fin", "acq", n=39), reference())
    assert finding is not None
    assert finding.detector == "label-chi2"
    assert watcher.filled("fin") == 0, "a detection starts a fresh window"


def test_no_detection_without_a_trainable_reference() -> None:
    watcher = monitor(40)
    untrainable = DatasetReference.of(dataset("fin", per_label={"acq": 50}))
    for n in range(100):
        assert watcher.observe(inference("fin", "acq", n=n), None) is None
        assert watcher.observe(inference("fin", "acq", n=n), untrainable) is None
    assert watcher.filled("fin") == 40


def test_a_healthy_stream_never_fires_and_the_window_slides() -> None:
    watcher = monitor(40)
    for n in range(400):
        assert watcher.observe(inference("fin", LABELS[n % 4], n=n), reference()) is None
    assert watcher.filled("fin") == 40


def test_low_confidence_fires_the_second_detector() -> None:
    watcher = monitor(40)
    findings = [
        watcher.observe(inference("fin", LABELS[n % 4], confidence=0.3, n=n), reference())
        for n in range(40)
    ]
    assert findings[-1] is not None
    assert findings[-1].detector == "confidence-drop"


def test_a_new_model_version_restarts_the_window() -> None:
    watcher = monitor(40)
    for n in range(30):
        watcher.observe(inference("fin", "acq", model_version="m-1", n=n), reference())
    assert watcher.observe(inference("fin", "acq", model_version="m-2"), reference()) is None
    assert watcher.filled("fin") == 1


def test_domains_have_their_own_windows_and_references() -> None:
    watcher = monitor(40)
    book = ReferenceBook()
    book.record(dataset("fin", "ds-1"))
    book.record(dataset("fin", "ds-2"))
    assert len(book) == 1
    fin = book.get("fin")
    assert fin is not None
    assert fin.dataset_version == "ds-2"
    assert book.get("legal") is None
    for n in range(39):
        watcher.observe(inference("fin", "acq", n=n), fin)
        watcher.observe(inference("legal", "acq", n=n), book.get("legal"))
    assert watcher.filled("fin") == watcher.filled("legal") == 39


def test_a_full_window_is_tested_again_only_after_test_every_records() -> None:
    watcher = monitor(40, test_every=10)
    for n in range(40):  # healthy: tested once, when the window fills
        assert watcher.observe(inference("fin", LABELS[n % 4], n=n), reference()) is None
    # The stream turns to all "acq": tested after every record that would fire at the 16th
    # (n=55); tested every 10 records it fires at the next test after that.
    fired = [
        n
        for n in range(40, 70)
        if watcher.observe(inference("fin", "acq", n=n), reference()) is not None
    ]
    assert fired == [59]
