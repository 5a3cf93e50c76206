"""A run's facts as the events of `mesh.training.v1` (the translation, kept free of the broker)."""

from __future__ import annotations

from adaptmesh_ml import TrainingProgress as StepProgress
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.events import (
    ModelTrained,
    RetrainRequested,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)
from adaptmesh_schemas.values import ArtifactRef, Lineage
from adaptmesh_training.failures import describe_failure


def started_event(
    request: RetrainRequested, snapshot: DatasetSnapshot, run_id: str, workers: int
) -> TrainingStarted:
    return TrainingStarted(
        domain=request.domain,
        run_id=run_id,
        dataset_version=request.dataset_version,
        recipe_version=snapshot.recipe.recipe_version,
        workers=workers,
    )


def progress_event(domain: str, run_id: str, step: StepProgress) -> TrainingProgress:
    """The contract counts epochs from 0; the training loop reports them from 1."""
    return TrainingProgress(
        domain=domain,
        run_id=run_id,
        epoch=max(step.epoch - 1, 0),
        step=step.step,
        total_steps=step.total_steps,
        loss=step.loss,
    )


def trained_event(
    domain: str,
    *,
    run_id: str,
    model_version: str,
    artifact: ArtifactRef,
    labels: tuple[str, ...],
    metrics: dict[str, float],
    lineage: Lineage,
    dataset: ArtifactRef,
) -> ModelTrained:
    return ModelTrained(
        domain=domain,
        run_id=run_id,
        model_version=model_version,
        artifact=artifact,
        labels=labels,
        lineage=lineage,
        train_metrics=metrics,
        dataset=dataset,
    )


def failed_event(domain: str, run_id: str, error: BaseException) -> TrainingFailed:
    failure = describe_failure(error)
    return TrainingFailed(
        domain=domain, run_id=run_id, error=failure.error, retryable=failure.retryable
    )
