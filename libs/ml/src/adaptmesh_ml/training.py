"""LoRA fine-tuning of a sequence classifier on one dataset snapshot.

The same function runs in-process (benchmarks, tests) and inside a Ray Train worker: the
training service passes `ray.train.torch.prepare_model` / `prepare_data_loader`, which wrap
the model in DistributedDataParallel and move batches to the worker's device.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from peft import LoraConfig, TaskType, get_peft_model
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler
from transformers import PreTrainedTokenizerBase

from adaptmesh_ml.base_models import resolve_base_model
from adaptmesh_ml.model_files import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    LABELS_FILE,
    configure_torch_threads,
    labels_document,
    load_base_classifier,
    load_tokenizer,
)
from adaptmesh_schemas.documents import DatasetSnapshot

Hyperparameters = dict[str, float | int | str | bool]


@dataclass(frozen=True)
class TrainingProgress:
    """Where a run is: 1-based epoch and global step, and the mean loss since the last report."""

    epoch: int
    step: int
    total_steps: int
    loss: float


@dataclass(frozen=True)
class TrainedModel:
    """A trained adapter and head, as the files of a model directory (see `model_files`)."""

    labels: tuple[str, ...]
    files: dict[str, bytes]
    metrics: dict[str, float]
    hyperparameters: Hyperparameters
    seed: int


class _LabelledTexts(Dataset[tuple[str, int]]):
    def __init__(self, texts: Sequence[str], label_ids: Sequence[int]) -> None:
        self._texts = list(texts)
        self._label_ids = list(label_ids)

    def __len__(self) -> int:
        return len(self._texts)

    def __getitem__(self, index: int) -> tuple[str, int]:
        return self._texts[index], self._label_ids[index]


class _DynamicPaddingCollator:
    """Tokenizes a batch, padding only to its longest text (4x faster than a fixed length)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self._tokenizer = tokenizer
        self._max_length = max_length

    def __call__(self, batch: Sequence[tuple[str, int]]) -> dict[str, torch.Tensor]:
        texts = [text for text, _ in batch]
        encoded = self._tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self._max_length,
            return_tensors="pt",
        )
        # A plain dict: Ray's device-moving loader and DDP both expect a Mapping of tensors.
        tensors: dict[str, torch.Tensor] = dict(encoded.items())
        tensors["labels"] = torch.tensor([label for _, label in batch], dtype=torch.long)
        return tensors


def train_classifier(
    snapshot: DatasetSnapshot,
    *,
    on_progress: Callable[[TrainingProgress], None] | None = None,
    progress_every_steps: int = 10,
    prepare_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    prepare_data_loader: Callable[[DataLoader[Any]], DataLoader[Any]] | None = None,
    world_rank: int = 0,
) -> TrainedModel:
    """Fine-tune a LoRA adapter and a head over `snapshot.labels` on its train split.

    Deterministic for a given seed in one process. Raises `ValueError` when there is nothing to
    train on (no train examples, fewer than two labels, or an example with an unknown label).
    A label without train examples still gets its head row; softmax pushes it down, so the
    model learns that label as unlikely until examples arrive.
    """
    if progress_every_steps < 1:
        raise ValueError("progress_every_steps must be at least 1")
    recipe = snapshot.recipe
    settings = recipe.training
    labels = tuple(snapshot.labels)
    dataset = _train_split(snapshot)

    configure_torch_threads()
    world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    directory = resolve_base_model(snapshot.base_model)

    # Seed a private copy of the RNG so a service's other torch users are not disturbed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        tokenizer = load_tokenizer(snapshot.base_model, directory)
        base = load_base_classifier(snapshot.base_model, directory, labels, tokenizer.pad_token_id)
        lora_config = LoraConfig(
            task_type=TaskType.SEQ_CLS,  # puts the classifier head in modules_to_save
            r=recipe.lora.r,
            lora_alpha=recipe.lora.alpha,
            lora_dropout=recipe.lora.dropout,
            target_modules=list(recipe.lora.target_modules),
        )
        peft_model: Any = get_peft_model(base, lora_config)
        # Record the portable id, not this machine's site-packages path.
        peft_model.peft_config["default"].base_model_name_or_path = snapshot.base_model.model_id

        loader: DataLoader[Any] = DataLoader(
            dataset,
            batch_size=settings.batch_size,
            sampler=_shuffling_sampler(dataset, settings.seed, world_size),
            collate_fn=_DynamicPaddingCollator(tokenizer, settings.max_length),
        )
        model: torch.nn.Module = prepare_model(peft_model) if prepare_model else peft_model
        if prepare_data_loader is not None:
            loader = prepare_data_loader(loader)
        optimizer = torch.optim.AdamW(
            [parameter for parameter in peft_model.parameters() if parameter.requires_grad],
            lr=settings.learning_rate,
        )
        started = time.perf_counter()
        epoch_losses, steps = _run_epochs(
            model,
            loader,
            optimizer,
            epochs=settings.epochs,
            world_size=world_size,
            on_progress=on_progress if world_rank == 0 else None,
            progress_every_steps=progress_every_steps,
        )
        train_seconds = time.perf_counter() - started
        files = _model_files(peft_model, labels)
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)

    seen = len(dataset) * settings.epochs
    metrics = {
        "train_loss": epoch_losses[-1],
        "train_loss_first_epoch": epoch_losses[0],
        "train_examples": float(len(dataset)),
        "train_steps": float(steps),
        "train_seconds": train_seconds,
        # A floor on the clock keeps the metric finite (manifests are JSON: no infinities).
        "train_samples_per_second": seen / max(train_seconds, 1e-9),
        "trainable_parameters": float(trainable),
    }
    hyperparameters: Hyperparameters = {
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "max_length": settings.max_length,
        "optimizer": "adamw",
        "padding": "longest",
        "lora_r": recipe.lora.r,
        "lora_alpha": recipe.lora.alpha,
        "lora_dropout": recipe.lora.dropout,
        "lora_target_modules": ",".join(recipe.lora.target_modules),
        "num_labels": len(labels),
        "world_size": world_size,
    }
    return TrainedModel(
        labels=labels,
        files=files,
        metrics=metrics,
        hyperparameters=hyperparameters,
        seed=settings.seed,
    )


