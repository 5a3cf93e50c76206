"""`mesh.retrain.v1`: drift-sensing asks training for a new model."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from adaptmesh_schemas.topics import Stream
from adaptmesh_schemas.values import ArtifactRef, DriftEvidence
from adaptmesh_schemas.versioning import MeshEvent, event


class RetrainReason(StrEnum):
    RECIPE = "recipe"
    TAXONOMY = "taxonomy"
    REGULATION = "regulation"
    BASE_MODEL = "base-model"
    DATA = "data"
    FEEDBACK = "feedback"
    DRIFT = "drift"


@event("retrain.requested", stream=Stream.RETRAIN, version="1.0")
class RetrainRequested(MeshEvent):
    """Train a new candidate for the domain on the given dataset version."""

    reason: RetrainReason = Field(description="Why.")
    detail: str = Field(default="", description="Human-readable explanation.")
    dataset_version: str = Field(description="Dataset version to train on.")
    dataset: ArtifactRef = Field(description="That version's manifest.")
    evidence: DriftEvidence | None = Field(default=None, description="Detector output, for drift.")
    cause_event_ids: tuple[str, ...] = Field(default=(), description="ce_id of the causes.")
