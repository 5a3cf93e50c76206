from __future__ import annotations

import pytest
from pydantic import ValidationError

from adaptmesh_training.app import ray_cluster_for
from adaptmesh_training.settings import TrainingSettings


def test_defaults_are_one_worker_two_resumes_and_every_core() -> None:
    settings = TrainingSettings()
    assert settings.training_workers == 1
    assert settings.training_max_failures == 2
    assert settings.training_checkpoint_every_steps == 50
    assert settings.training_num_cpus is None
    assert settings.training_progress_every_steps == 5


def test_training_variables_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_TRAINING_WORKERS", "2")
    monkeypatch.setenv("MESH_TRAINING_NUM_CPUS", "4")
    monkeypatch.setenv("MESH_TRAINING_MAX_FAILURES", "0")
    settings = TrainingSettings()
    assert (settings.training_workers, settings.training_num_cpus) == (2, 4)
    assert settings.training_max_failures == 0


def test_a_mistyped_training_variable_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_TRAINING_WORKER", "2")
    with pytest.raises(ValidationError, match="MESH_TRAINING_WORKER"):
        TrainingSettings()


def test_zero_workers_is_invalid() -> None:
    with pytest.raises(ValidationError):
        TrainingSettings(training_workers=0)


def test_the_residencies_the_local_node_offers_are_a_comma_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert TrainingSettings().training_residencies == ()
    monkeypatch.setenv("MESH_TRAINING_RESIDENCIES", "eu, us-east")
    assert TrainingSettings().training_residencies == ("eu", "us-east")
    # The service process's Ray offers them (it builds its own Ray, to stop it last).
    assert ray_cluster_for(TrainingSettings()).residencies == ("eu", "us-east")
    monkeypatch.setenv("MESH_TRAINING_RESIDENCIES", "EU")
    with pytest.raises(ValidationError, match="not a residency tag"):
        TrainingSettings()
