"""`adaptmesh rebuild`: a model retrained from its recorded inputs comes out byte-identical.

Tiny models trained in-process and saved with the lineage the training service writes; no
Kafka (the command's lookup on the training topic is replaced where it is exercised).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from adaptmesh_cli import rebuild
from adaptmesh_ingestion.snapshot import canonical_json, dataset_version_id, split_of
from adaptmesh_kit import ArtifactStore, MeshSettings
from adaptmesh_ml import (
    TrainedModel,
    base_model_sha256,
    plan_warm_start,
    save_model,
    train_classifier,
)
from adaptmesh_schemas.documents import DatasetExample, DatasetSnapshot, ModelManifest
from adaptmesh_schemas.values import ArtifactRef, Lineage
from tests.unit.adaptmesh_ml import tiny_domain

DOMAIN = "tiny-news"


def _examples(*, with_openings: bool) -> tuple[DatasetExample, ...]:
    """The tiny domain with a hashed 75/25 split; the parent sees only the plain phrases."""
    return tuple(
        example.model_copy(update={"split": split_of(example.example_id, 0.25)})
        for example in tiny_domain.examples()
        if with_openings or not example.text.startswith("reports say ")
    )


def _store_snapshot(store: ArtifactStore, snapshot: DatasetSnapshot) -> ArtifactRef:
    """As ingestion stores it: canonical JSON, content-addressed."""
    return store.put_bytes(canonical_json(snapshot))


def _save(
    store: ArtifactStore,
    trained: TrainedModel,
    snapshot: DatasetSnapshot,
    dataset: ArtifactRef,
    version: str,
    parent: tuple[str, ArtifactRef] | None = None,
) -> ArtifactRef:
    """Save with the lineage the training service fills in."""
    lineage = Lineage(
        dataset_version=dataset_version_id(dataset.sha256),
        dataset_sha256=dataset.sha256,
        recipe_version=snapshot.recipe.recipe_version,
        base_model=snapshot.base_model,
        parent_model_version=parent[0] if parent else None,
        code_version="test",
        seed=trained.seed,
        hyperparameters=trained.hyperparameters,
        correlation_id="change-1",
        base_model_sha256=base_model_sha256(snapshot.base_model),
        library_versions=trained.library_versions,
        determinism=trained.determinism,
        init=trained.init,
        parent_artifact=parent[1] if parent else None,
        parent_adapter_sha256=trained.parent_adapter_sha256,
        head_mapping=trained.head_mapping,
        taxonomy_step_id=(
            snapshot.taxonomy_history[-1].step_id if snapshot.taxonomy_history else None
        ),
    )
    ref, _ = save_model(store, trained, domain=DOMAIN, model_version=version, lineage=lineage)
    return ref


@dataclass(frozen=True)
class Models:
    store: ArtifactStore
    parent: ArtifactRef
    child: ArtifactRef
    parent_dataset: ArtifactRef


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    store = ArtifactStore(tmp_path_factory.mktemp("artifacts").as_uri())
    parent_snapshot = tiny_domain.snapshot(epochs=2, dataset=_examples(with_openings=False))
    parent_dataset = _store_snapshot(store, parent_snapshot)
    parent = _save(store, train_classifier(parent_snapshot), parent_snapshot, parent_dataset, "m1")

    child_snapshot = tiny_domain.snapshot(epochs=2, dataset=_examples(with_openings=True))
    child_dataset = _store_snapshot(store, child_snapshot)
    plan = plan_warm_start(store, child_snapshot, parent)
    assert plan.warm_start is not None, plan.reason
    trained = train_classifier(child_snapshot, warm_start=plan.warm_start)
    assert trained.init == "champion"
    child = _save(store, trained, child_snapshot, child_dataset, "m2", parent=("m1", parent))
    return Models(store, parent, child, parent_dataset)


@pytest.mark.timeout(240)
def test_a_cold_model_rebuilds_to_the_same_adapter_and_metrics(
    models: Models, tmp_path: Path
) -> None:
    threads_before = torch.get_num_threads()
    report = rebuild.rebuild_model(
        models.store, models.parent, ArtifactStore(tmp_path.as_uri()), say=lambda _: None
    )
    print("\n".join(report.lines()))
    assert report.adapter_matches, report.lines()
    assert report.metrics_match
    assert report.matches
    assert not report.approximate
    assert report.warnings == ()
    assert report.original.per_label == report.rebuilt.per_label
    assert torch.get_num_threads() == threads_before  # restored


@pytest.mark.timeout(240)
def test_a_warm_started_child_rebuilds_exactly_too(models: Models, tmp_path: Path) -> None:
    report = rebuild.rebuild_model(
        models.store, models.child, ArtifactStore(tmp_path.as_uri()), say=lambda _: None
    )
    print("\n".join(report.lines()))
    assert report.matches, report.lines()
    assert report.warnings == ()


def test_a_tampered_dataset_blob_is_a_clear_error(models: Models, tmp_path: Path) -> None:
    # A copy of the store whose parent dataset blob was changed after the fact.
    source = Path(models.store.root_uri.removeprefix("file://"))
    copy = tmp_path / "copy"
    for path in source.rglob("*"):
        if path.is_file():
            target = copy / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    blob = copy / "sha256" / models.parent_dataset.sha256[:2] / models.parent_dataset.sha256
    blob.write_bytes(blob.read_bytes().replace(b"football", b"handball"))
    assert hashlib.sha256(blob.read_bytes()).hexdigest() != models.parent_dataset.sha256
    copied_store = ArtifactStore(copy.as_uri())
    manifest = models.parent.model_copy(
        update={"uri": models.parent.uri.replace(models.store.root_uri, copied_store.root_uri)}
    )
    with pytest.raises(rebuild.RebuildError, match=r"dataset snapshot .* cannot be used.*sha256"):
        rebuild.rebuild_model(
            copied_store,
            manifest,
            ArtifactStore((tmp_path / "scratch").as_uri()),
            say=lambda _: None,
        )


def test_an_unknown_model_version_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    async def nothing(*_: object) -> ArtifactRef | None:
        await asyncio.sleep(0)
        return None

    monkeypatch.setattr(rebuild, "find_model", nothing)
    said: list[str] = []
    code = rebuild.run_rebuild(
        MeshSettings(kafka_bootstrap_servers="127.0.0.1:9"), DOMAIN, "m-nope", say=said.append
    )
    assert code == rebuild.EXIT_UNKNOWN_MODEL == 2
    assert "no model.trained event for tiny-news/m-nope" in said[0]


def test_known_differences_make_warnings_and_an_approximate_rebuild(models: Models) -> None:
    lineage = models.store.get_document(models.parent, ModelManifest).lineage
    assert rebuild._known_differences(lineage) == ([], False)
    changed = lineage.model_copy(
        update={
            "determinism": {**lineage.determinism, "world_size": 2},
            "library_versions": {**lineage.library_versions, "torch": "0.0.1"},
            "base_model_sha256": "0" * 64,
        }
    )
    warnings, approximate = rebuild._known_differences(changed)
    assert approximate
    assert "rebuilt approximately" in warnings[0]
    assert "torch 0.0.1 ->" in warnings[1]
    assert "an exact match is impossible" in warnings[2]
