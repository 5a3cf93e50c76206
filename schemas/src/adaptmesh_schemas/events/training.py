"""`mesh.training.v1`: the life of one training run."""

from __future__ import annotations

from pydantic import Field

from adaptmesh_schemas.topics import Stream
from adaptmesh_schemas.values import ArtifactRef, Label, Lineage
from adaptmesh_schemas.versioning import MeshEvent, event


@event("training.started", stream=Stream.TRAINING, version="1.0")
class TrainingStarted(MeshEvent):
    run_id: str = Field(description="Unique id of the run.")
    dataset_version: str = Field(description="Dataset version being trained on.")
    recipe_version: str = Field(description="Recipe version in force.")
    workers: int = Field(ge=1, description="Ray workers training the run together.")


@event("training.progress", stream=Stream.TRAINING, version="1.0")
class TrainingProgress(MeshEvent):
    run_id: str = Field(description="Run reporting.")
    epoch: int = Field(ge=0, description="Epoch (0-based).")
    step: int = Field(ge=0, description="Optimiser steps so far.")
    total_steps: int = Field(ge=0, description="Steps the run will take.")
    loss: float = Field(description="Mean training loss since the last report.")


@event("model.trained", stream=Stream.TRAINING, version="1.3")
class ModelTrained(MeshEvent):
    """A candidate exists; the gate decides its fate.

    1.1 added `dataset` (additive): the gate reads the snapshot the candidate was trained on
    straight from the event instead of keeping its own index of dataset versions.
    1.2: the lineage says how to rebuild it (base weights digest, library versions, determinism
    settings) and what it was warm-started from (parent adapter digest, head mapping) — additive.
    1.3 (additive): the lineage records the domain's residency.
    """

    run_id: str = Field(description="Run that made it.")
    model_version: str = Field(description="Id of the candidate.")
    artifact: ArtifactRef = Field(description="The model directory's manifest.")
    labels: tuple[Label, ...] = Field(description="Head labels, in order.")
    lineage: Lineage = Field(description="Where it came from.")
    train_metrics: dict[str, float] = Field(
        default_factory=dict, description="Final train metrics."
    )
    dataset: ArtifactRef | None = Field(
        default=None,
        description="The dataset snapshot trained on (its digest is lineage.dataset_sha256).",
    )


@event("training.failed", stream=Stream.TRAINING, version="1.0")
class TrainingFailed(MeshEvent):
    run_id: str = Field(description="Run that failed.")
    error: str = Field(description="What went wrong.")
    retryable: bool = Field(default=False, description="Whether retrying may succeed.")
