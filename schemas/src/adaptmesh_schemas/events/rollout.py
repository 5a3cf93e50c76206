"""`mesh.rollout.v1`: what each serving replica has actually loaded.

`model.ready` says what *should* serve a domain; these say what every replica *does* serve, so
a user sees a rollout complete across replicas (`adaptmesh watch rollout`): each replica reports
each load (`model.loaded`) or failure (`model.load_failed`), and says every so often that it is
alive and what it serves (`serving.replica_status`), so a watcher knows how many replicas to
expect.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from adaptmesh_schemas.topics import Stream
from adaptmesh_schemas.values import ArtifactRef
from adaptmesh_schemas.versioning import MeshEvent, event


class _ReplicaEvent(MeshEvent):
    replica_id: str = Field(
        min_length=1, description="The serving replica (stable for the process's life)."
    )


class _Load(_ReplicaEvent):
    model_version: str = Field(description="The model the `model.ready` named.")
    artifact: ArtifactRef = Field(description="Its manifest.")
    promotion: int | None = Field(default=None, description="The model.ready's promotion number.")
    ready_event_id: str = Field(description="ce_id of the model.ready record acted on.")


@event("model.loaded", stream=Stream.ROLLOUT, version="1.0")
class ModelLoaded(_Load):
    """The replica verified, loaded and warmed up the model and switched the domain to it."""

    load_seconds: float = Field(
        ge=0, description="Reading, verifying, loading and warming up the model."
    )
    switch_ms: float = Field(
        ge=0, description="From the record read to the switch, loading excluded."
    )
    replaced_version: str | None = Field(
        default=None, description="The model the domain served before, on this replica."
    )


@event("model.load_failed", stream=Stream.ROLLOUT, version="1.0")
class ModelLoadFailed(_Load):
    """The replica could not serve the model; the domain keeps what it served."""

    reason: str = Field(description="Why (digest mismatch, missing file, wrong labels, ...).")
    still_serving: str | None = Field(
        default=None, description="The model the domain keeps serving on this replica."
    )


@event("serving.replica_status", stream=Stream.ROLLOUT, version="1.0")
class ReplicaStatus(_ReplicaEvent):
    """A replica is alive and serves these models (published at start and periodically)."""

    started_at: datetime = Field(description="When the replica started.")
    interval_seconds: float = Field(
        gt=0, description="How often it says so: silent for 3 intervals = gone."
    )
    serving: dict[str, str] = Field(
        default_factory=dict, description="Domain -> model version it serves now."
    )