def _train_split(snapshot: DatasetSnapshot) -> _LabelledTexts:
    labels = tuple(snapshot.labels)
    if len(labels) < 2:
        # One output would make transformers treat the task as regression.
        raise ValueError(f"a classifier needs at least two labels, the snapshot has {labels}")
    train_examples = [example for example in snapshot.examples if example.split == "train"]
    if not train_examples:
        raise ValueError(f"dataset for {snapshot.domain} has no train examples")
    unknown = sorted({example.label for example in train_examples} - set(labels))
    if unknown:
        raise ValueError(f"train examples carry labels outside the snapshot's labels: {unknown}")
    label_ids = {label: index for index, label in enumerate(labels)}
    return _LabelledTexts(
        [example.text for example in train_examples],
        [label_ids[example.label] for example in train_examples],
    )


def _run_epochs(
    model: torch.nn.Module,
    loader: DataLoader[Any],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    world_size: int,
    on_progress: Callable[[TrainingProgress], None] | None,
    progress_every_steps: int,
) -> tuple[list[float], int]:
    """Train; return each epoch's mean loss (over all workers) and the number of steps."""
    device = next(model.parameters()).device
    total_steps = epochs * len(loader)
    epoch_losses: list[float] = []
    step = 0
    since_report: list[float] = []
    model.train()
    for epoch in range(1, epochs + 1):
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        loss_sum, example_count = 0.0, 0
        for batch in loader:
            inputs = {key: value.to(device) for key, value in batch.items()}
            loss = model(**inputs).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            step += 1
            batch_loss = float(loss.detach())
            batch_size = int(inputs["labels"].shape[0])
            loss_sum += batch_loss * batch_size
            example_count += batch_size
            since_report.append(batch_loss)
            if step % progress_every_steps == 0 or step == total_steps:
                if on_progress is not None:
                    mean_loss = sum(since_report) / len(since_report)
                    on_progress(TrainingProgress(epoch, step, total_steps, mean_loss))
                since_report.clear()
        epoch_losses.append(_global_mean(loss_sum, example_count, world_size))
    return epoch_losses, step


def _shuffling_sampler(dataset: _LabelledTexts, seed: int, world_size: int) -> Sampler[int]:
    if world_size > 1:
        # Ray keeps a DistributedSampler it finds, so the shards honour the recipe's seed.
        return DistributedSampler(dataset, shuffle=True, seed=seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return RandomSampler(dataset, generator=generator)


def _global_mean(loss_sum: float, count: int, world_size: int) -> float:
    """The epoch's mean loss over every worker's shard (collective: every rank calls it)."""
    if world_size > 1:
        totals = torch.tensor([loss_sum, float(count)], dtype=torch.float64)
        dist.all_reduce(totals)
        loss_sum, count = float(totals[0]), int(totals[1])
    return loss_sum / max(count, 1)


def _model_files(peft_model: Any, labels: Sequence[str]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="adaptmesh-trained-") as directory:
        # Never look the base model up on the Hub: the vocabulary is never resized here.
        peft_model.save_pretrained(directory, save_embedding_layers=False)
        files = {
            name: (Path(directory) / name).read_bytes()
            for name in (ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE)
        }
    files[LABELS_FILE] = labels_document(labels)
    return files
