"""`mesh.gate.v1`: the evaluation gate's decisions."""

from __future__ import annotations

from pydantic import Field

from adaptmesh_schemas.topics import Stream
from adaptmesh_schemas.values import ArtifactRef, Value
from adaptmesh_schemas.versioning import MeshEvent, event


class LabelMetrics(Value):
    precision: float = Field(ge=0, le=1, description="Precision.")
    recall: float = Field(ge=0, le=1, description="Recall.")
    f1: float = Field(ge=0, le=1, description="F1.")
    support: int = Field(ge=0, description="Eval examples with this true label.")


class _GateDecision(MeshEvent):
    model_version: str = Field(description="The candidate judged.")
    champion_version: str | None = Field(default=None, description="Production model compared.")
    macro_f1: float = Field(ge=0, le=1, description="Candidate macro-F1 on the eval split.")
    champion_macro_f1: float | None = Field(default=None, description="Champion's, same split.")
    must_pass_passed: int = Field(ge=0, description="Must-pass cases right.")
    must_pass_total: int = Field(ge=0, description="Must-pass cases in force.")
    per_label: dict[str, LabelMetrics] = Field(default_factory=dict, description="Per label.")
    reasons: tuple[str, ...] = Field(default=(), description="Why, one line per check.")
    report: ArtifactRef = Field(description="Full report (confusion matrix, cases) as JSON.")


@event("gate.approved", stream=Stream.GATE, version="1.0")
class GateApproved(_GateDecision):
    """The candidate passed every check and becomes the champion."""


@event("gate.rejected", stream=Stream.GATE, version="1.0")
class GateRejected(_GateDecision):
    """The candidate failed at least one check; production is unchanged."""
