from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from adaptmesh_kit import ArtifactError, ArtifactIntegrityError, ArtifactStore
from adaptmesh_ml import MANIFEST_FILE, TrainedModel, load_model_files, save_model
from adaptmesh_schemas.documents import ModelFile, ModelManifest
from adaptmesh_schemas.values import ArtifactRef, Lineage
from tests.unit.adaptmesh_ml import tiny_domain

# Artifact handling never looks inside the files, so stand-in bytes keep these tests pure.
FAKE = TrainedModel(
    labels=("sports", "markets"),
    files={"adapter_model.safetensors": b"weights", "labels.json": b'{"id2label": {}}'},
    metrics={"train_loss": 0.5},
    hyperparameters={"max_length": 32, "epochs": 2},
    seed=13,
)


def lineage(**updates: object) -> Lineage:
    values: dict[str, object] = {
        "dataset_version": "ds-1",
        "dataset_sha256": "a" * 64,
        "recipe_version": "r1",
        "base_model": tiny_domain.BASE_MODEL,
        "code_version": "0.1.0",
        "seed": 13,
        "hyperparameters": {"epochs": 1, "note": "from the recipe"},
        "correlation_id": "change-1",
        **updates,
    }
    return Lineage.model_validate(values)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(f"file://{tmp_path}/artifacts")


def test_a_saved_model_round_trips_with_a_manifest_of_digests(
    store: ArtifactStore, tmp_path: Path
) -> None:
    ref, manifest = save_model(
        store, FAKE, domain="tiny-news", model_version="m-1", lineage=lineage()
    )
    folder = tmp_path / "artifacts" / "models" / "tiny-news" / "m-1"
    assert ref.uri == f"file://{folder}/{MANIFEST_FILE}"
    assert ref.sha256 == hashlib.sha256((folder / MANIFEST_FILE).read_bytes()).hexdigest()
    assert manifest.files == (
        ModelFile(
            path="adapter_model.safetensors",
            sha256=hashlib.sha256(b"weights").hexdigest(),
            size_bytes=7,
        ),
        ModelFile(
            path="labels.json",
            sha256=hashlib.sha256(b'{"id2label": {}}').hexdigest(),
            size_bytes=16,
        ),
    )
    assert manifest.labels == ("sports", "markets")
    assert manifest.metrics == {"train_loss": 0.5}
    assert manifest.task == "sequence-classification"
    # Training's effective settings complete (and win over) the lineage's.
    assert manifest.lineage.hyperparameters == {
        "epochs": 2,
        "note": "from the recipe",
        "max_length": 32,
    }

    loaded_manifest, files = load_model_files(store, ref)
    assert loaded_manifest == manifest
    assert files == FAKE.files


def test_a_tampered_file_is_refused(store: ArtifactStore) -> None:
    ref, _ = save_model(store, FAKE, domain="tiny-news", model_version="m-1", lineage=lineage())
    weights = Path(ref.uri.removeprefix("file://")).parent / "adapter_model.safetensors"
    weights.write_bytes(b"poison!")
    with pytest.raises(ArtifactIntegrityError, match=r"adapter_model\.safetensors"):
        load_model_files(store, ref)


def test_a_tampered_manifest_is_refused(store: ArtifactStore) -> None:
    ref, _ = save_model(store, FAKE, domain="tiny-news", model_version="m-1", lineage=lineage())
    manifest_path = Path(ref.uri.removeprefix("file://"))
    document = json.loads(manifest_path.read_text())
    document["files"][0]["sha256"] = hashlib.sha256(b"poison!").hexdigest()
    manifest_path.write_text(json.dumps(document))
    with pytest.raises(ArtifactIntegrityError, match=MANIFEST_FILE):
        load_model_files(store, ref)


def test_a_missing_file_is_reported(store: ArtifactStore) -> None:
    ref, _ = save_model(store, FAKE, domain="tiny-news", model_version="m-1", lineage=lineage())
    (Path(ref.uri.removeprefix("file://")).parent / "labels.json").unlink()
    with pytest.raises(ArtifactError, match="does not exist"):
        load_model_files(store, ref)


def test_a_manifest_pointing_outside_its_folder_is_refused(store: ArtifactStore) -> None:
    _, manifest = save_model(
        store, FAKE, domain="tiny-news", model_version="m-1", lineage=lineage()
    )
    other = store.put_file("secrets/key", b"secret")
    doctored = manifest.model_copy(
        update={
            "files": (ModelFile(path="../../../secrets/key", sha256=other.sha256, size_bytes=6),)
        }
    )
    doctored_ref = store.put_document(doctored, "models/tiny-news/m-2/manifest.json")
    with pytest.raises(ArtifactError, match="unacceptable file"):
        load_model_files(store, doctored_ref)


def test_a_published_version_cannot_be_overwritten(store: ArtifactStore) -> None:
    save_model(store, FAKE, domain="tiny-news", model_version="m-1", lineage=lineage())
    changed = TrainedModel(
        labels=FAKE.labels,
        files={**FAKE.files, "adapter_model.safetensors": b"other weights"},
        metrics=FAKE.metrics,
        hyperparameters=FAKE.hyperparameters,
        seed=FAKE.seed,
    )
    with pytest.raises(ArtifactError, match="write-once"):
        save_model(store, changed, domain="tiny-news", model_version="m-1", lineage=lineage())


@pytest.mark.parametrize(
    ("domain", "model_version"),
    [("tiny-news", "../escape"), ("tiny/news", "m-1"), ("tiny-news", ""), (".hidden", "m-1")],
)
def test_names_that_are_not_one_path_segment_are_refused(
    store: ArtifactStore, domain: str, model_version: str
) -> None:
    with pytest.raises(ValueError, match="cannot be a path segment"):
        save_model(store, FAKE, domain=domain, model_version=model_version, lineage=lineage())


def test_a_lineage_with_another_seed_is_refused(store: ArtifactStore) -> None:
    with pytest.raises(ValueError, match="seed"):
        save_model(store, FAKE, domain="tiny-news", model_version="m-1", lineage=lineage(seed=99))


def test_a_reference_to_a_manifest_that_does_not_parse_is_refused(store: ArtifactStore) -> None:
    ref = store.put_file("models/tiny-news/m-3/manifest.json", b'{"not": "a manifest"}')
    with pytest.raises(ArtifactError, match="not a valid ModelManifest"):
        load_model_files(store, ArtifactRef(uri=ref.uri, sha256=ref.sha256))


def test_the_manifest_type_is_the_shared_contract(store: ArtifactStore) -> None:
    ref, _ = save_model(store, FAKE, domain="tiny-news", model_version="m-1", lineage=lineage())
    assert isinstance(store.get_document(ref, ModelManifest), ModelManifest)
