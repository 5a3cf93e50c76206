"""One tiny model trained per session, shared by the tests that only read it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from adaptmesh_ml import Classifier, TrainedModel, TrainingProgress, train_classifier
from tests.unit.adaptmesh_ml import tiny_domain


@dataclass(frozen=True)
class TrainingRun:
    trained: TrainedModel
    progress: list[TrainingProgress]


@pytest.fixture(scope="session")
def training_run() -> TrainingRun:
    progress: list[TrainingProgress] = []
    trained = train_classifier(
        tiny_domain.snapshot(), on_progress=progress.append, progress_every_steps=2
    )
    return TrainingRun(trained, progress)


@pytest.fixture(scope="session")
def trained(training_run: TrainingRun) -> TrainedModel:
    return training_run.trained


@pytest.fixture(scope="session")
def classifier(trained: TrainedModel) -> Classifier:
    return Classifier.from_trained(trained, tiny_domain.BASE_MODEL, "tiny-v1")
