"""What a retrain request says, and when a dataset version gets none."""

from __future__ import annotations

import pytest

from adaptmesh_drift.decisions import (
    REASON_BY_CHANGE_KIND,
    drift_request,
    explicit_request,
    untrainable_because,
)
from adaptmesh_schemas.events import RetrainReason
from adaptmesh_schemas.values import DriftEvidence
from tests.unit.adaptmesh_drift.builders import dataset


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("recipe", RetrainReason.RECIPE),
        ("taxonomy", RetrainReason.TAXONOMY),
        ("regulation", RetrainReason.REGULATION),
        ("base-model", RetrainReason.BASE_MODEL),
        ("data", RetrainReason.DATA),
        ("feedback", RetrainReason.FEEDBACK),
    ],
)
def test_each_change_kind_gives_its_reason(kind: str, reason: RetrainReason) -> None:
    request = explicit_request(dataset("fin", "ds-2", change_kind=kind), "evt-ds-2")
    assert request.reason is reason
    assert REASON_BY_CHANGE_KIND[kind] is reason


def test_an_explicit_request_names_the_version_and_every_cause() -> None:
    event = dataset("fin", "ds-2", change_kind="taxonomy", causes=("chg-a", "chg-b"), parent="ds-1")
    request = explicit_request(event, "evt-ds-2")
    assert request.domain == "fin"
    assert request.dataset_version == "ds-2"
    assert request.dataset == event.artifact
    assert request.cause_event_ids == ("chg-a", "chg-b", "evt-ds-2")
    assert request.evidence is None
    assert "taxonomy change" in request.detail
    assert "ds-2 from ds-1" in request.detail


def test_an_unknown_change_kind_still_asks_for_retraining_on_the_new_data() -> None:
    assert explicit_request(dataset("fin", change_kind="merger"), "e").reason is RetrainReason.DATA


def test_trainability() -> None:
    assert untrainable_because(dataset("fin")) is None
    empty_train = untrainable_because(dataset("fin", train=0))
    assert empty_train is not None
    assert "train split is empty" in empty_train
    one_label = untrainable_because(dataset("fin", per_label={"acq": 30, "earn": 0}))
    assert one_label is not None
    assert "only 1 label(s) have examples (acq)" in one_label
    assert untrainable_because(dataset("fin", per_label={}, train=3)) is not None


def test_a_drift_request_carries_the_evidence_and_the_latest_version() -> None:
    evidence = DriftEvidence(
        detector="embedding-mmd", statistic=0.09, threshold=0.05, window_size=20, drifted=True
    )
    event = dataset("fin", "ds-7")
    request = drift_request(
        domain="fin",
        dataset_version="ds-7",
        dataset=event.artifact,
        evidence=evidence,
        detail="model m-3 drifted",
        drift_event_id="drift-1",
    )
    assert request.reason is RetrainReason.DRIFT
    assert request.evidence == evidence
    assert request.dataset_version == "ds-7"
    assert request.cause_event_ids == ("drift-1",)
    assert "model m-3 drifted" in request.detail
