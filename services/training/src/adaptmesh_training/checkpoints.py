"""How a trained model travels from the Ray Train worker to the driver: a checkpoint directory.

Rank 0 writes the `TrainedModel` into a directory that Ray Train copies into the run's storage
as a checkpoint; the driver reads it back from `result.checkpoint`. Plain files plus one JSON
description, so nothing is unpickled from a worker.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from adaptmesh_ml import TrainedModel

DESCRIPTION_FILE = "trained.json"
FILES_FOLDER = "files"


class CheckpointError(ValueError):
    """A checkpoint directory that does not hold a trained model."""


class _Description(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    labels: tuple[str, ...] = Field(description="Head labels, in order.")
    files: tuple[str, ...] = Field(description="Names of the model files under files/.")
    metrics: dict[str, float] = Field(description="Training metrics.")
    hyperparameters: dict[str, float | int | str | bool] = Field(
        description="Effective training settings."
    )
    seed: int = Field(description="Training seed.")


def write_checkpoint(trained: TrainedModel, directory: Path) -> None:
    """Write `trained` into the (empty) `directory`."""
    folder = directory / FILES_FOLDER
    folder.mkdir(parents=True)
    for name, data in trained.files.items():
        (folder / _file_name(name)).write_bytes(data)
    description = _Description(
        labels=trained.labels,
        files=tuple(sorted(trained.files)),
        metrics=trained.metrics,
        hyperparameters=trained.hyperparameters,
        seed=trained.seed,
    )
    (directory / DESCRIPTION_FILE).write_text(description.model_dump_json(indent=1))


def read_checkpoint(directory: Path) -> TrainedModel:
    """The `TrainedModel` that `write_checkpoint` wrote into `directory`."""
    try:
        description = _Description.model_validate_json((directory / DESCRIPTION_FILE).read_bytes())
        files = {
            name: (directory / FILES_FOLDER / _file_name(name)).read_bytes()
            for name in description.files
        }
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{directory} holds no readable trained model: {error}") from error
    return TrainedModel(
        labels=description.labels,
        files=files,
        metrics=description.metrics,
        hyperparameters=description.hyperparameters,
        seed=description.seed,
    )


def _file_name(name: str) -> str:
    # Model files are flat; a separator or `..` would write outside the checkpoint.
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        raise CheckpointError(f"{name!r} is not a plain file name")
    return name
