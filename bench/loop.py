"""Benchmark: change event -> model.ready through the mesh vs raw train + eval, same data.

    make bench-loop          # or: uv run python -m bench.loop --per-label 48

One run: start the embedded mesh (Kafka, local Ray, five service processes), register a recipe,
then time from publishing a data batch to receiving its `model.ready`. Then, with the mesh
stopped (so nothing competes for the two cores), train and evaluate the very same dataset
snapshot (read back from the artifact store) in this one process with the same library calls
the services make, without Kafka or Ray. The ratio is mesh time / raw time; the breakdown of the
mesh time comes from the timestamps of the events each service produced.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from adaptmesh_cli import scenario
from adaptmesh_embedded import EmbeddedMesh
from adaptmesh_kit import ArtifactStore, MeshSettings, create_app
from adaptmesh_ml import Classifier, evaluate, train_classifier
from adaptmesh_schemas import Stream, decode_event, read_envelope, topic_name
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.events import (
    DatasetVersioned,
    GateApproved,
    GateRejected,
    ModelReady,
    ModelTrained,
    RetrainRequested,
    TrainingStarted,
)
from adaptmesh_schemas.values import ArtifactRef

MILESTONES = (
    (DatasetVersioned, "ingestion: dataset version written"),
    (RetrainRequested, "drift-sensing: retrain requested (includes its settle window)"),
    (TrainingStarted, "training: run started (Ray job submitted)"),
    (ModelTrained, "training: model trained and stored (Ray Train start-up + training)"),
    (GateApproved, "evaluation-gate: candidate and champion evaluated"),
    (GateRejected, "evaluation-gate: candidate and champion evaluated"),
    (ModelReady, "model.ready published"),
)


async def through_the_mesh(
    mesh: EmbeddedMesh, per_label: int
) -> tuple[float, list[str], ArtifactRef]:
    """Seconds from the data batch to model.ready, the timeline, and the dataset trained on."""
    settings = MeshSettings(
        kafka_bootstrap_servers=mesh.bootstrap_servers,
        artifact_root=mesh.artifact_root,
        provision_topics=False,
    )
    consumer = AIOKafkaConsumer(
        *(
            topic_name(s)
            for s in (
                Stream.DATASETS,
                Stream.RETRAIN,
                Stream.TRAINING,
                Stream.GATE,
                Stream.MODELS_READY,
            )
        ),
        bootstrap_servers=mesh.bootstrap_servers,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    await consumer.getmany(timeout_ms=1000)  # be assigned before anything is published
    async with create_app(settings, "bench-user") as user:
        await user.publish(scenario.recipe())
        await asyncio.sleep(3)  # the recipe alone trains nothing; let it settle untimed
        batch = scenario.first_batch(per_label)
        started_ms = time.time() * 1000
        started = time.perf_counter()
        await user.publish(batch)
    timeline: list[str] = []
    datasets: dict[str, ArtifactRef] = {}
    try:
        async with asyncio.timeout(1800):
            async for record in consumer:
                event = decode_event(read_envelope(record.headers), record.value)
                for event_type, text in MILESTONES:
                    if isinstance(event, event_type):
                        timeline.append(f"  {(record.timestamp - started_ms) / 1000:7.1f}s  {text}")
                if isinstance(event, DatasetVersioned):
                    datasets[event.dataset_version] = event.artifact
                if isinstance(event, ModelReady):
                    elapsed = time.perf_counter() - started
                    return elapsed, timeline, datasets[event.lineage.dataset_version]
    finally:
        await consumer.stop()
    raise AssertionError("no model.ready")


def raw(snapshot: DatasetSnapshot) -> tuple[float, float, float]:
    """Train + eval in this process: (seconds, train seconds, macro-F1)."""
    started = time.perf_counter()
    trained = train_classifier(snapshot)
    trained_at = time.perf_counter()
    classifier = Classifier.from_trained(trained, snapshot.base_model, "raw")
    report = evaluate(
        classifier, [e for e in snapshot.examples if e.split == "eval"], snapshot.must_pass
    )
    return time.perf_counter() - started, trained_at - started, report.macro_f1


def main(per_label: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as work:
        mesh = EmbeddedMesh(Path(work) / "mesh")
        mesh.start()
        try:
            mesh_seconds, timeline, dataset = asyncio.run(through_the_mesh(mesh, per_label))
            snapshot = ArtifactStore(mesh.artifact_root).get_document(dataset, DatasetSnapshot)
        finally:
            mesh.stop()
        print(f"mesh: change event -> model.ready in {mesh_seconds:.1f}s")
        print("\n".join(timeline))
        raw_seconds, train_seconds, macro_f1 = raw(snapshot)
        print(
            f"raw: train {train_seconds:.1f}s + eval {raw_seconds - train_seconds:.1f}s = "
            f"{raw_seconds:.1f}s in one process ({len(snapshot.examples)} examples, "
            f"macro-F1 {macro_f1:.3f})"
        )
        print(f"ratio: {mesh_seconds / raw_seconds:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-label", type=int, default=scenario.EXAMPLES_PER_LABEL)
    main(parser.parse_args().per_label)
