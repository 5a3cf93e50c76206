"""The evaluation gate on FastStream's in-memory broker, with prepared evaluations.

The model loading and scoring is replaced by an evaluator function handed to `build_app`;
everything else (dataset registry, champion tracking, policy, report, events) is the real
service. In memory a publish delivers to every subscriber before it returns, so the gate's
whole reaction to an event has happened when `app.publish` returns.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from faststream.kafka import TestKafkaBroker
from faststream.kafka.message import KafkaMessage

from adaptmesh_gate.app import build_app
from adaptmesh_gate.evaluation import EvalSet, Evaluated
from adaptmesh_gate.settings import GateSettings
from adaptmesh_kit import ArtifactIntegrityError, MeshApp
from adaptmesh_schemas import Envelope, MeshEvent, Stream, decode_event, read_envelope
from adaptmesh_schemas.documents import (
    GateReport,
    ModelEvaluation,
    ModelManifest,
    MustPassOutcome,
    ReferenceExample,
    ReferenceProfile,
)
from adaptmesh_schemas.events import (
    DatasetVersioned,
    DeadLetterRecorded,
    GateApproved,
    GateRejected,
    LabelMetrics,
    ModelReady,
    RollbackRefused,
    RollbackRequested,
    RolledBack,
    TrainingFailed,
    TrainingStarted,
)
from adaptmesh_schemas.values import (
    ArtifactRef,
    BaseModelSpec,
    DriftPolicy,
    GatePolicy,
    Lineage,
    Rollback,
)
from tests.component.adaptmesh_gate.gate_events import model_trained, snapshot, store_dataset

DOMAIN = "fin-news"
EXAMPLES: list[tuple[str, str, Any]] = [
    ("gold rallied", "gold", "train"),
    ("bullion demand", "gold", "eval"),
    ("tariffs rose", "trade", "train"),
    ("exports fell", "trade", "eval"),
]
CASES = (("gold-1", "gold prices hit a record", "gold"), ("trade-1", "a new tariff", "trade"))
# Not the default policy, so that a profile carrying the default would be caught.
DRIFT = DriftPolicy(ert=2000, window=30, on_detect="alert", max_accuracy_drop=0.1)


class PreparedEvaluations:
    """An evaluator that answers from a table, keyed by model manifest digest.

    Like the real one it profiles every model it evaluates (unless `profiles` is off, as for
    an evaluator that cannot): every eval example answered right, with a fixed sketch.
    """

    def __init__(self, *, profiles: bool = True) -> None:
        self.by_digest: dict[str, ModelEvaluation] = {}
        # Texts of eval examples each model (by digest) gets wrong.
        self.wrong_on: dict[str, frozenset[str]] = {}
        self.broken: set[str] = set()
        self.calls: list[tuple[str, str, list[str], list[str]]] = []
        self.eval_sets: list[EvalSet] = []
        self.profiles: dict[str, ReferenceProfile] = {}
        self._with_profiles = profiles

    def __call__(self, model: ArtifactRef, on: EvalSet, /) -> Evaluated:
        self.calls.append(
            (
                on.domain,
                model.sha256,
                [e.text for e in on.examples],
                [c.case_id for c in on.must_pass],
            )
        )
        self.eval_sets.append(on)
        if model.sha256 in self.broken:
            raise ArtifactIntegrityError(f"artifact {model.uri} has sha256 0000, expected ...")
        evaluation = self.by_digest[model.sha256]
        # Like the real evaluation: one outcome per case in force.
        outcomes = {o.case_id: o for o in evaluation.must_pass}
        evaluation = evaluation.model_copy(
            update={"must_pass": tuple(outcomes[case.case_id] for case in on.must_pass)}
        )
        # One answer per eval example, for the paired statistics: right unless listed wrong.
        wrong = self.wrong_on[model.sha256]
        predictions = tuple(
            ("trade" if example.label == "gold" else "gold")
            if example.text in wrong
            else example.label
            for example in on.examples
        )
        if not self._with_profiles:
            return Evaluated(evaluation, predictions=predictions)
        profile = ReferenceProfile(
            domain=on.domain,
            model_version=evaluation.model_version,
            dataset_version=on.dataset_version,
            labels=("gold", "trade"),
            sketch_dimensions=2,
            accuracy=1.0,
            drift=on.drift,
            examples=tuple(
                ReferenceExample(
                    example_id=example.example_id,
                    label=example.label,
                    predicted=example.label,
                    confidence=0.9,
                    margin=0.8,
                    embedding_sketch=(0.25, -0.5),
                )
                for example in on.examples
            ),
        )
        self.profiles[evaluation.model_version] = profile
        return Evaluated(evaluation, profile, predictions)

    def add(
        self,
        version: str,
        f1: dict[str, float],
        wrong_cases: tuple[str, ...] = (),
        wrong_examples: tuple[str, ...] = (),
    ) -> ArtifactRef:
        """A model whose evaluation has these per-label F1s and which answers the eval
        examples with these texts wrong; returns its (fake) manifest ref."""
        digest = f"{len(self.by_digest) + 1:064x}"
        self.wrong_on[digest] = frozenset(wrong_examples)
        self.by_digest[digest] = ModelEvaluation(
            model_version=version,
            macro_f1=sum(f1.values()) / len(f1),
            accuracy=0.5,
            per_label={
                label: LabelMetrics(precision=score, recall=score, f1=score, support=1)
                for label, score in f1.items()
            },
            confusion={"gold": {"gold": 1, "trade": 0}, "trade": {"gold": 0, "trade": 1}},
            must_pass=tuple(
                MustPassOutcome(
                    rule_id="RULE-1",
                    case_id=case_id,
                    expected_label=label,
                    predicted_label="trade" if case_id in wrong_cases else label,
                    passed=case_id not in wrong_cases,
                )
                for case_id, _, label in CASES
            ),
        )
        return ArtifactRef(uri=f"file:///models/{version}/manifest.json", sha256=digest)


class PreparedManifests:
    """A model verifier answering from the prepared evaluations: the manifest of a known
    model, or `ArtifactIntegrityError` for one marked tampered."""

    def __init__(self, evaluations: PreparedEvaluations) -> None:
        self._evaluations = evaluations
        self.tampered: set[str] = set()
        self.verified: list[str] = []

    def __call__(self, model: ArtifactRef, /) -> ModelManifest:
        self.verified.append(model.sha256)
        if model.sha256 in self.tampered:
            raise ArtifactIntegrityError(f"{model.uri}: adapter.safetensors has sha256 0bad...")
        version = self._evaluations.by_digest[model.sha256].model_version
        return ModelManifest(
            domain=DOMAIN,
            model_version=version,
            task="sequence-classification",
            labels=("gold", "trade"),
            files=(),
            lineage=Lineage(
                dataset_version="ds-1",
                dataset_sha256="0" * 64,
                recipe_version="r1",
                base_model=BaseModelSpec(model_id="package:tiny"),
                code_version="test",
                seed=13,
                correlation_id="change-1",
            ),
        )


class Published:
    """Every event the gate publishes on one stream, with its envelope."""

    def __init__(self, app: MeshApp, stream: Stream) -> None:
        self.records: list[tuple[Envelope, MeshEvent]] = []

        async def whole_message(message: KafkaMessage, original: Any) -> KafkaMessage:
            return message

        @app.broker.subscriber(app.topic(stream), decoder=whole_message)
        async def collect(message: KafkaMessage) -> None:
            record = message.raw_message
            assert not isinstance(record, tuple), "not a batch subscriber"
            envelope = read_envelope(record.headers)
            self.records.append((envelope, decode_event(envelope, message.body)))

    @property
    def events(self) -> list[MeshEvent]:
        return [event for _, event in self.records]


class Gate:
    """A gate app in memory, what it publishes, and the prepared evaluations it uses."""

    def __init__(self, tmp_path: Path, *, profiles: bool = True, **settings: Any) -> None:
        self.artifact_dir = tmp_path / "artifacts"
        values: dict[str, Any] = {
            "artifact_root": f"file://{tmp_path}/artifacts",
            "provision_topics": False,
            "gate_champion_sync_seconds": 0,  # no log to measure in memory
            "gate_dataset_wait_seconds": 0,
            **settings,
        }
        self.evaluations = PreparedEvaluations(profiles=profiles)
        self.manifests = PreparedManifests(self.evaluations)
        self.app = build_app(
            GateSettings(**values), evaluator=self.evaluations, verify_model=self.manifests
        )
        self.decisions = Published(self.app, Stream.GATE)
        self.ready = Published(self.app, Stream.MODELS_READY)
        self.letters = Published(self.app, Stream.DEADLETTER)

    def dataset(self, version: str = "ds-1", **options: Any) -> DatasetVersioned:
        options.setdefault("must_pass", CASES)
        return store_dataset(self.app.artifacts, version, snapshot(DOMAIN, EXAMPLES, **options))

    def report(self, decision: GateApproved | GateRejected) -> GateReport:
        return self.app.artifacts.get_document(decision.report, GateReport)

    def letter_reasons(self) -> list[str]:
        return [e.reason for e in self.letters.events if isinstance(e, DeadLetterRecorded)]

    def stored_profiles(self) -> list[ReferenceProfile]:
        """Every reference profile in the artifact store, whoever refers to it."""
        return [
            ReferenceProfile.model_validate_json(text)
            for path in sorted(self.artifact_dir.rglob("*"))
            if path.is_file() and '"adaptmesh.reference-profile/1"' in (text := path.read_text())
        ]


async def test_first_candidate_is_approved_promoted_and_the_chain_carries_through(
    tmp_path: Path,
) -> None:
    gate = Gate(tmp_path)
    dataset = gate.dataset(gate=GatePolicy(min_macro_f1=0.6), drift=DRIFT)
    model = gate.evaluations.add("m1", {"gold": 0.8, "trade": 0.9})
    trained = model_trained(dataset, "m1", model)
    async with TestKafkaBroker(gate.app.broker):
        await gate.app.publish(dataset)
        sent = await gate.app.publish(trained, correlation_id="change-1")

    # Only the eval split and every must-pass case were used.
    assert gate.evaluations.calls == [
        (DOMAIN, model.sha256, ["bullion demand", "exports fell"], ["gold-1", "trade-1"])
    ]
    [(decision_envelope, decision)] = gate.decisions.records
    assert isinstance(decision, GateApproved)
    assert decision.model_version == "m1"
    assert decision.champion_version is None
    assert decision.macro_f1 == pytest.approx(0.85)
    assert (decision.must_pass_passed, decision.must_pass_total) == (2, 2)
    assert decision.per_label["gold"].f1 == 0.8
    report = gate.report(decision)
    assert decision.reasons == report.reasons == tuple(check.reason for check in report.checks)
    assert [check.check for check in report.checks if check.check != "info"] == [
        "floor",
        "must-pass",
    ]
    assert all(check.passed for check in report.checks)
    assert report.comparison is None  # no champion to compare with
    assert report.candidate_model is not None
    assert report.candidate_model.lineage == trained.lineage
    assert decision.report_html is not None
    html = gate.app.artifacts.get_bytes(decision.report_html).decode()
    assert "m1" in html
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert report.approved
    assert report.dataset_version == "ds-1"
    assert report.candidate.confusion["gold"]["gold"] == 1
    assert report.champion is None

    [(ready_envelope, ready)] = gate.ready.records
    assert isinstance(ready, ModelReady)
    assert ready.reference_profile is not None
    assert ready == ModelReady(
        domain=DOMAIN,
        model_version="m1",
        artifact=model,
        labels=("gold", "trade"),
        lineage=trained.lineage,
        gate_report=decision.report,
        reference_profile=ready.reference_profile,
        promotion=1,
    )
    # The profile the evaluator built, on the eval split of the candidate's dataset version,
    # under the recipe's drift policy.
    profile = gate.app.artifacts.get_document(ready.reference_profile, ReferenceProfile)
    assert profile == gate.evaluations.profiles["m1"]
    assert profile.dataset_version == "ds-1"
    assert [example.example_id for example in profile.examples] == ["ex-1", "ex-3"]
    assert profile.drift == DRIFT
    for envelope in (decision_envelope, ready_envelope):
        assert envelope.causationid == sent.id
        assert envelope.correlationid == "change-1"
        assert envelope.source == "urn:adaptmesh:service:evaluation-gate"


async def test_a_regressing_candidate_is_rejected_and_the_champion_stays(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    dataset = gate.dataset()
    first = gate.evaluations.add("m1", {"gold": 0.8, "trade": 0.9})
    worse = gate.evaluations.add(
        "m2", {"gold": 0.6, "trade": 0.95}, wrong_examples=("bullion demand",)
    )
    better = gate.evaluations.add("m3", {"gold": 0.81, "trade": 0.95})
    async with TestKafkaBroker(gate.app.broker):
        await gate.app.publish(dataset)
        await gate.app.publish(model_trained(dataset, "m1", first))
        await gate.app.publish(model_trained(dataset, "m2", worse))
        await gate.app.publish(model_trained(dataset, "m3", better))

    approved_1, rejected_2, approved_3 = gate.decisions.events
    assert isinstance(approved_1, GateApproved)
    assert isinstance(rejected_2, GateRejected)
    assert rejected_2.champion_version == "m1"
    assert rejected_2.champion_macro_f1 == pytest.approx(0.85)
    rejected_report = gate.report(rejected_2)
    failed = [check.check for check in rejected_report.checks if not check.passed]
    assert "non-inferiority" in failed, rejected_report.reasons
    assert rejected_report.comparison is not None
    assert rejected_report.comparison.champion_only_right == 1
    assert rejected_report.comparison.candidate_only_right == 0
    assert rejected_report.champion == gate.evaluations.by_digest[first.sha256]
    assert rejected_report.champion_model is not None
    assert rejected_report.champion_model.model_version == "m1"
    assert isinstance(approved_3, GateApproved)
    assert approved_3.champion_version == "m1", "the rejected m2 never became the champion"
    assert [
        (e.model_version, e.promotion) for e in gate.ready.events if isinstance(e, ModelReady)
    ] == [("m1", 1), ("m3", 2)]
    # Only promoted models get a profile; the rejected one's is never written.
    assert sorted(p.model_version for p in gate.stored_profiles()) == ["m1", "m3"]
    # The champion was evaluated, first, on the same data as each candidate it faced.
    assert [(digest, texts) for _, digest, texts, _ in gate.evaluations.calls] == [
        (first.sha256, ["bullion demand", "exports fell"]),
        (first.sha256, ["bullion demand", "exports fell"]),
        (worse.sha256, ["bullion demand", "exports fell"]),
        (first.sha256, ["bullion demand", "exports fell"]),
        (better.sha256, ["bullion demand", "exports fell"]),
    ]


async def test_an_evaluator_without_a_profile_promotes_without_one(tmp_path: Path) -> None:
    gate = Gate(tmp_path, profiles=False)
    dataset = gate.dataset()
    model = gate.evaluations.add("m1", {"gold": 0.9, "trade": 0.9})
    async with TestKafkaBroker(gate.app.broker):
        await gate.app.publish(dataset)
        await gate.app.publish(model_trained(dataset, "m1", model))
    [ready] = gate.ready.events
    assert isinstance(ready, ModelReady)
    assert ready.model_version == "m1"
    assert ready.reference_profile is None
    assert gate.stored_profiles() == []


async def test_the_approved_candidate_is_the_next_champion(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    dataset = gate.dataset()
    refs = [gate.evaluations.add(f"m{n}", {"gold": 0.8, "trade": 0.9}) for n in (1, 2, 3)]
    async with TestKafkaBroker(gate.app.broker):
        await gate.app.publish(dataset)
        for n, ref in enumerate(refs, start=1):
            await gate.app.publish(model_trained(dataset, f"m{n}", ref))
    champions = [e.champion_version for e in gate.decisions.events if isinstance(e, GateApproved)]
    assert champions == [None, "m1", "m2"]


async def test_a_failed_must_pass_case_rejects(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    dataset = gate.dataset()
    model = gate.evaluations.add("m1", {"gold": 0.9, "trade": 0.9}, wrong_cases=("gold-1",))
    async with TestKafkaBroker(gate.app.broker):
        await gate.app.publish(dataset)
        await gate.app.publish(model_trained(dataset, "m1", model))
    [decision] = gate.decisions.events
    assert isinstance(decision, GateRejected)
    assert (decision.must_pass_passed, decision.must_pass_total) == (1, 2)
    assert "must-pass 1/2: case gold-1 (rule RULE-1) expected gold, got trade" in decision.reasons
    assert gate.ready.events == []


async def test_the_champion_is_learned_from_the_models_ready_log(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    dataset = gate.dataset()
    earlier = gate.evaluations.add("m0", {"gold": 0.9, "trade": 0.9})
    candidate = gate.evaluations.add(
        "m1", {"gold": 0.5, "trade": 0.9}, wrong_examples=("bullion demand",)
    )
    earlier_trained = model_trained(dataset, "m0", earlier)
    async with TestKafkaBroker(gate.app.broker):
        # Promoted by an earlier run of the gate: only the compacted topic remembers it.
        await gate.app.publish(
            ModelReady(
                domain=DOMAIN,
                model_version="m0",
                artifact=earlier,
                labels=earlier_trained.labels,
                lineage=earlier_trained.lineage,
            )
        )
        await gate.app.publish(dataset)
        await gate.app.publish(model_trained(dataset, "m1", candidate))
    [decision] = gate.decisions.events
    assert isinstance(decision, GateRejected)
    assert decision.champion_version == "m0"


async def test_a_redelivered_candidate_that_already_serves_is_not_judged_again(
    tmp_path: Path,
) -> None:
    gate = Gate(tmp_path)
    dataset = gate.dataset()
    model = gate.evaluations.add("m1", {"gold": 0.9, "trade": 0.9})
    async with TestKafkaBroker(gate.app.broker):
        await gate.app.publish(dataset)
        await gate.app.publish(model_trained(dataset, "m1", model))
        # The same fact again under a new ce_id (the producer retried after a crash).
        await gate.app.publish(model_trained(dataset, "m1", model))
    assert len(gate.decisions.events) == 1
    assert len(gate.ready.events) == 1


async def test_a_candidate_of_an_unknown_dataset_version_is_dead_lettered(
    tmp_path: Path,
) -> None:
    gate = Gate(tmp_path)
    dataset = gate.dataset()  # stored, but its dataset.versioned never published
    model = gate.evaluations.add("m1", {"gold": 0.9, "trade": 0.9})
    async with TestKafkaBroker(gate.app.broker):
        await gate.app.publish(model_trained(dataset, "m1", model))
    assert gate.decisions.events == []
    [reason] = gate.letter_reasons()
    assert "names dataset version ds-1, which the gate has never seen on mesh.datasets.v1" in (
        reason
    )
    assert gate.evaluations.calls == []


async def test_a_candidate_waits_for_its_dataset_version_to_be_read(tmp_path: Path) -> None:
    gate = Gate(tmp_path, gate_dataset_wait_seconds=30)
    dataset = gate.dataset()
    model = gate.evaluations.add("m1", {"gold": 0.9, "trade": 0.9})
    async with TestKafkaBroker(gate.app.broker):
        judging = asyncio.create_task(gate.app.publish(model_trained(dataset, "m1", model)))
        await asyncio.sleep(0.2)
        assert not judging.done()
        await gate.app.publish(dataset)
        await asyncio.wait_for(judging, 10)
    assert [type(e) for e in gate.decisions.events] == [GateApproved]


async def test_a_dataset_digest_other_than_the_known_one_is_dead_lettered(
    tmp_path: Path,
) -> None:
    gate = Gate(tmp_path)
    dataset = gate.dataset()
    model = gate.evaluations.add("m1", {"gold": 0.9, "trade": 0.9})
    trained = model_trained(dataset, "m1", model)
    tampered = trained.model_copy(
        update={"lineage": trained.lineage.model_copy(update={"dataset_sha256": "f" * 64})}
    )
    async with TestKafkaBroker(gate.app.broker):
        await gate.app.publish(dataset)
        await gate.app.publish(tampered)
    assert gate.decisions.events == []
    [reason] = gate.letter_reasons()
    assert f"with digest {'f' * 64}, but that version's snapshot has" in reason


async def test_a_candidate_whose_files_fail_verification_is_dead_lettered(
    tmp_path: Path,
) -> None:
    gate = Gate(tmp_path)
    dataset = gate.dataset()
    model = gate.evaluations.add("m1", {"gold": 0.9, "trade": 0.9})
    gate.evaluations.broken.add(model.sha256)
    async with TestKafkaBroker(gate.app.broker):
        await gate.app.publish(dataset)
        await gate.app.publish(model_trained(dataset, "m1", model))
    assert gate.decisions.events == []
    assert gate.ready.events == []
    [reason] = gate.letter_reasons()
    assert reason.startswith("candidate m1: artifact file:///models/m1/manifest.json has sha256")


async def test_an_artifact_holding_another_model_than_announced_is_dead_lettered(
    tmp_path: Path,
) -> None:
    gate = Gate(tmp_path)
    dataset = gate.dataset()
    model = gate.evaluations.add("m1", {"gold": 0.9, "trade": 0.9})
    async with TestKafkaBroker(gate.app.broker):
        await gate.app.publish(dataset)
        await gate.app.publish(model_trained(dataset, "m7", model))
    assert gate.decisions.events == []
    [reason] = gate.letter_reasons()
    assert "holds model m1, but the event announces m7" in reason


async def test_other_training_events_pass_the_gate_by(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    dataset = gate.dataset()
    async with TestKafkaBroker(gate.app.broker):
        await gate.app.publish(dataset)
        await gate.app.publish(
            TrainingStarted(
                domain=DOMAIN,
                run_id="run-1",
                dataset_version="ds-1",
                recipe_version="r1",
                workers=1,
            )
        )
        await gate.app.publish(
            TrainingFailed(domain=DOMAIN, run_id="run-1", error="out of memory", retryable=True)
        )
    assert gate.decisions.events == []
    assert gate.letters.events == []


async def test_a_champion_that_cannot_be_loaded_fails_the_judgement_instead_of_skipping_it(
    tmp_path: Path,
) -> None:
    gate = Gate(tmp_path, handler_attempts=1)
    dataset = gate.dataset()
    first = gate.evaluations.add("m1", {"gold": 0.9, "trade": 0.9})
    second = gate.evaluations.add("m2", {"gold": 0.9, "trade": 0.9})
    async with TestKafkaBroker(gate.app.broker):
        await gate.app.publish(dataset)
        await gate.app.publish(model_trained(dataset, "m1", first))
        gate.evaluations.broken.add(first.sha256)  # the champion's files were damaged since
        await gate.app.publish(model_trained(dataset, "m2", second))
    assert [e.model_version for e in gate.decisions.events if isinstance(e, GateApproved)] == ["m1"]
    assert len(gate.ready.events) == 1
    [letter] = gate.letters.events
    assert isinstance(letter, DeadLetterRecorded)
    assert letter.reason_code == "handler-error"
    assert "file:///models/m1/manifest.json" in letter.reason


async def promote_two(gate: Gate) -> tuple[ArtifactRef, ArtifactRef]:
    """m1 then m2 promoted (equal models: both approved); returns their refs."""
    dataset = gate.dataset()
    first = gate.evaluations.add("m1", {"gold": 0.9, "trade": 0.9})
    second = gate.evaluations.add("m2", {"gold": 0.9, "trade": 0.9})
    await gate.app.publish(dataset)
    await gate.app.publish(model_trained(dataset, "m1", first))
    await gate.app.publish(model_trained(dataset, "m2", second))
    return first, second


async def test_a_rollback_puts_the_previous_champion_back_and_says_so(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    async with TestKafkaBroker(gate.app.broker):
        first, _ = await promote_two(gate)
        request = RollbackRequested(
            domain=DOMAIN, reason="m2 misroutes sanctions news", requested_by="ops@bank"
        )
        sent = await gate.app.publish(request, correlation_id="rollback-1")

    *_, (ready_envelope, ready) = gate.ready.records
    assert isinstance(ready, ModelReady)
    assert (ready.model_version, ready.promotion, ready.artifact) == ("m1", 3, first)
    assert ready.rollback == Rollback(
        replaced_version="m2",
        requested_by="ops@bank",
        reason="m2 misroutes sanctions news",
        request_id=sent.id,
    )
    # The approving report and profile of m1 come back with it.
    [approved_m1] = [
        e for e in gate.decisions.events if isinstance(e, GateApproved) and e.model_version == "m1"
    ]
    assert ready.gate_report == approved_m1.report
    assert ready.reference_profile == approved_m1.reference_profile
    rolled_back = gate.decisions.events[-1]
    assert isinstance(rolled_back, RolledBack)
    assert rolled_back.rollback == ready.rollback
    assert rolled_back.promotion == 3
    assert gate.manifests.verified == [first.sha256], "the target's files were verified"
    assert ready_envelope.causationid == sent.id
    assert ready_envelope.correlationid == "rollback-1"
    assert gate.letters.events == []


async def test_a_rollback_to_a_named_version_and_a_second_one_back(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    async with TestKafkaBroker(gate.app.broker):
        await promote_two(gate)
        await gate.app.publish(RollbackRequested(domain=DOMAIN, to_version="m1", reason="undo"))
        # Without a version: the model that served before the current one, m2.
        await gate.app.publish(RollbackRequested(domain=DOMAIN, reason="redo"))
    served = [
        (e.model_version, e.promotion) for e in gate.ready.events if isinstance(e, ModelReady)
    ]
    assert served == [("m1", 1), ("m2", 2), ("m1", 3), ("m2", 4)]


async def test_rollbacks_to_unknown_rejected_or_tampered_models_are_refused(
    tmp_path: Path,
) -> None:
    gate = Gate(tmp_path)
    async with TestKafkaBroker(gate.app.broker):
        first, _ = await promote_two(gate)
        dataset = gate.dataset()
        worse = gate.evaluations.add(
            "m3", {"gold": 0.1, "trade": 0.9}, wrong_examples=("bullion demand", "exports fell")
        )
        await gate.app.publish(model_trained(dataset, "m3", worse))
        served_before = list(gate.ready.events)
        await gate.app.publish(RollbackRequested(domain=DOMAIN, to_version="m9", reason="a"))
        await gate.app.publish(RollbackRequested(domain=DOMAIN, to_version="m3", reason="b"))
        await gate.app.publish(RollbackRequested(domain=DOMAIN, to_version="m2", reason="c"))
        gate.manifests.tampered.add(first.sha256)
        await gate.app.publish(RollbackRequested(domain=DOMAIN, to_version="m1", reason="d"))
        await gate.app.publish(RollbackRequested(domain="elsewhere", reason="e"))

    assert gate.ready.events == served_before, "nothing changes in production"
    refusals = [e for e in gate.decisions.events if isinstance(e, RollbackRefused)]
    assert [(r.requested_version, r.current_version) for r in refusals] == [
        ("m9", "m2"),
        ("m3", "m2"),
        ("m2", "m2"),
        ("m1", "m2"),
        (None, None),
    ]
    reasons = [r.reasons[0] for r in refusals]
    assert reasons[0] == f"m9 was never approved for {DOMAIN} (approved models: m1, m2)"
    assert reasons[1].startswith("m3 was never approved")
    assert reasons[2] == f"m2 already serves {DOMAIN}"
    assert reasons[3].startswith("m1 fails verification (tampered?)")
    assert reasons[4] == "elsewhere has no production model to roll back"
    letters = [e for e in gate.letters.events if isinstance(e, DeadLetterRecorded)]
    assert [letter.reason_code for letter in letters] == ["rejected"] * 5
    assert [letter.source.topic for letter in letters] == [gate.app.topic(Stream.CHANGES)] * 5
    assert all(reason in letter.reason for reason, letter in zip(reasons, letters, strict=True))
