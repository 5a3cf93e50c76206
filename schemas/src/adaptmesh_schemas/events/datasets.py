"""`mesh.datasets.v1`: immutable dataset versions made by ingestion."""

from __future__ import annotations

from pydantic import Field

from adaptmesh_schemas.topics import Stream
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, Label, Residency, Value
from adaptmesh_schemas.versioning import MeshEvent, event


class DatasetCounts(Value):
    train: int = Field(ge=0, description="Examples in the train split.")
    eval: int = Field(ge=0, description="Examples in the eval split.")
    must_pass: int = Field(default=0, ge=0, description="Must-pass cases in force.")
    per_label: dict[str, int] = Field(default_factory=dict, description="Examples per label.")


@event("dataset.versioned", stream=Stream.DATASETS, version="1.1")
class DatasetVersioned(MeshEvent):
    """A new content-addressed dataset version with its deterministic split.

    1.1 (additive): `residency`, the domain's, under whose root the version lies.
    """

    dataset_version: str = Field(description="Id of the version (derived from its digest).")
    artifact: ArtifactRef = Field(description="The version's manifest in the artifact store.")
    parent_version: str | None = Field(default=None, description="Version it was derived from.")
    labels: tuple[Label, ...] = Field(description="The taxonomy in force, in head order.")
    taxonomy_version: str = Field(description="Taxonomy version in force.")
    recipe_version: str = Field(description="Recipe version in force.")
    base_model: BaseModelSpec = Field(description="Base model the recipe names.")
    counts: DatasetCounts = Field(description="Sizes.")
    change_kind: str = Field(description="Kind of change that made it (recipe, taxonomy, ...).")
    cause_event_ids: tuple[str, ...] = Field(description="ce_id of the events folded in.")
    residency: Residency | None = Field(
        default=None,
        description="The domain's residency (its recipe's); the version lies under that "
        "residency's artifact root. Unset = no constraint.",
    )
