"""What drift-sensing knows of a domain: whether there is labelled data the champion lacks,
and when a production model can be watched."""

from __future__ import annotations

from pathlib import Path

from adaptmesh_drift.monitor import DatasetBook, DriftMonitor, NewData
from adaptmesh_drift.state import DriftState
from adaptmesh_kit import ArtifactStore
from adaptmesh_schemas.documents import ReferenceProfile
from adaptmesh_schemas.values import ArtifactRef
from tests.unit.adaptmesh_drift.builders import SyntheticWorld, dataset, model_ready


def book_of(*versions: tuple[str, str | None, str]) -> DatasetBook:
    book = DatasetBook()
    for version, parent, kind in versions:
        book.record(dataset("fin", version, parent=parent, change_kind=kind))
    return book


def test_data_or_feedback_since_the_champions_dataset_is_new_labelled_data() -> None:
    book = book_of(
        ("ds-1", None, "recipe"), ("ds-2", "ds-1", "taxonomy"), ("ds-3", "ds-2", "feedback")
    )
    found = book.unseen_labelled_data("fin", "ds-1")
    assert isinstance(found, NewData)
    assert found.latest.dataset_version == "ds-3"
    assert "feedback" in found.description


def test_nothing_new_when_the_champion_has_the_latest_version_or_only_reshapes_followed() -> None:
    book = book_of(("ds-1", None, "recipe"), ("ds-2", "ds-1", "taxonomy"))
    assert "latest dataset version ds-2" in str(book.unseen_labelled_data("fin", "ds-2"))
    assert "add no labelled examples" in str(book.unseen_labelled_data("fin", "ds-1"))


def test_an_unknown_ancestry_or_an_untrainable_latest_version_is_not_new_data() -> None:
    book = book_of(("ds-5", "ds-4", "data"))
    assert "not an ancestor" in str(book.unseen_labelled_data("fin", "ds-1"))
    book.record(dataset("fin", "ds-6", parent="ds-5", change_kind="data", train=0))
    assert "not trainable" in str(book.unseen_labelled_data("fin", "ds-5"))
    assert "no dataset version" in str(book.unseen_labelled_data("legal", "ds-1"))


def test_a_champion_without_a_profile_is_not_watched_and_says_why(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}")
    monitor = DriftMonitor(
        ("prediction-shift",),
        DriftState(None),
        lambda ref: store.get_document(ref, ReferenceProfile),
    )
    monitor.crown(model_ready("fin", "m-1", "ds-1", None))
    assert monitor.watch("fin") is None
    assert "no reference profile" in str(monitor.why_unwatched("fin"))


def test_a_promotion_is_armed_once_and_its_calibration_is_cached(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}")
    ref = store.put_document(SyntheticWorld(3).profile(200, domain="fin", window=10))
    state = DriftState(tmp_path / "drift.sqlite3")
    loads: list[str] = []

    def load(profile_ref: ArtifactRef) -> ReferenceProfile:
        loads.append(profile_ref.uri)
        return store.get_document(profile_ref, ReferenceProfile)

    monitor = DriftMonitor(("prediction-shift", "estimated-accuracy"), state, load)
    monitor.crown(model_ready("fin", "m-1", "ds-1", ref))
    watch = monitor.watch("fin")
    assert watch is not None
    assert monitor.watch("fin") is watch
    assert len(loads) == 1
    # Another process (or a restart) takes the thresholds from the cache, not a new simulation.
    again = DriftMonitor(("prediction-shift", "estimated-accuracy"), state, load)
    again.crown(model_ready("fin", "m-1", "ds-1", ref))
    rearmed = again.watch("fin")
    assert rearmed is not None
    for name, detector in watch.detectors.items():
        assert rearmed.detectors[name].reading().threshold == detector.reading().threshold
