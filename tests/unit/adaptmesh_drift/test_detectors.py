"""The detectors, calibrated on synthetic reference profiles with known shifts.

Seeded statistical tests: each detector is armed on a profile of 400 eval examples and run
on fresh records of the same world (no drift) and of a shifted one. Stated tolerances:

* no drift: false alarms per 1,000 records, averaged over three worlds, at most 1.25 x what
  the ERT promises (1000 / ERT) — the calibration targets the promise on average over
  reference draws, and one small eval split can be unlucky (see `_world_draws`);
* drift of the detector's own kind: it fires in every one of 20 runs, and its median delay is
  within a few windows.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable

import pytest

from adaptmesh_drift.detectors import Observation
from adaptmesh_drift.reference import ReferenceData
from adaptmesh_drift.watch import DomainWatch, arm
from tests.unit.adaptmesh_drift.builders import SyntheticRecord, SyntheticWorld

ERT, WINDOW = 200, 10
INFERENCE = ("embedding-mmd", "prediction-shift", "estimated-accuracy")


def armed(world: SyntheticWorld, *names: str, seed_text: str = "a") -> DomainWatch:
    profile = world.profile(400, ert=ERT, window=WINDOW)
    return arm(ReferenceData.of(profile, seed_text * 64), names)


def feed(watch: DomainWatch, records: list[SyntheticRecord], feedback: bool = False) -> list[int]:
    """Indices (from 1) of the records at which an alarm went off."""
    alarms = []
    for index, record in enumerate(records, start=1):
        if feedback:
            alarm = watch.observe_feedback(
                event_id=f"f-{index}",
                prediction_id=f"p-{index}",
                correct=record.label == record.predicted,
            )
        else:
            alarm = watch.observe_inference(
                event_id=f"e-{index}",
                prediction_id=f"p-{index}",
                label=record.predicted,
                confidence=record.confidence,
                sketch=record.sketch,
                margin=record.margin,
            )
        if alarm is not None:
            alarms.append(index)
    return alarms


def false_alarms_per_1000(names: tuple[str, ...], feedback: bool = False) -> float:
    rates = []
    for seed, seed_text in ((11, "a"), (12, "b"), (13, "c")):
        world = SyntheticWorld(seed)
        watch = armed(world, *names, seed_text=seed_text)
        steps = 12_000
        rates.append(len(feed(watch, world.records(steps), feedback)) * 1000 / steps)
    return statistics.mean(rates)


@pytest.mark.parametrize("name", [*INFERENCE])
def test_each_inference_detector_stays_quiet_on_no_drift_at_its_ert(name: str) -> None:
    assert false_alarms_per_1000((name,)) <= 1.25 * 1000 / ERT


def test_the_feedback_detector_stays_quiet_on_no_drift_at_its_ert() -> None:
    assert false_alarms_per_1000(("feedback-accuracy",), feedback=True) <= 1.25 * 1000 / ERT


def test_the_combined_alarm_of_all_inference_detectors_respects_the_ert() -> None:
    # Three detectors share the budget: each is calibrated to 3 x ERT.
    assert false_alarms_per_1000(INFERENCE) <= 1.25 * 1000 / ERT


Shift = Callable[[SyntheticWorld], list[SyntheticRecord]]
SHIFTS: dict[str, tuple[Shift, bool]] = {
    # Inputs from elsewhere: every embedding moves (a foreign newswire).
    "embedding-mmd": (lambda w: w.records(200, shift=0.25), False),
    # The topic mix narrows to two labels: embeddings stay where those labels live.
    "prediction-shift": (lambda w: w.records(200, mix=(0.0, 0.0, 0.0, 0.5, 0.5)), False),
    # Ambiguous inputs: the model is less sure, and rightly so.
    "estimated-accuracy": (lambda w: w.records(200, ambiguous=0.8), False),
    # Ground truth says the model is wrong more often.
    "feedback-accuracy": (lambda w: w.records(400, ambiguous=0.6), True),
}


@pytest.mark.parametrize("name", sorted(SHIFTS))
def test_each_detector_fires_on_its_own_kind_of_shift(name: str) -> None:
    make_shift, feedback = SHIFTS[name]
    world = SyntheticWorld(21)
    watch = armed(world, name)
    delays = []
    for _ in range(20):
        for detector in watch.detectors.values():
            detector.reset()
        alarms = feed(watch, make_shift(world), feedback)
        assert alarms, f"{name} missed a shift"
        delays.append(alarms[0])
    limit = 200 if feedback else 4 * WINDOW
    assert statistics.median(delays) <= limit, delays


def test_a_restored_watch_carries_on_exactly_where_it_stopped() -> None:
    world = SyntheticWorld(31)
    reference = ReferenceData.of(world.profile(400, ert=ERT, window=WINDOW), "f" * 64)
    records = world.records(60) + world.records(60, shift=0.25)
    original = arm(reference, INFERENCE)
    feed(original, records[:35])
    saved = json.loads(json.dumps(original.state()))  # as stored
    restored = arm(reference, INFERENCE)
    assert restored.restore(saved)
    assert feed(original, records[35:]) == feed(restored, records[35:])
    for name, detector in original.detectors.items():
        assert detector.reading() == restored.detectors[name].reading()


def test_a_saved_state_of_another_model_is_not_restored() -> None:
    world = SyntheticWorld(32)
    watch = armed(world, "prediction-shift")
    other = arm(
        ReferenceData.of(world.profile(400, model_version="m-2", window=WINDOW), "d" * 64),
        ("prediction-shift",),
    )
    assert not other.restore(watch.state())


def test_a_reference_too_small_for_the_window_leaves_that_detector_unarmed_with_the_reason() -> (
    None
):
    world = SyntheticWorld(33)
    watch = arm(
        ReferenceData.of(world.profile(40, window=20), "e" * 64),
        ("embedding-mmd", "prediction-shift"),
    )
    assert list(watch.detectors) == ["prediction-shift"]
    assert "at least 59" in watch.unarmed["embedding-mmd"]


def test_an_observation_with_a_sketch_of_the_wrong_size_is_refused() -> None:
    world = SyntheticWorld(34)
    detector = armed(world, "embedding-mmd").detectors["embedding-mmd"]
    with pytest.raises(ValueError, match="embedding sketch of 3 values"):
        detector.observe(Observation(label="acq", confidence=0.9, sketch=(0.1, 0.2, 0.3)))
