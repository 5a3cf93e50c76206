"""`mesh.feedback.v1`: ground truth for served predictions."""

from __future__ import annotations

from pydantic import Field

from adaptmesh_schemas.topics import Stream
from adaptmesh_schemas.values import Label, Residency
from adaptmesh_schemas.versioning import MeshEvent, event


@event("feedback.submitted", stream=Stream.FEEDBACK, version="1.1")
class FeedbackSubmitted(MeshEvent):
    """The true label of a prediction serving made.

    1.1 (additive): `residency` tags where the text may live.
    """

    prediction_id: str = Field(min_length=1, description="Id returned by the predict endpoint.")
    text: str = Field(min_length=1, description="The text that was classified.")
    true_label: Label = Field(description="The correct label.")
    predicted_label: Label | None = Field(default=None, description="What the model said.")
    residency: Residency | None = Field(
        default=None,
        description="Where this data may live (1.1). Refused (dead-lettered) when the domain "
        "declares another residency; unset = the domain's own.",
    )
