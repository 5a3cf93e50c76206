"""The training service's settings: the mesh's shared ones plus `MESH_TRAINING_*`."""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from adaptmesh_kit import MeshSettings
from adaptmesh_schemas.values import RESIDENCY_PATTERN


class TrainingSettings(MeshSettings):
    """How the training service runs its warm Ray workers. Ray itself is found through `RAY_ADDRESS`
    (unset: a local Ray started by the service)."""

    training_workers: int = Field(
        default=1,
        ge=1,
        description="Warm Ray workers training each run together (distributed data-parallel "
        "when more than one; on a single small machine one worker with every core is as fast "
        "as two).",
    )
    training_max_failures: int = Field(
        default=2,
        ge=0,
        description="Times a run is resumed from its last checkpoint after its workers died "
        "before it is reported as failed.",
    )
    training_catch_up_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How long a run's first start waits for this instance to have read the "
        "models-ready and datasets topics to their ends (so it knows the champion to "
        "warm-start from); 0 = do not wait.",
    )
    training_checkpoint_every_steps: int = Field(
        default=50,
        ge=1,
        description="Optimiser steps between two checkpoints (there is one at every epoch's "
        "end too).",
    )
    training_num_cpus: int | None = Field(
        default=None,
        ge=1,
        description="CPUs the local Ray may use; unset: every core. Ignored when joining a "
        "cluster through RAY_ADDRESS.",
    )
    training_progress_every_steps: int = Field(
        default=5, ge=1, description="Optimiser steps between two training.progress events."
    )
    training_cpus_per_worker: int | None = Field(
        default=None,
        ge=1,
        description="CPUs (and so torch threads) each training worker takes; unset: this "
        "machine's cores shared evenly between the workers.",
    )

    # NoDecode: written `eu,us`, not as JSON.
    training_residencies: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Residencies the local Ray node offers, comma-separated (`eu,us`): a run "
        "of a domain with a residency trains only on a node carrying the Ray custom resource "
        "`residency:<tag>`, and fails at once when none does. Ignored when joining a cluster "
        "through RAY_ADDRESS (its nodes say what they offer).",
    )

    @field_validator("training_residencies", mode="before")
    @classmethod
    def _split_residencies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("training_residencies")
    @classmethod
    def _check_residencies(cls, residencies: tuple[str, ...]) -> tuple[str, ...]:
        for residency in residencies:
            if not re.fullmatch(RESIDENCY_PATTERN, residency):
                raise ValueError(f"{residency!r} is not a residency tag (e.g. eu, us-east)")
        return residencies

    def cpus_per_worker(self) -> int:
        if self.training_cpus_per_worker is not None:
            return self.training_cpus_per_worker
        return max(1, (os.cpu_count() or 1) // self.training_workers)
