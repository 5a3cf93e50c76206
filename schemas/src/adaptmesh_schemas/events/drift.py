"""`mesh.drift.v1`: drift-sensing says a production model no longer fits what it sees."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adaptmesh_schemas.topics import Stream
from adaptmesh_schemas.values import ArtifactRef, DriftEvidence
from adaptmesh_schemas.versioning import MeshEvent, event

DriftAction = Literal["retrain-requested", "alert-only", "no-new-labelled-data"]


@event("drift.detected", stream=Stream.DRIFT, version="1.0")
class DriftDetected(MeshEvent):
    """A calibrated detector alarmed on a domain's production model.

    `evidence` holds every detector watching the stream that alarmed (the one that fired and
    the others' current statistics), so a reader sees what moved and what did not.
    """

    model_version: str = Field(description="The production model being watched.")
    dataset_version: str = Field(description="The dataset version that model was trained on.")
    detector: str = Field(description="The detector that alarmed.")
    evidence: tuple[DriftEvidence, ...] = Field(
        min_length=1, description="Each detector's statistic, threshold and verdict."
    )
    action: DriftAction = Field(
        description="What follows: a retrain request (labelled data the champion has not seen "
        "exists), an alert only (the recipe says `alert`), or nothing to retrain on yet."
    )
    action_detail: str = Field(default="", description="Why that action, for people.")
    trigger_prediction_id: str | None = Field(
        default=None, description="The inference (or feedback) record that tipped the alarm."
    )
    to_label: ArtifactRef | None = Field(
        default=None,
        description="A `LabelingSample` document: the most uncertain recent inputs, for people "
        "to label and send back as feedback or a data batch.",
    )
    cause_event_ids: tuple[str, ...] = Field(
        default=(), description="ce_id of the records in the alarming window."
    )
