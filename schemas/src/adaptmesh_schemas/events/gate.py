"""`mesh.gate.v1`: the evaluation gate's decisions."""

from __future__ import annotations

from pydantic import Field

from adaptmesh_schemas.topics import Stream
from adaptmesh_schemas.values import ArtifactRef, Label, Lineage, Rollback, Value
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
    report_html: ArtifactRef | None = Field(
        default=None,
        description="The same report as a self-contained HTML page (heatmaps, intervals, "
        "slices, checks, lineage); 1.1.",
    )
    artifact: ArtifactRef | None = Field(
        default=None, description="The candidate's model manifest (1.1)."
    )
    labels: tuple[Label, ...] = Field(default=(), description="The candidate's head labels (1.1).")
    lineage: Lineage | None = Field(default=None, description="The candidate's lineage (1.1).")


@event("gate.approved", stream=Stream.GATE, version="1.2")
class GateApproved(_GateDecision):
    """The candidate passed every check and becomes the champion.

    1.1 (additive): the HTML report, and the candidate's artifact, labels, lineage and
    reference profile, so the topic alone can re-promote any approved model (rollback).
    1.2 (additive): the lineage records the domain's residency.
    """

    reference_profile: ArtifactRef | None = Field(
        default=None, description="The candidate's reference profile, written at approval (1.1)."
    )


@event("gate.rejected", stream=Stream.GATE, version="1.2")
class GateRejected(_GateDecision):
    """The candidate failed at least one check; production is unchanged.

    1.1 (additive): the HTML report, and the candidate's artifact, labels and lineage.
    1.2 (additive): the lineage records the domain's residency.
    """


@event("gate.rolled_back", stream=Stream.GATE, version="1.0")
class RolledBack(MeshEvent):
    """A `change.rollback` was carried out: `model_version` serves the domain again."""

    model_version: str = Field(description="The earlier approved model now serving again.")
    artifact: ArtifactRef = Field(description="Its manifest, verified before the promotion.")
    rollback: Rollback = Field(description="What was rolled back, who asked and why.")
    promotion: int = Field(ge=1, description="The `model.ready` promotion number it got.")


@event("gate.rollback_refused", stream=Stream.GATE, version="1.0")
class RollbackRefused(MeshEvent):
    """A `change.rollback` the gate would not carry out; production is unchanged."""

    requested_version: str | None = Field(
        description="The model asked for (unset: the previous champion was asked for)."
    )
    current_version: str | None = Field(description="The model serving the domain, unchanged.")
    requested_by: str = Field(description="Who asked.")
    request_reason: str = Field(description="The reason the requester gave.")
    request_id: str = Field(description="ce_id of the change.rollback.")
    reasons: tuple[str, ...] = Field(description="Why it was refused.")
