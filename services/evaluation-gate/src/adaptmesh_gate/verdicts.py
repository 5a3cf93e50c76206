"""What the gate says about a candidate: the report document and the events that cite it."""

from __future__ import annotations

from adaptmesh_schemas.documents import GateReport, ModelEvaluation
from adaptmesh_schemas.events import GateApproved, GateRejected, ModelReady, ModelTrained
from adaptmesh_schemas.values import ArtifactRef


def gate_report(
    trained: ModelTrained,
    candidate: ModelEvaluation,
    champion: ModelEvaluation | None,
    *,
    approved: bool,
    reasons: tuple[str, ...],
) -> GateReport:
    """The full record of the judgement (confusion matrices and case outcomes included)."""
    return GateReport(
        domain=trained.domain,
        dataset_version=trained.lineage.dataset_version,
        candidate=candidate,
        champion=champion,
        approved=approved,
        reasons=reasons,
    )


def decision_event(report: GateReport, report_ref: ArtifactRef) -> GateApproved | GateRejected:
    """`gate.approved` or `gate.rejected`, summarising `report` and pointing at it."""
    candidate, champion = report.candidate, report.champion
    decision = GateApproved if report.approved else GateRejected
    return decision(
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
    )


def model_ready(
    trained: ModelTrained, report_ref: ArtifactRef, profile_ref: ArtifactRef | None = None
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
    )
