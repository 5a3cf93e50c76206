"""Dataset snapshots made from labelled documents by ingestion's own rules.

Benchmarks and tests that train without a mesh need the dataset version ingestion would make
from a recipe and a batch of documents: the same example ids, the same dedupe by text, the same
hashed train/eval split, the same canonical order. This applies the two changes with
ingestion's pure `apply_change` instead of imitating it.
"""

from __future__ import annotations

from collections.abc import Sequence

from adaptmesh_cli.reuters import ReutersDoc
from adaptmesh_ingestion.domain import apply_change
from adaptmesh_ingestion.snapshot import snapshot_of
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.events import DataBatchSubmitted, RecipeChanged
from adaptmesh_schemas.values import LabelledExample


def snapshot_from_docs(
    recipe: RecipeChanged, docs: Sequence[ReutersDoc], *, batch_id: str = "documents"
) -> DatasetSnapshot:
    """The dataset version `recipe` followed by one batch of `docs` makes in ingestion."""
    state = apply_change(None, recipe, f"{batch_id}-recipe")
    batch = DataBatchSubmitted(
        domain=recipe.domain,
        batch_id=batch_id,
        examples=tuple(LabelledExample(text=doc.text, label=doc.label) for doc in docs),
    )
    state = apply_change(state, batch, batch_id)
    return snapshot_of(state, parent_version=None, cause_event_ids=(batch_id,))
