"""`mesh.inference.v1`: sampled predictions, for drift detection."""

from __future__ import annotations

from pydantic import Field

from adaptmesh_schemas.topics import Stream
from adaptmesh_schemas.values import Label
from adaptmesh_schemas.versioning import MeshEvent, event


@event("inference.logged", stream=Stream.INFERENCE, version="1.0")
class InferenceLogged(MeshEvent):
    """One sampled prediction."""

    prediction_id: str = Field(description="Id returned to the caller.")
    model_version: str = Field(description="Model that answered.")
    label: Label = Field(description="Predicted label.")
    confidence: float = Field(ge=0, le=1, description="Probability of the predicted label.")
    embedding_sketch: tuple[float, ...] = Field(
        default=(), max_length=64, description="Low-dimensional random projection of the embedding."
    )
