"""`adaptmesh watch`: how a record is printed."""

from __future__ import annotations

import json

from adaptmesh_cli.main import describe_record
from adaptmesh_schemas import Envelope
from adaptmesh_schemas.events import DriftDetected, FeedbackSubmitted
from adaptmesh_schemas.values import ArtifactRef, DriftEvidence

ALARM = DriftDetected(
    domain="fin-news",
    model_version="m-2",
    dataset_version="ds-4",
    detector="online-mmd",
    evidence=(
        DriftEvidence(
            detector="online-mmd",
            statistic=0.04125,
            threshold=0.03,
            window_size=20,
            drifted=True,
            ert=1500.0,
            detail="MMD of the last 20 sketches",
        ),
        # A 1.0 evidence item: no verdict, no calibration, but a p-value.
        DriftEvidence(
            detector="label-chi2", statistic=3.5, p_value=0.17, threshold=9.21, window_size=50
        ),
    ),
    action="retrain-requested",
    action_detail="12 labelled examples the champion has not seen",
    to_label=ArtifactRef(uri="file:///store/blobs/ab/abc.json", sha256="a" * 64),
)


def envelope(event: DriftDetected | FeedbackSubmitted) -> Envelope:
    return Envelope.for_event(event, source="urn:test")


def test_a_drift_alarm_reads_as_a_summary_and_one_line_per_detector() -> None:
    assert describe_record(0, 7, envelope(ALARM), ALARM).splitlines() == [
        "[0@7] dev.adaptmesh.drift.detected fin-news model m-2 (dataset ds-4): online-mmd fired "
        "-> retrain-requested: 12 labelled examples the champion has not seen",
        "    online-mmd: 0.04125 vs threshold 0.03, drifted yes, ERT 1500, window 20 "
        "- MMD of the last 20 sketches",
        "    label-chi2: 3.5 vs threshold 9.21 (p 0.17), drifted n/a, ERT n/a, window 50",
        "    to label: file:///store/blobs/ab/abc.json",
    ]


def test_an_alarm_without_detail_or_sample_has_no_line_for_them() -> None:
    quiet = ALARM.model_copy(update={"action": "alert-only", "action_detail": "", "to_label": None})
    lines = describe_record(1, 2, envelope(quiet), quiet).splitlines()
    assert lines[0].endswith("online-mmd fired -> alert-only")
    assert len(lines) == 1 + len(quiet.evidence)
    assert not any("to label" in line for line in lines)


def test_other_events_stay_one_json_line() -> None:
    feedback = FeedbackSubmitted(
        domain="fin-news", prediction_id="p-1", text="wheat crop", true_label="grain"
    )
    line = describe_record(0, 3, envelope(feedback), feedback)
    prefix = "[0@3] dev.adaptmesh.feedback.submitted fin-news "
    assert line.startswith(prefix)
    assert "\n" not in line
    assert FeedbackSubmitted.model_validate(json.loads(line.removeprefix(prefix))) == feedback
