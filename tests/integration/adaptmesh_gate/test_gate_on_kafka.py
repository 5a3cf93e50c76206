"""The evaluation gate on a real broker with real (tiny) models.

Two candidates are trained in-process on a small synthetic dataset: one on the true labels,
one on the same texts with shuffled labels. The first is approved and promoted; then the gate
restarts and the second is judged against the first — the champion known only from the
compacted `mesh.models.ready.v1` log and the dataset version only from the gate's state dir.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from adaptmesh_gate.app import build_app
from adaptmesh_gate.settings import GateSettings
from adaptmesh_kit import ArtifactStore, create_app
from adaptmesh_kit.topic_ends import end_offsets
from adaptmesh_ml import SKETCH_DIMENSIONS, save_model, train_classifier
from adaptmesh_schemas import MeshEvent, Stream, decode_event, read_envelope, topic_name
from adaptmesh_schemas.documents import DatasetSnapshot, GateReport, ReferenceProfile
from adaptmesh_schemas.events import DatasetVersioned, GateApproved, GateRejected, ModelReady
from adaptmesh_schemas.values import (
    ArtifactRef,
    DriftPolicy,
    GatePolicy,
    SplitName,
    TrainingSettings,
)
from tests.component.adaptmesh_gate.gate_events import (
    lineage,
    model_trained,
    snapshot,
    store_dataset,
)
from tests.meshtest import body_json, mesh_settings, read_records

pytestmark = pytest.mark.kafka

DOMAIN = "commodities"
TOPICS = {
    "gold": [
        "gold price rose",
        "bullion demand grew",
        "gold mine output",
        "gold futures climbed",
        "central bank bought gold",
        "gold bars sold",
        "gold reserves increased",
        "gold hit a high",
        "gold coins minted",
        "gold traders bought",
    ],
    "oil": [
        "crude oil prices fell",
        "opec cut oil output",
        "oil refinery closed",
        "brent crude rallied",
        "oil tanker delayed",
        "oil pipeline opened",
        "oil drilling expanded",
        "oil exports dropped",
        "petroleum stocks rose",
        "oil field discovered",
    ],
    "grain": [
        "wheat harvest improved",
        "corn exports grew",
        "grain silos filled",
        "wheat prices dropped",
        "soybean crop failed",
        "barley yields rose",
        "rice shipments delayed",
        "maize planting started",
        "grain elevator burned",
        "wheat tender won",
    ],
}
CASES = (("gold-1", "gold price soared", "gold"), ("oil-1", "crude oil output fell", "oil"))
# Small batches so that a few dozen examples still make enough optimiser steps to learn.
TRAINING = TrainingSettings(epochs=3, batch_size=4, learning_rate=2e-3, max_length=32, seed=13)
POLICY = GatePolicy(min_macro_f1=0.6, max_regression=0.05, require_must_pass=True)
DRIFT = DriftPolicy(ert=1000, window=12, on_detect="alert")


def examples(labels: list[str] | None = None) -> list[tuple[str, str, SplitName]]:
    """Every third text of a topic is held out for evaluation."""
    rows: list[tuple[str, str, SplitName]] = [
        (text, label, "eval" if n % 3 == 2 else "train")
        for label, texts in TOPICS.items()
        for n, text in enumerate(texts)
    ]
    if labels is None:
        return rows
    return [(text, label, split) for (text, _, split), label in zip(rows, labels, strict=True)]


def train_and_save(
    store: ArtifactStore, trained_on: DatasetSnapshot, version: str, judged_on: DatasetVersioned
) -> ArtifactRef:
    """Train on `trained_on`, store as `version` with lineage naming the dataset `judged_on`."""
    trained = train_classifier(trained_on)
    ref, _ = save_model(
        store, trained, domain=DOMAIN, model_version=version, lineage=lineage(judged_on)
    )
    return ref


async def decisions(bootstrap: str, prefix: str, count: int) -> list[MeshEvent]:
    """The first `count` gate decisions, decoded as any consumer would."""
    records = await read_records(bootstrap, topic_name(Stream.GATE, prefix), count, timeout=300)
    return [decode_event(read_envelope(r.headers), r.value) for r in records]


@pytest.mark.timeout(600)
async def test_a_real_model_is_promoted_and_a_shuffled_one_rejected_after_a_restart(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = mesh_settings(kafka_bootstrap, unique_name, tmp_path, state_dir=tmp_path / "state")
    settings = GateSettings(**base.model_dump())
    prefix = settings.topic_prefix
    store = ArtifactStore(settings.artifact_root)

    truth = snapshot(
        DOMAIN, examples(), must_pass=CASES, gate=POLICY, training=TRAINING, drift=DRIFT
    )
    dataset = store_dataset(store, "ds-1", truth)
    shuffled_labels = [label for _, label, _ in examples()]
    random.Random(1).shuffle(shuffled_labels)
    shuffled = snapshot(
        DOMAIN, examples(shuffled_labels), must_pass=CASES, gate=POLICY, training=TRAINING
    )
    good = await asyncio.to_thread(train_and_save, store, truth, "m-good", dataset)
    bad = await asyncio.to_thread(train_and_save, store, shuffled, "m-shuffled", dataset)

    training = create_app(settings, "probe-training")  # stands in for the training service
    async with training:
        async with build_app(settings):
            await training.publish(dataset)
            trained_good = model_trained(dataset, "m-good", good)
            sent = await training.publish(trained_good)
            [approved] = await decisions(kafka_bootstrap, prefix, 1)
            [ready_record] = await read_records(
                kafka_bootstrap, topic_name(Stream.MODELS_READY, prefix), 1, timeout=60
            )

        # While the gate is down, the next candidate arrives; it restarts with a fresh cache
        # and must replay the champion before judging.
        await training.publish(model_trained(dataset, "m-shuffled", bad))
        async with build_app(settings):
            _, rejected = await decisions(kafka_bootstrap, prefix, 2)

    assert isinstance(approved, GateApproved), approved
    assert approved.model_version == "m-good"
    assert approved.champion_version is None
    assert approved.macro_f1 >= POLICY.min_macro_f1
    assert (approved.must_pass_passed, approved.must_pass_total) == (2, 2)
    assert set(approved.per_label) == {"gold", "oil", "grain"}
    headers = dict(ready_record.headers)
    assert headers["ce_causationid"].decode() == sent.id
    assert ready_record.key == DOMAIN.encode()
    ready = ModelReady.model_validate(body_json(ready_record))
    assert ready.model_version == "m-good"
    assert ready.artifact == good
    assert ready.gate_report == approved.report
    assert ready.lineage == trained_good.lineage
    assert ready.labels == ("gold", "oil", "grain")

    # The promoted model's reference profile: its answers on the eval split it was judged on.
    assert ready.reference_profile is not None
    profile = store.get_document(ready.reference_profile, ReferenceProfile)
    approved_report = store.get_document(approved.report, GateReport)
    assert (profile.domain, profile.model_version, profile.dataset_version) == (
        DOMAIN,
        "m-good",
        "ds-1",
    )
    assert [row.example_id for row in profile.examples] == [
        example.example_id for example in truth.examples if example.split == "eval"
    ]
    assert [row.label for row in profile.examples] == [
        example.label for example in truth.examples if example.split == "eval"
    ]
    assert profile.accuracy == approved_report.candidate.accuracy
    assert profile.labels == ready.labels
    assert profile.sketch_dimensions == SKETCH_DIMENSIONS
    assert all(len(row.embedding_sketch) == SKETCH_DIMENSIONS for row in profile.examples)
    assert all(0 <= row.margin <= row.confidence for row in profile.examples)
    assert profile.drift == DRIFT

    assert isinstance(rejected, GateRejected), rejected
    assert rejected.model_version == "m-shuffled"
    assert rejected.champion_version == "m-good", "judged without the champion from the log"
    assert rejected.champion_macro_f1 == approved.macro_f1
    assert rejected.macro_f1 < POLICY.min_macro_f1
    assert any(
        reason.startswith("macro-F1 ") and "< floor 0.600" in reason for reason in rejected.reasons
    )
    assert any(
        "vs champion m-good" in reason and "> allowed" in reason for reason in rejected.reasons
    )
    report = store.get_document(rejected.report, GateReport)
    assert not report.approved
    assert report.champion is not None
    assert report.champion.model_version == "m-good"
    assert sum(sum(row.values()) for row in report.candidate.confusion.values()) == 9

    ends = await end_offsets(kafka_bootstrap, topic_name(Stream.MODELS_READY, prefix))
    assert sum(ends.values()) == 1, "the rejected candidate must not reach mesh.models.ready.v1"
