"""Model directories in the artifact store: `models/<domain>/<model_version>/`.

The directory holds the model's files and a `manifest.json` listing each file's sha256 and
size. Events carry the manifest's `ArtifactRef`; the manifest's own digest therefore vouches
for every file, and a reader checks them all before anything is deserialised.
"""

from __future__ import annotations

import posixpath
import re

from adaptmesh_kit import ArtifactError, ArtifactIntegrityError, ArtifactStore
from adaptmesh_ml.training import TrainedModel
from adaptmesh_schemas.documents import ModelFile, ModelManifest
from adaptmesh_schemas.values import ArtifactRef, Lineage

MODELS_FOLDER = "models"
MANIFEST_FILE = "manifest.json"
# One plain path segment: no separators, no `..`, nothing hidden.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+:=-]{0,199}$")


def model_directory(domain: str, model_version: str) -> str:
    """The store-relative folder of one model."""
    return f"{MODELS_FOLDER}/{_segment(domain, 'domain')}/{_segment(model_version, 'version')}"


def save_model(
    store: ArtifactStore,
    trained: TrainedModel,
    *,
    domain: str,
    model_version: str,
    lineage: Lineage,
) -> tuple[ArtifactRef, ModelManifest]:
    """Write the model's files, then its manifest; return the manifest's ref and the manifest.

    The lineage's hyperparameters are completed with the ones training actually used (among
    them `max_length`, which inference needs). Paths are write-once, so saving the same
    version twice with other bytes fails instead of changing a published model.
    """
    if lineage.seed != trained.seed:
        raise ValueError(f"lineage seed {lineage.seed} is not the training seed {trained.seed}")
    folder = model_directory(domain, model_version)
    files = []
    for name in sorted(trained.files):
        if name == MANIFEST_FILE:
            raise ValueError(f"{MANIFEST_FILE} is reserved for the manifest")
        ref = store.put_file(f"{folder}/{_segment(name, 'file name')}", trained.files[name])
        files.append(ModelFile(path=name, sha256=ref.sha256, size_bytes=len(trained.files[name])))
    manifest = ModelManifest(
        domain=domain,
        model_version=model_version,
        task="sequence-classification",
        labels=trained.labels,
        files=tuple(files),
        lineage=lineage.model_copy(
            update={"hyperparameters": {**lineage.hyperparameters, **trained.hyperparameters}}
        ),
        metrics=trained.metrics,
    )
    return store.put_document(manifest, f"{folder}/{MANIFEST_FILE}"), manifest


def load_model_files(
    store: ArtifactStore, ref: ArtifactRef
) -> tuple[ModelManifest, dict[str, bytes]]:
    """The manifest behind `ref` and every file it lists, each checked against its digest.

    Raises `ArtifactIntegrityError` when the manifest or any file does not match, and
    `ArtifactError` when a file is missing or the manifest names a path outside its folder.
    """
    manifest = store.get_document(ref, ModelManifest)
    folder = posixpath.dirname(ref.uri)
    files: dict[str, bytes] = {}
    for entry in manifest.files:
        if not _SEGMENT.match(entry.path) or entry.path == MANIFEST_FILE:
            raise ArtifactError(f"manifest {ref.uri} lists an unacceptable file {entry.path!r}")
        data = store.get_bytes(
            ArtifactRef(uri=f"{folder}/{entry.path}", sha256=entry.sha256, size_bytes=None)
        )
        if len(data) != entry.size_bytes:
            raise ArtifactIntegrityError(
                f"{folder}/{entry.path} has {len(data)} bytes, the manifest says {entry.size_bytes}"
            )
        files[entry.path] = data
    return manifest, files


def _segment(value: str, what: str) -> str:
    if not _SEGMENT.match(value) or ".." in value:
        raise ValueError(f"{what} {value!r} cannot be a path segment in the artifact store")
    return value
