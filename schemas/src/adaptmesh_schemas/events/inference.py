"""`mesh.inference.v1`: sampled predictions, for drift detection."""

from __future__ import annotations

from pydantic import Field

from adaptmesh_schemas.topics import Stream
from adaptmesh_schemas.values import Label
from adaptmesh_schemas.versioning import MeshEvent, event

MAX_LOGGED_TEXT_CHARS = 4000


@event("inference.logged", stream=Stream.INFERENCE, version="1.1")
class InferenceLogged(MeshEvent):
    """One sampled prediction.

    1.1 (additive): the input `text` (so that drift-sensing can offer the most uncertain recent
    inputs for labelling) and the prediction's `margin`.
    """

    prediction_id: str = Field(description="Id returned to the caller.")
    model_version: str = Field(description="Model that answered.")
    label: Label = Field(description="Predicted label.")
    confidence: float = Field(ge=0, le=1, description="Probability of the predicted label.")
    embedding_sketch: tuple[float, ...] = Field(
        default=(), max_length=64, description="Low-dimensional random projection of the embedding."
    )
    text: str | None = Field(
        default=None,
        max_length=MAX_LOGGED_TEXT_CHARS,
        description="The input, when serving logs texts (cut to its first "
        f"{MAX_LOGGED_TEXT_CHARS:,} characters).",
    )
    margin: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Probability of the predicted label minus that of the runner-up.",
    )
