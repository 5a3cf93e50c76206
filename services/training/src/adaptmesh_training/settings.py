"""The training service's settings: the mesh's shared ones plus `MESH_TRAINING_*`."""

from __future__ import annotations

from pydantic import Field

from adaptmesh_kit import MeshSettings


class TrainingSettings(MeshSettings):
    """How the training service runs Ray Train. Ray itself is found through `RAY_ADDRESS`
    (unset: a local Ray started by the service)."""

    training_workers: int = Field(
        default=1,
        ge=1,
        description="Ray Train workers per run (each takes one CPU; on a single small machine "
        "one worker is as fast as two).",
    )
    training_max_failures: int = Field(
        default=1,
        ge=0,
        description="Times Ray Train restarts a run whose workers failed before the run is "
        "reported as failed.",
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
