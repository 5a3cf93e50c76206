"""Settings of the ingestion service (environment prefix `MESH_`)."""

from __future__ import annotations

from pydantic import Field

from adaptmesh_kit import MeshSettings


class IngestionSettings(MeshSettings):
    """The shared mesh settings plus `MESH_INGESTION_*`.

    `MESH_STATE_DIR` matters here: each domain's latest dataset version is recorded there
    (`ingestion.heads.sqlite3`) and survives a restart; without it the state lives in memory.
    """

    ingestion_fleet_sync_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a base-model release waits for the fleet index to have read "
        "`mesh.datasets.v1` up to its end, so no domain on the old base is missed (after a start "
        "the topic is replayed). 0 fans out over whatever has been read so far (in-memory tests).",
    )
