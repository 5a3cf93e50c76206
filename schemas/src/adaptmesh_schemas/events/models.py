"""`mesh.models.ready.v1`: the production model per domain (compacted, key = domain)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from adaptmesh_schemas.topics import Stream
from adaptmesh_schemas.values import ArtifactRef, Label, Lineage, Rollback
from adaptmesh_schemas.versioning import MeshEvent, event


@event("model.ready", stream=Stream.MODELS_READY, version="2.4")
class ModelReady(MeshEvent):
    """This model now serves the domain.

    2.4 (additive): `lineage.residency` records the domain's residency: the model's files lie
    under that residency's artifact root and it was trained on a node offering it.

    2.3 (additive): `promotion` numbers the domain's promotions (1, 2, ...): a consumer never
    moves a domain to a record with a lower number than the one it serves, so a late or stale
    record cannot roll a domain back; a rollback on purpose is a new promotion (a higher
    number) that names what it rolls back in `rollback`.

    2.2 (additive) carries the model's reference profile: how it behaves on its own eval split,
    what drift-sensing calibrates its detectors on.
    2.1 carries the richer lineage of model.trained 1.2 (additive).
    v2 groups the artifact's location and digest into one `artifact` claim check. The topic is
    compacted, so a domain untouched since v1 still has a v1 record as its latest: serving must
    read it, which is what `upcast_v1_v2` is for.
    """

    model_version: str = Field(description="Id of the production model.")
    artifact: ArtifactRef = Field(description="The model directory's manifest.")
    labels: tuple[Label, ...] = Field(description="Head labels, in order.")
    lineage: Lineage = Field(description="Where it came from.")
    gate_report: ArtifactRef | None = Field(default=None, description="The approving report.")
    reference_profile: ArtifactRef | None = Field(
        default=None,
        description="The model's behaviour on its eval split (a `ReferenceProfile` document), "
        "written by the gate at promotion; drift-sensing watches the model against it.",
    )
    promotion: int | None = Field(
        default=None,
        ge=1,
        description="This domain's promotion number: one more than the record it replaces "
        "(unset on records written before 2.3, which count as older than any numbered one).",
    )
    rollback: Rollback | None = Field(
        default=None,
        description="Set when this promotion puts an earlier model back on purpose.",
    )

    @classmethod
    def upcast_v1_v2(cls, data: dict[str, Any]) -> dict[str, Any]:
        """v1 had flat `artifact_uri` / `artifact_sha256`."""
        upgraded = {k: v for k, v in data.items() if k not in ("artifact_uri", "artifact_sha256")}
        upgraded["artifact"] = {
            "uri": data.get("artifact_uri"),
            "sha256": data.get("artifact_sha256"),
        }
        return upgraded
