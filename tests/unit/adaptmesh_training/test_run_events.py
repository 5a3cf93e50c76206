from __future__ import annotations

import pytest
from ray.exceptions import ActorDiedError

from adaptmesh_kit import ArtifactError, ArtifactIntegrityError
from adaptmesh_ml import (
    BaseModelNotFoundError,
    TrainedModel,
    TrainingCancelledError,
    UnsupportedArchitectureError,
)
from adaptmesh_ml import TrainingProgress as StepProgress
from adaptmesh_schemas.events import RetrainReason, RetrainRequested
from adaptmesh_schemas.values import ArtifactRef
from adaptmesh_training.failures import (
    MAX_ERROR_CHARS,
    DatasetMismatchError,
    WorkersKeptFailingError,
    describe_failure,
)
from adaptmesh_training.lineage import build_lineage
from adaptmesh_training.run_events import (
    failed_event,
    progress_event,
    started_event,
    trained_event,
)
from tests.unit.adaptmesh_training.snapshots import tiny_snapshot

DATASET = ArtifactRef(uri="file:///store/sha256/dd/dataset", sha256="d" * 64)
REF = ArtifactRef(uri="file:///store/x", sha256="cd" * 32)
REQUEST = RetrainRequested(
    domain="fin-news", reason=RetrainReason.TAXONOMY, dataset_version="ds-1", dataset=REF
)


def test_progress_counts_epochs_from_zero_as_the_contract_says() -> None:
    event = progress_event(
        "fin-news", "run1", StepProgress(epoch=1, step=5, total_steps=10, loss=0.7)
    )
    assert (event.domain, event.run_id) == ("fin-news", "run1")
    assert (event.epoch, event.step, event.total_steps, event.loss) == (0, 5, 10, 0.7)
    assert progress_event("d", "r", StepProgress(3, 30, 30, 0.1)).epoch == 2


def test_started_names_dataset_recipe_and_workers() -> None:
    event = started_event(REQUEST, tiny_snapshot("fin-news", recipe_version="r3"), "run1", 2)
    assert (event.run_id, event.dataset_version, event.recipe_version, event.workers) == (
        "run1",
        "ds-1",
        "r3",
        2,
    )


def test_trained_carries_the_manifest_ref_labels_lineage_and_metrics() -> None:
    trained = TrainedModel(
        labels=("a", "b"), files={}, metrics={"train_loss": 0.2}, hyperparameters={}, seed=7
    )
    lineage = build_lineage(
        request=REQUEST,
        snapshot=tiny_snapshot("fin-news"),
        trained=trained,
        parent_version=None,
        parent_artifact=None,
        base_sha256="ee" * 32,
        correlation_id="c",
        code="0.1.0",
    )
    event = trained_event(
        "fin-news",
        run_id="run1",
        model_version="m-1",
        artifact=REF,
        labels=trained.labels,
        metrics=trained.metrics,
        lineage=lineage,
        dataset=DATASET,
    )
    assert event.artifact == REF
    assert event.dataset == DATASET
    assert event.labels == ("a", "b")
    assert event.lineage == lineage
    assert event.train_metrics == {"train_loss": 0.2}


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ArtifactIntegrityError("artifact x has sha256 0, expected 1"), False),
        (ArtifactError("artifact x does not exist"), False),
        (BaseModelNotFoundError("base model package 'nope' is not installed"), False),
        (DatasetMismatchError("dataset belongs to another domain"), False),
        (ActorDiedError(), True),
        (WorkersKeptFailingError("run r lost its workers 3 times"), True),
        (TrainingCancelledError("superseded"), False),
        (UnsupportedArchitectureError("no LoRA targets for 'xlnet'"), False),
        (OSError(28, "No space left on device"), True),
        (RuntimeError("a bug"), False),
    ],
)
def test_failures_are_retryable_only_when_circumstances_could_change(
    error: Exception, retryable: bool
) -> None:
    event = failed_event("fin-news", "run1", error)
    assert event.retryable is retryable
    assert event.error.startswith(type(error).__name__ + ": ")
    assert event.run_id == "run1"


def test_long_errors_are_cut_to_keep_events_small() -> None:
    failure = describe_failure(RuntimeError("x" * 10_000))
    assert len(failure.error) == MAX_ERROR_CHARS
