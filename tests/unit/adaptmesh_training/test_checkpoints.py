from __future__ import annotations

from pathlib import Path

import pytest

from adaptmesh_ml import TrainedModel
from adaptmesh_training.checkpoints import CheckpointError, read_checkpoint, write_checkpoint


def test_a_trained_model_survives_the_checkpoint_round_trip(tmp_path: Path) -> None:
    trained = TrainedModel(
        labels=("crude", "grain"),
        files={"adapter_model.safetensors": b"\x00\x01weights", "labels.json": b'["crude"]'},
        metrics={"train_loss": 0.25, "train_steps": 5.0},
        hyperparameters={"epochs": 1, "learning_rate": 5e-4, "padding": "longest", "x": True},
        seed=13,
    )
    write_checkpoint(trained, tmp_path / "checkpoint")
    assert read_checkpoint(tmp_path / "checkpoint") == trained


def test_file_names_cannot_leave_the_checkpoint(tmp_path: Path) -> None:
    trained = TrainedModel(
        labels=("a", "b"), files={"../x": b""}, metrics={}, hyperparameters={}, seed=1
    )
    with pytest.raises(CheckpointError, match="plain file name"):
        write_checkpoint(trained, tmp_path / "checkpoint")


def test_an_incomplete_checkpoint_is_refused(tmp_path: Path) -> None:
    trained = TrainedModel(
        labels=("a", "b"), files={"f": b"1"}, metrics={}, hyperparameters={}, seed=1
    )
    write_checkpoint(trained, tmp_path)
    (tmp_path / "files" / "f").unlink()
    with pytest.raises(CheckpointError, match="no readable trained model"):
        read_checkpoint(tmp_path)
