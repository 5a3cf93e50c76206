"""Checkpoints, resume, cancellation, warm starts and early stopping of `train_classifier`."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load as load_safetensors

from adaptmesh_ml import (
    ADAPTER_WEIGHTS_FILE,
    BaseModelCache,
    Classifier,
    HeadMapping,
    TrainedModel,
    TrainingCancelledError,
    TrainingState,
    WarmStart,
    WarmStartError,
    train_classifier,
)
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.values import LoraSettings
from tests.unit.adaptmesh_ml import tiny_domain

HEAD = "base_model.model.classifier"


def test_a_run_resumed_from_a_mid_epoch_checkpoint_ends_bit_identical() -> None:
    snapshot = tiny_domain.snapshot(epochs=2)
    bases = BaseModelCache()
    checkpoints: list[TrainingState] = []
    whole = train_classifier(
        snapshot, bases=bases, on_checkpoint=checkpoints.append, checkpoint_every_steps=4
    )
    steps = [(state.step, state.epoch, state.batches_done) for state in checkpoints]
    # Every 4 steps (6 batches an epoch) and at each epoch's end.
    assert steps == [(4, 1, 4), (6, 2, 0), (8, 2, 2), (12, 2, 6), (12, 3, 0)]
    mid_epoch = checkpoints[2]
    resumed = train_classifier(snapshot, bases=bases, resume=mid_epoch)
    assert resumed.files == whole.files
    assert resumed.metrics["train_steps"] == whole.metrics["train_steps"]


def test_progress_after_a_resume_continues_from_the_checkpoint_step() -> None:
    snapshot = tiny_domain.snapshot(epochs=2)
    checkpoints: list[TrainingState] = []
    train_classifier(snapshot, on_checkpoint=checkpoints.append, checkpoint_every_steps=4)
    steps: list[int] = []
    train_classifier(
        snapshot,
        resume=checkpoints[0],
        on_progress=lambda report: steps.append(report.step),
        progress_every_steps=1,
    )
    assert steps == list(range(5, 13))


def test_a_cached_base_gives_the_same_model_as_a_fresh_load() -> None:
    snapshot = tiny_domain.snapshot(epochs=1)
    bases = BaseModelCache()
    first = train_classifier(snapshot, bases=bases)
    assert snapshot.base_model in bases
    assert train_classifier(snapshot, bases=bases).files == first.files
    assert train_classifier(snapshot).files == first.files


def test_keep_going_false_cancels_between_steps() -> None:
    asked: list[int] = []

    def keep_going() -> bool:
        asked.append(1)
        return len(asked) < 2

    with pytest.raises(TrainingCancelledError, match="step 4"):
        train_classifier(
            tiny_domain.snapshot(epochs=2), keep_going=keep_going, progress_every_steps=2
        )


@pytest.fixture(scope="module")
def parent() -> TrainedModel:
    return train_classifier(tiny_domain.snapshot(epochs=3))


def _seen(trained_on: tuple[str, ...] = tiny_domain.LABELS) -> frozenset[tuple[str, str]]:
    return frozenset(
        (example.example_id, example.label)
        for example in tiny_domain.examples()
        if example.label in trained_on
    )


def test_a_warm_start_maps_renamed_merged_retired_and_added_rows(parent: TrainedModel) -> None:
    # sports -> athletics (rename), markets + weather -> news (merge), plus a new label.
    labels = ("athletics", "news", "elections")
    mapping = {"athletics": ("sports",), "news": ("markets", "weather"), "elections": ()}
    relabel = {"sports": "athletics", "markets": "news", "weather": "news"}
    dataset = [
        example.model_copy(update={"label": relabel[example.label]})
        for example in tiny_domain.examples()
    ]
    snapshot = tiny_domain.snapshot(epochs=1, labels=labels, dataset=dataset)
    warm_start = WarmStart(parent.files, mapping, _seen())

    # With a vanishing learning rate the trained head is the mapped head it started from.
    frozen = train_classifier(_with_training(snapshot, learning_rate=1e-12), warm_start=warm_start)
    parent_head = load_safetensors(parent.files[ADAPTER_WEIGHTS_FILE])
    head = load_safetensors(frozen.files[ADAPTER_WEIGHTS_FILE])
    parent_weight, parent_bias = parent_head[f"{HEAD}.weight"], parent_head[f"{HEAD}.bias"]
    weight, bias = head[f"{HEAD}.weight"], head[f"{HEAD}.bias"]
    assert weight.shape == (3, parent_weight.shape[1])
    assert torch.allclose(weight[0], parent_weight[0], atol=1e-6)  # renamed: its row kept
    assert torch.allclose(weight[1], parent_weight[1:3].mean(dim=0), atol=1e-6)  # merged
    assert torch.allclose(bias[1], torch.logsumexp(parent_bias[1:3], dim=0), atol=1e-6)
    assert weight[2].abs().max() < 0.2  # added: a small fresh row
    assert frozen.init == "champion"
    assert frozen.head_mapping == mapping
    assert frozen.parent_adapter_sha256 is not None

    warm = train_classifier(snapshot, warm_start=warm_start)
    assert warm.labels == labels
    # Every example changed label, so all of them are new to the parent.
    assert warm.metrics["new_examples"] == len(dataset)
    classifier = Classifier.from_trained(warm, tiny_domain.BASE_MODEL, "warm")
    predictions = classifier.predict([e.text for e in dataset])
    accuracy = sum(p.label == e.label for p, e in zip(predictions, dataset, strict=True))
    assert accuracy / len(dataset) > 0.8


def _with_training(snapshot: DatasetSnapshot, **updates: object) -> DatasetSnapshot:
    recipe = snapshot.recipe.model_copy(
        update={"training": snapshot.recipe.training.model_copy(update=updates)}
    )
    return snapshot.model_copy(update={"recipe": recipe})


def test_a_warm_start_trains_on_new_examples_plus_a_replay_share(parent: TrainedModel) -> None:
    examples = tiny_domain.examples()
    old = frozenset((e.example_id, e.label) for e in examples[:30])
    snapshot = _with_training(tiny_domain.snapshot(epochs=1), replay_ratio=1.0, min_replay=4)
    identity: HeadMapping = {label: (label,) for label in tiny_domain.LABELS}
    warm = train_classifier(snapshot, warm_start=WarmStart(parent.files, identity, old))
    assert warm.metrics["new_examples"] == 12
    assert warm.metrics["replayed_examples"] == 12
    assert warm.metrics["train_examples"] == 24


def test_a_parent_with_another_lora_shape_cannot_seed_a_run(parent: TrainedModel) -> None:
    snapshot = tiny_domain.snapshot(epochs=1)
    recipe = snapshot.recipe.model_copy(update={"lora": LoraSettings(r=8, alpha=16)})
    identity: HeadMapping = {label: (label,) for label in tiny_domain.LABELS}
    with pytest.raises(WarmStartError, match="LoRA shape changed"):
        train_classifier(
            snapshot.model_copy(update={"recipe": recipe}),
            warm_start=WarmStart(parent.files, identity, _seen()),
        )


def test_without_epochs_training_stops_when_the_held_out_loss_stops_improving() -> None:
    snapshot = _with_training(tiny_domain.snapshot(), epochs=None, max_epochs=12)
    # Labels that carry no signal: the held-out loss can only get worse once the train split
    # is memorised, so early stopping must end the run well before the cap.
    texts = [*tiny_domain.examples(), *tiny_domain.examples(split="eval")]
    dataset = tuple(
        e.model_copy(
            update={
                "example_id": f"{e.example_id}-{i}",
                "split": "train",
                "label": tiny_domain.LABELS[i % 3],
            }
        )
        for i, e in enumerate(texts)
    )
    trained = train_classifier(snapshot.model_copy(update={"examples": dataset}))
    assert trained.metrics["validation_examples"] >= 4
    assert trained.metrics["epochs"] < 12
    # The best epoch's weights are kept, and the run went on `patience` epochs past it.
    assert trained.metrics["best_epoch"] == trained.metrics["epochs"] - 2
    assert trained.hyperparameters["epochs"] == "early-stopping"
