"""Deciding whether a run starts from its parent (the champion), and gathering what it needs.

Used by the training service's workers and by `adaptmesh rebuild`, so a rebuilt model starts
from exactly what the original started from. Everything is read through the artifact store
and digest-verified: the parent's manifest and files, and the dataset snapshot the parent was
trained on (found by the digest its lineage records).
"""

from __future__ import annotations

from dataclasses import dataclass

from adaptmesh_kit import ArtifactStore
from adaptmesh_ml.artifacts import load_model_files
from adaptmesh_ml.head_mapping import map_labels
from adaptmesh_ml.training import WarmStart
from adaptmesh_schemas.documents import DatasetSnapshot, ModelManifest
from adaptmesh_schemas.values import ArtifactRef


@dataclass(frozen=True)
class WarmStartPlan:
    """The outcome: a `WarmStart` with its parent's manifest, or the reason for a cold start."""

    warm_start: WarmStart | None
    parent: ModelManifest | None
    reason: str


def plan_warm_start(
    store: ArtifactStore, snapshot: DatasetSnapshot, parent: ArtifactRef | None
) -> WarmStartPlan:
    """Whether a run on `snapshot` can start from the model behind `parent`, and how.

    A cold start (no `WarmStart`) when the recipe says `init: base`, when there is no parent,
    or when the parent was built on another base model; the LoRA shape is checked by the
    training loop itself once the adapter config is resolved. Integrity errors propagate: a
    parent that fails its digest is a failure to report, not a reason to train cold quietly.
    """
    if snapshot.recipe.training.init == "base":
        return WarmStartPlan(None, None, "the recipe asks for a fresh adapter (init: base)")
    if parent is None:
        return WarmStartPlan(None, None, "no champion to start from")
    manifest, files = load_model_files(store, parent)
    if manifest.lineage.base_model != snapshot.base_model:
        return WarmStartPlan(
            None,
            manifest,
            f"the champion was built on {manifest.lineage.base_model.model_id}, this run on "
            f"{snapshot.base_model.model_id}",
        )
    parent_snapshot = store.get_document(
        store.ref_for_digest(manifest.lineage.dataset_sha256), DatasetSnapshot
    )
    mapping = map_labels(
        manifest.labels,
        manifest.lineage.taxonomy_step_id,
        snapshot.taxonomy_history,
        snapshot.labels,
    )
    seen = frozenset(
        (example.example_id, example.label)
        for example in parent_snapshot.examples
        if example.split == "train"
    )
    return WarmStartPlan(
        WarmStart(files=files, head_mapping=mapping, seen_examples=seen),
        manifest,
        f"warm start from {manifest.model_version}",
    )
