"""Settings of the evaluation gate: the mesh's shared ones plus `MESH_GATE_*`."""

from __future__ import annotations

from pydantic import Field

from adaptmesh_kit import MeshSettings


class GateSettings(MeshSettings):
    """Shared mesh settings and the gate's own waits."""

    gate_dataset_wait_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long a candidate waits for its dataset version's `dataset.versioned` "
        "to be read (the two topics are consumed independently, e.g. both replay after a "
        "restart) before it is dead-lettered as naming an unknown dataset version.",
    )
    gate_champion_sync_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long a candidate waits for the gate to have read `mesh.models.ready.v1` "
        "up to its end, so it is judged against the real champion (after a restart the log is "
        "replayed). 0 judges against whatever has been read so far.",
    )
