"""Settings of the ingestion service (environment prefix `MESH_`)."""

from __future__ import annotations

from adaptmesh_kit import MeshSettings


class IngestionSettings(MeshSettings):
    """The shared mesh settings; ingestion needs none of its own (`MESH_INGESTION_*`).

    `MESH_STATE_DIR` matters here: each domain's latest dataset version is recorded there
    (`ingestion.heads.sqlite3`) and survives a restart; without it the state lives in memory.
    """
