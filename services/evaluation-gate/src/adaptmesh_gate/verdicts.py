"""What the gate says: the report document and the events that cite it or promote a model."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from adaptmesh_gate.champions import ApprovedModel
from adaptmesh_gate.policy import Decision
from adaptmesh_schemas.documents import GateReport, ModelEvaluation, ReportedModel
from adaptmesh_schemas.events import (
    GateApproved,
    GateRejected,
    ModelReady,
    ModelTrained,
    RollbackRefused,
    RollbackRequested,
    RolledBack,
)
from adaptmesh_schemas.values import ArtifactRef, GatePolicy, Rollback

# Ids of what the gate publishes about one event are derived from that event's id: a record
# judged twice (its first outcome lost to a crash, or by a fenced instance) yields the same ids,
# which consumers drop as already seen.
_IDS = uuid.UUID("6f0b1c1e-52d4-4c3e-9a43-0c1f3b0f6a57")


def derived_event_id(cause_id: str, what: str) -> str:
    """The id of the `what` event the gate publishes because of event `cause_id`."""
    return str(uuid.uuid5(_IDS, f"{cause_id}/{what}"))


def gate_report(
    trained: ModelTrained,
    candidate: ModelEvaluation,
    champion: ModelEvaluation | None,
    *,
    decision: Decision,
    policy: GatePolicy,
    champion_ready: ModelReady | None,
) -> GateReport:
    """The full record of the judgement: both evaluations, every check, the statistics and
    the lineage of both models."""
    return GateReport(
        domain=trained.domain,
        dataset_version=trained.lineage.dataset_version,
        candidate=candidate,
        champion=champion,
        approved=decision.approved,
        reasons=decision.reasons,
        decided_at=datetime.now(UTC),
        policy=policy,
        checks=decision.checks,
        comparison=decision.comparison,
        slices=decision.slices,
        candidate_model=ReportedModel(
            model_version=trained.model_version,
            artifact=trained.artifact,
            labels=trained.labels,
            lineage=trained.lineage,
        ),
        champion_model=None
        if champion_ready is None
        else ReportedModel(
            model_version=champion_ready.model_version,
            artifact=champion_ready.artifact,
            labels=champion_ready.labels,
            lineage=champion_ready.lineage,
        ),
    )


def decision_event(
    trained: ModelTrained,
    report: GateReport,
    report_ref: ArtifactRef,
    report_html: ArtifactRef | None,
    profile_ref: ArtifactRef | None = None,
) -> GateApproved | GateRejected:
    """`gate.approved` or `gate.rejected`, summarising `report` and pointing at it."""
    candidate, champion = report.candidate, report.champion
    decision_type = GateApproved if report.approved else GateRejected
    decision = decision_type(
        domain=report.domain,
        model_version=candidate.model_version,
        champion_version=champion.model_version if champion else None,
        macro_f1=candidate.macro_f1,
        champion_macro_f1=champion.macro_f1 if champion else None,
        must_pass_passed=sum(outcome.passed for outcome in candidate.must_pass),
        must_pass_total=len(candidate.must_pass),
        per_label=candidate.per_label,
        reasons=report.reasons,
        report=report_ref,
        report_html=report_html,
        artifact=trained.artifact,
        labels=trained.labels,
        lineage=trained.lineage,
    )
    if isinstance(decision, GateApproved) and profile_ref is not None:
        return decision.model_copy(update={"reference_profile": profile_ref})
    return decision


def model_ready(
    trained: ModelTrained,
    report_ref: ArtifactRef,
    profile_ref: ArtifactRef | None,
    *,
    promotion: int,
) -> ModelReady:
    """The promotion of an approved candidate: it serves its domain from now on.

    `profile_ref` is its stored reference profile (what drift-sensing watches it against).
    """
    return ModelReady(
        domain=trained.domain,
        model_version=trained.model_version,
        artifact=trained.artifact,
        labels=trained.labels,
        lineage=trained.lineage,
        gate_report=report_ref,
        reference_profile=profile_ref,
        promotion=promotion,
    )


def rollback_promotion(
    target: ApprovedModel, rollback: Rollback, *, domain: str, promotion: int
) -> tuple[RolledBack, ModelReady]:
    """`gate.rolled_back` and the `model.ready` that puts `target` back into production."""
    ready = ModelReady(
        domain=domain,
        model_version=target.model_version,
        artifact=target.artifact,
        labels=target.labels,
        lineage=target.lineage,
        gate_report=target.gate_report,
        reference_profile=target.reference_profile,
        promotion=promotion,
        rollback=rollback,
    )
    done = RolledBack(
        domain=domain,
        model_version=target.model_version,
        artifact=target.artifact,
        rollback=rollback,
        promotion=promotion,
    )
    return done, ready


def rollback_refused(
    request: RollbackRequested,
    request_id: str,
    requested_by: str,
    current: ModelReady | None,
    reasons: tuple[str, ...],
) -> RollbackRefused:
    return RollbackRefused(
        domain=request.domain,
        requested_version=request.to_version,
        current_version=current.model_version if current else None,
        requested_by=requested_by,
        request_reason=request.reason,
        request_id=request_id,
        reasons=reasons,
    )
