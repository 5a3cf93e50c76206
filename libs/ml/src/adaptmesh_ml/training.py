"""LoRA fine-tuning of a sequence classifier on one dataset snapshot.

The same function runs in-process (benchmarks, tests, `adaptmesh rebuild`) and inside the
training service's long-lived Ray workers, which pass `DistributedDataParallel` as
`prepare_model` when several of them train one model.

A run can:

* start from a base model (a fresh adapter and head) or warm-start from a parent model's
  adapter and head (`WarmStart`), training on the examples the parent did not see plus a replay
  share of older ones, with the head's rows mapped through taxonomy changes (`head_mapping`);
* stop early: with `epochs` unset it trains until the loss on a fixed, hashed slice of the
  train split stops improving (at most `max_epochs`) and keeps the best epoch's weights;
* checkpoint (`on_checkpoint`) at every epoch's end and every N steps, and resume from such a
  `TrainingState`: the data order is a function of (seed, epoch), so a resumed run replays the
  remaining batches of the epoch in the same order, and on one worker ends bit-identical to a
  run that was never interrupted;
* be cancelled between steps (`keep_going`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import json
import math
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from peft import LoraConfig, TaskType, get_peft_model, set_peft_model_state_dict
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from transformers import PreTrainedTokenizerBase

from adaptmesh_ml.architectures import lora_target_modules
from adaptmesh_ml.base_cache import BaseModelCache, LoadedBase, classifier_head, load_base
from adaptmesh_ml.head_mapping import HeadMapping, map_head
from adaptmesh_ml.model_files import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    LABELS_FILE,
    configure_torch_threads,
    labels_document,
    labels_from_document,
)
from adaptmesh_schemas.documents import DatasetExample, DatasetSnapshot
from adaptmesh_schemas.values import TrainingSettings

Hyperparameters = dict[str, float | int | str | bool]

# Early stopping: a slice of the train split held out by a hash of the example id, used only
# when the split is big enough for its loss to mean something.
VALIDATION_FRACTION = 0.1
MIN_TRAIN_FOR_VALIDATION = 40
MIN_VALIDATION_EXAMPLES = 4
EARLY_STOPPING_PATIENCE = 2
MIN_IMPROVEMENT = 1e-4
VALIDATION_BATCH = 64
LIBRARIES = ("torch", "transformers", "peft", "adaptmesh-ml")

TRAINABLE_FILE = "trainable.safetensors"
BEST_FILE = "best.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
LOOP_FILE = "loop.json"


@dataclass(frozen=True)
class TrainingProgress:
    """Where a run is: 1-based epoch and global step, and the mean loss since the last report."""

    epoch: int
    step: int
    total_steps: int
    loss: float


@dataclass(frozen=True)
class TrainingState:
    """A checkpoint: everything a run needs to go on from `step` (see `train_classifier`).

    `epoch` is the 1-based epoch the next step belongs to and `batches_done` how many of its
    batches are behind. `files` are bytes so the caller decides where they are kept.
    """

    step: int
    epoch: int
    batches_done: int
    files: dict[str, bytes]


@dataclass(frozen=True)
class WarmStart:
    """A parent model to start from: its files, how its head rows map onto the new labels,
    and which (example id, label) pairs it was trained on (the rest count as new)."""

    files: Mapping[str, bytes]
    head_mapping: HeadMapping
    seen_examples: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class TrainedModel:
    """A trained adapter and head, as the files of a model directory (see `model_files`)."""

    labels: tuple[str, ...]
    files: dict[str, bytes]
    metrics: dict[str, float]
    hyperparameters: Hyperparameters
    seed: int
    init: Literal["champion", "base"] = "base"
    head_mapping: HeadMapping = field(default_factory=dict)
    parent_adapter_sha256: str | None = None
    determinism: Hyperparameters = field(default_factory=dict)
    library_versions: dict[str, str] = field(default_factory=dict)


class TrainingCancelledError(RuntimeError):
    """`keep_going` said stop: the run ended without a model."""


class WarmStartError(ValueError):
    """A parent's files that cannot seed this run (other LoRA shape, unreadable head)."""


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
        # A plain dict: DDP expects a Mapping of tensors.
        tensors: dict[str, torch.Tensor] = dict(encoded.items())
        tensors["labels"] = torch.tensor([label for _, label in batch], dtype=torch.long)
        return tensors


class _EpochShuffle(Sampler[int]):
    """A permutation that depends only on (seed, epoch): what makes a resume replay the
    same batches (a generator carried across epochs would not survive a restart)."""

    def __init__(self, size: int, seed: int) -> None:
        self._size = size
        self._seed = seed
        self._epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self._seed * 1_000 + self._epoch)
        return iter(torch.randperm(self._size, generator=generator).tolist())

    def __len__(self) -> int:
        return self._size


@dataclass
class _Loop:
    """The loop's own numbers, checkpointed beside the weights."""

    epoch_losses: list[float] = field(default_factory=list)
    loss_sum: float = 0.0
    example_count: int = 0
    since_report: list[float] = field(default_factory=list)
    validation_losses: list[float] = field(default_factory=list)
    best_epoch: int = 0
    train_seconds: float = 0.0
    stopped_early: bool = False

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> _Loop:
        return cls(**json.loads(data))


def train_classifier(
    snapshot: DatasetSnapshot,
    *,
    on_progress: Callable[[TrainingProgress], None] | None = None,
    progress_every_steps: int = 10,
    prepare_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    prepare_data_loader: Callable[[DataLoader[Any]], DataLoader[Any]] | None = None,
    world_rank: int = 0,
    bases: BaseModelCache | None = None,
    warm_start: WarmStart | None = None,
    resume: TrainingState | None = None,
    on_checkpoint: Callable[[TrainingState], None] | None = None,
    checkpoint_every_steps: int | None = None,
    keep_going: Callable[[], bool] | None = None,
) -> TrainedModel:
    """Fine-tune a LoRA adapter and a head over `snapshot.labels` on its train split.

    Deterministic for a given seed and thread count. Raises `ValueError` when there is nothing
    to train on (no train examples, fewer than two labels, or an example with an unknown
    label), `WarmStartError` when `warm_start` cannot seed this run, and
    `TrainingCancelledError` when `keep_going` (asked on rank 0 every `progress_every_steps`,
    its answer shared with every rank) returns False. A label without train examples still
    gets its head row; softmax pushes it down, so the model learns that label as unlikely
    until examples arrive. `on_progress` and `on_checkpoint` are called on rank 0 only.
    """
    if progress_every_steps < 1:
        raise ValueError("progress_every_steps must be at least 1")
    if checkpoint_every_steps is not None and checkpoint_every_steps < 1:
        raise ValueError("checkpoint_every_steps must be at least 1")
    recipe = snapshot.recipe
    settings = recipe.training
    labels = tuple(snapshot.labels)
    train_examples = _train_examples(snapshot)
    pool, validation = _validation_split(train_examples, early_stopping=settings.epochs is None)
    selected, new_count = _select(pool, warm_start, settings)

    threads = configure_torch_threads()
    world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    base = bases.get(snapshot.base_model) if bases is not None else load_base(snapshot.base_model)
    max_epochs = settings.epochs or settings.max_epochs

    deterministic_before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(mode=True)
    # Seed a private copy of the RNG so a service's other torch users are not disturbed.
    with torch.random.fork_rng(devices=[]), _restored_determinism(before=deterministic_before):
        torch.manual_seed(settings.seed)
        peft_model, lora_config = _peft_model(snapshot, base, labels, settings.seed)
        parent_adapter_sha256 = None
        if warm_start is not None:
            parent_adapter_sha256 = _apply_warm_start(peft_model, lora_config, warm_start, labels)
        dataset = _as_dataset(selected, labels)
        sampler = _shuffling_sampler(dataset, settings.seed, world_size)
        loader: DataLoader[Any] = DataLoader(
            dataset,
            batch_size=settings.batch_size,
            sampler=sampler,
            collate_fn=_DynamicPaddingCollator(base.tokenizer, settings.max_length),
            # Each new iterator draws a seed from its generator; from the global one that
            # draw would shift the dropout masks of a resumed run.
            generator=torch.Generator().manual_seed(settings.seed),
        )
        session = _Session(
            model=prepare_model(peft_model) if prepare_model else peft_model,
            peft_model=peft_model,
            loader=prepare_data_loader(loader) if prepare_data_loader else loader,
            sampler=sampler,
            validation=_validation_batches(validation, labels, base, settings.max_length),
            max_epochs=max_epochs,
            learning_rate=settings.learning_rate
            * (settings.warm_learning_rate_scale if warm_start is not None else 1.0),
            hooks=_Hooks(
                on_progress=on_progress if world_rank == 0 else None,
                progress_every_steps=progress_every_steps,
                on_checkpoint=on_checkpoint if world_rank == 0 else None,
                checkpoint_every_steps=checkpoint_every_steps,
                keep_going=keep_going,
                rank_zero=world_rank == 0,
                world_size=world_size,
            ),
        )
        if resume is not None:
            session.restore(resume)
        session.run(judge_start=warm_start is not None and resume is None)
        loop, best, step = session.loop, session.best, session.step
        if best is not None:  # the best epoch's weights, not the last one's
            _load_trainable(peft_model, best)
        files = _model_files(peft_model, labels)
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)

    epochs_run = len(loop.epoch_losses)
    metrics = {
        "train_loss": loop.epoch_losses[-1],
        "train_loss_first_epoch": loop.epoch_losses[0],
        "train_examples": float(len(dataset)),
        "new_examples": float(new_count),
        "replayed_examples": float(len(dataset) - new_count),
        "validation_examples": float(len(validation)),
        "epochs": float(epochs_run),
        "best_epoch": float(loop.best_epoch if loop.validation_losses else epochs_run),
        "train_steps": float(step),
        "train_seconds": loop.train_seconds,
        # A floor on the clock keeps the metric finite (manifests are JSON: no infinities).
        "train_samples_per_second": len(dataset) * epochs_run / max(loop.train_seconds, 1e-9),
        "trainable_parameters": float(trainable),
    }
    if loop.validation_losses:
        metrics["validation_loss"] = min(loop.validation_losses)
    hyperparameters: Hyperparameters = {
        "epochs": settings.epochs if settings.epochs is not None else "early-stopping",
        "max_epochs": max_epochs,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "warm_learning_rate_scale": settings.warm_learning_rate_scale,
        "max_length": settings.max_length,
        "optimizer": "adamw",
        "padding": "longest",
        "lora_r": recipe.lora.r,
        "lora_alpha": recipe.lora.alpha,
        "lora_dropout": recipe.lora.dropout,
        "lora_target_modules": ",".join(sorted(lora_config.target_modules or ())),
        "num_labels": len(labels),
        "world_size": world_size,
        "init": "champion" if warm_start is not None else "base",
        "replay_ratio": settings.replay_ratio,
        "min_replay": settings.min_replay,
    }
    return TrainedModel(
        labels=labels,
        files=files,
        metrics=metrics,
        hyperparameters=hyperparameters,
        seed=settings.seed,
        init="champion" if warm_start is not None else "base",
        head_mapping=dict(warm_start.head_mapping) if warm_start is not None else {},
        parent_adapter_sha256=parent_adapter_sha256,
        determinism={
            "torch_threads": threads,
            "deterministic_algorithms": True,
            "world_size": world_size,
            "data_order": "randperm(seed*1000+epoch)",
        },
        library_versions=library_versions(),
    )


@contextlib.contextmanager
def _restored_determinism(*, before: bool) -> Iterator[None]:
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(mode=before)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose arithmetic decides a model's bytes."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found


def warm_start_blocker(recipe_lora: LoraConfig, parent_files: Mapping[str, bytes]) -> str | None:
    """Why `parent_files` cannot seed a run with `recipe_lora`, or None when they can."""
    try:
        parent = json.loads(parent_files[ADAPTER_CONFIG_FILE])
    except (KeyError, ValueError) as error:
        return f"the parent's adapter config is unreadable ({error!r})"
    mine = (recipe_lora.r, recipe_lora.lora_alpha, sorted(recipe_lora.target_modules or ()))
    theirs = (parent.get("r"), parent.get("lora_alpha"), sorted(parent.get("target_modules", ())))
    if mine != theirs:
        return f"LoRA shape changed (r, alpha, targets): parent {theirs}, now {mine}"
    return None


def lora_config_for(snapshot: DatasetSnapshot, model_type: str) -> LoraConfig:
    """The adapter a run on `snapshot` trains on a base of `model_type`: the recipe's target
    modules, or the architecture's attention projections when it names none."""
    lora = snapshot.recipe.lora
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,  # puts the classifier head in modules_to_save
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora_target_modules(model_type, lora.target_modules)),
    )


# -- building the model --------------------------------------------------------------------


def _peft_model(
    snapshot: DatasetSnapshot, base: LoadedBase, labels: Sequence[str], seed: int
) -> tuple[Any, LoraConfig]:
    lora_config = lora_config_for(snapshot, base.pristine.config.model_type)
    peft_model: Any = get_peft_model(base.fresh_classifier(labels, seed), lora_config)
    # Record the portable id, not this machine's site-packages path.
    peft_model.peft_config["default"].base_model_name_or_path = snapshot.base_model.model_id
    return peft_model, peft_model.peft_config["default"]


def _apply_warm_start(
    peft_model: Any, lora_config: LoraConfig, warm_start: WarmStart, labels: Sequence[str]
) -> str:
    """Load the parent's adapter and its head rows mapped onto `labels`; returns the digest
    of the parent's adapter file."""
    blocker = warm_start_blocker(lora_config, warm_start.files)
    if blocker is not None:
        raise WarmStartError(blocker)
    missing = [label for label in labels if label not in warm_start.head_mapping]
    if missing:
        raise WarmStartError(f"the head mapping has no entry for {missing}")
    adapter = warm_start.files[ADAPTER_WEIGHTS_FILE]
    parent_labels = labels_from_document(warm_start.files[LABELS_FILE])
    parent_state = load_safetensors(adapter)
    fresh_state = get_peft_model_state_dict(peft_model)
    head_name, _ = classifier_head(peft_model.base_model.model)
    mapping = {label: warm_start.head_mapping[label] for label in labels}
    for weight_key in [key for key in parent_state if _is_label_rows(key, head_name)]:
        bias_key = weight_key.removesuffix("weight") + "bias"
        parent_weight = parent_state[weight_key]
        if parent_weight.shape[0] != len(parent_labels):
            continue  # a hidden layer of a deeper head: its shape does not depend on labels
        if weight_key not in fresh_state:
            raise WarmStartError(f"the parent's head tensor {weight_key} has no counterpart")
        weight, bias = map_head(
            parent_weight,
            parent_state.get(bias_key),
            parent_labels,
            mapping,
            fresh_state[weight_key],
            fresh_state.get(bias_key),
        )
        parent_state[weight_key] = weight
        if bias is not None:
            parent_state[bias_key] = bias
    outcome: Any = set_peft_model_state_dict(peft_model, parent_state)
    unexpected = [key for key in outcome.unexpected_keys if "lora_" in key or head_name in key]
    if unexpected:
        raise WarmStartError(f"the parent's adapter has tensors this model lacks: {unexpected}")
    return hashlib.sha256(adapter).hexdigest()


def _is_label_rows(key: str, head_name: str) -> bool:
    return f"{head_name}." in key and key.endswith(".weight") and "lora_" not in key


# -- data ----------------------------------------------------------------------------------


def _train_examples(snapshot: DatasetSnapshot) -> list[DatasetExample]:
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
    return train_examples


def _validation_split(
    examples: list[DatasetExample], *, early_stopping: bool
) -> tuple[list[DatasetExample], list[DatasetExample]]:
    """(train on, validate on): a fixed hashed slice of the train split when early stopping
    has enough data to judge by, else everything is trained on."""
    if not early_stopping or len(examples) < MIN_TRAIN_FOR_VALIDATION:
        return examples, []
    validation = [
        e for e in examples if _hash_position("validation", e.example_id) < VALIDATION_FRACTION
    ]
    if len(validation) < MIN_VALIDATION_EXAMPLES:
        return examples, []
    held_out = {example.example_id for example in validation}
    return [e for e in examples if e.example_id not in held_out], validation


def _select(
    pool: list[DatasetExample], warm_start: WarmStart | None, settings: TrainingSettings
) -> tuple[list[DatasetExample], int]:
    """What a run trains on, and how many of those are new to its parent.

    A warm start trains on the examples its parent did not see (new texts, changed labels)
    plus `replay_ratio` older ones per new one (at least `min_replay`), drawn by the seed, so
    the adapter keeps what it knew. Without anything new it retrains on everything.
    """
    if warm_start is None:
        return pool, len(pool)
    new = [e for e in pool if (e.example_id, e.label) not in warm_start.seen_examples]
    old = [e for e in pool if (e.example_id, e.label) in warm_start.seen_examples]
    if not new:
        return pool, 0
    wanted = max(math.ceil(settings.replay_ratio * len(new)), settings.min_replay)
    replay = random.Random(settings.seed).sample(old, min(wanted, len(old)))
    return new + sorted(replay, key=lambda example: example.example_id), len(new)


def _as_dataset(examples: Sequence[DatasetExample], labels: Sequence[str]) -> _LabelledTexts:
    label_ids = {label: index for index, label in enumerate(labels)}
    return _LabelledTexts(
        [example.text for example in examples], [label_ids[example.label] for example in examples]
    )


def _hash_position(salt: str, example_id: str) -> float:
    digest = hashlib.sha256(f"{salt}:{example_id}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32


def _shuffling_sampler(dataset: _LabelledTexts, seed: int, world_size: int) -> Sampler[int]:
    if world_size > 1:
        # Each rank takes its shard of the same (seed, epoch) permutation.
        return DistributedSampler(dataset, shuffle=True, seed=seed)
    return _EpochShuffle(len(dataset), seed)


def _set_epoch(sampler: Sampler[int], loader: DataLoader[Any], epoch: int) -> None:
    for candidate in (sampler, getattr(loader, "sampler", None)):
        if isinstance(candidate, DistributedSampler | _EpochShuffle):
            candidate.set_epoch(epoch)


def _validation_batches(
    validation: Sequence[DatasetExample],
    labels: Sequence[str],
    base: LoadedBase,
    max_length: int,
) -> list[dict[str, torch.Tensor]]:
    collate = _DynamicPaddingCollator(base.tokenizer, max_length)
    label_ids = {label: index for index, label in enumerate(labels)}
    pairs = [(example.text, label_ids[example.label]) for example in validation]
    return [
        collate(pairs[start : start + VALIDATION_BATCH])
        for start in range(0, len(pairs), VALIDATION_BATCH)
    ]


# -- the loop's pieces ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Hooks:
    """How a run talks to its caller: progress, checkpoints, cancellation (rank 0 only)."""

    on_progress: Callable[[TrainingProgress], None] | None
    progress_every_steps: int
    on_checkpoint: Callable[[TrainingState], None] | None
    checkpoint_every_steps: int | None
    keep_going: Callable[[], bool] | None
    rank_zero: bool
    world_size: int


class _Session:
    """The optimisation loop of one run, with what it must remember to be resumed."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        peft_model: Any,
        loader: DataLoader[Any],
        sampler: Sampler[int],
        validation: list[dict[str, torch.Tensor]],
        max_epochs: int,
        learning_rate: float,
        hooks: _Hooks,
    ) -> None:
        self.model = model
        self.peft_model = peft_model
        self.loader = loader
        self.sampler = sampler
        self.validation = validation
        self.max_epochs = max_epochs
        self.hooks = hooks
        self.optimizer = torch.optim.AdamW(
            [parameter for parameter in peft_model.parameters() if parameter.requires_grad],
            lr=learning_rate,
        )
        self.loop = _Loop()
        self.best: dict[str, torch.Tensor] | None = None
        self.step = 0
        self.start_epoch, self.skip_batches = 1, 0
        self.total_steps = max_epochs * len(loader)
        self.device = next(model.parameters()).device

    def restore(self, state: TrainingState) -> None:
        self.loop, self.best = _restore(state, self.peft_model, self.optimizer)
        self.start_epoch, self.skip_batches, self.step = state.epoch, state.batches_done, state.step

    def run(self, *, judge_start: bool = False) -> None:
        """Train the remaining epochs. With `judge_start` (a warm start, not resumed) the
        starting weights are scored first and count as "epoch 0": a run that only makes the
        parent worse on held-out data ends with the parent's weights."""
        if judge_start and self.validation:
            self._judge(0)
        self.model.train()
        for epoch in range(self.start_epoch, self.max_epochs + 1):
            if self.loop.stopped_early:
                break
            skip = self.skip_batches if epoch == self.start_epoch else 0
            self._epoch(epoch, skip)
            self.loop.epoch_losses.append(
                _global_mean(self.loop.loss_sum, self.loop.example_count, self.hooks.world_size)
            )
            self.loop.loss_sum, self.loop.example_count = 0.0, 0
            if self.validation:
                self._judge(epoch)
            self._checkpoint(epoch + 1, 0)

    def _epoch(self, epoch: int, skip: int) -> None:
        started = time.perf_counter()
        _set_epoch(self.sampler, self.loader, epoch)
        every = self.hooks.checkpoint_every_steps
        for batch_index, batch in enumerate(self.loader):
            if batch_index < skip:
                continue  # done before the checkpoint this run resumed from
            inputs = {key: value.to(self.device) for key, value in batch.items()}
            loss = self.model(**inputs).loss
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            self._account(epoch, float(loss.detach()), int(inputs["labels"].shape[0]))
            if every and self.step % every == 0:
                self.loop.train_seconds += time.perf_counter() - started
                self._checkpoint(epoch, batch_index + 1)
                started = time.perf_counter()
        self.loop.train_seconds += time.perf_counter() - started

    def _account(self, epoch: int, batch_loss: float, batch_size: int) -> None:
        loop, hooks = self.loop, self.hooks
        loop.loss_sum += batch_loss * batch_size
        loop.example_count += batch_size
        loop.since_report.append(batch_loss)
        if self.step % hooks.progress_every_steps and self.step != self.total_steps:
            return
        if hooks.on_progress is not None:
            mean_loss = sum(loop.since_report) / len(loop.since_report)
            hooks.on_progress(TrainingProgress(epoch, self.step, self.total_steps, mean_loss))
        loop.since_report.clear()
        if not _agreed_to_go_on(
            hooks.keep_going, rank_zero=hooks.rank_zero, world=hooks.world_size
        ):
            raise TrainingCancelledError(f"cancelled at step {self.step}")

    def _checkpoint(self, epoch: int, batches_done: int) -> None:
        if self.hooks.on_checkpoint is not None:
            self.hooks.on_checkpoint(
                _capture(
                    self,
                    epoch=epoch,
                    batches_done=batches_done,
                )
            )

    def _judge(self, epoch: int) -> None:
        """Record the epoch's validation loss; keep its weights when they are the best so
        far, and stop after `EARLY_STOPPING_PATIENCE` epochs without improvement. Every rank
        sees the same weights and the same slice, so every rank reaches the same verdict."""
        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in self.validation:
                size = int(batch["labels"].shape[0])
                total += float(self.peft_model(**batch).loss) * size
                count += size
        self.model.train()
        loss = total / max(count, 1)
        loop = self.loop
        previous_best = min(loop.validation_losses, default=math.inf)
        loop.validation_losses.append(loss)
        if loss < previous_best - MIN_IMPROVEMENT:
            loop.best_epoch = epoch
            self.best = _trainable(self.peft_model)
        elif epoch - loop.best_epoch >= EARLY_STOPPING_PATIENCE:
            loop.stopped_early = True


def _agreed_to_go_on(keep_going: Callable[[], bool] | None, *, rank_zero: bool, world: int) -> bool:
    """Rank 0 asks; with several workers its answer is broadcast so all stop together."""
    go_on = keep_going() if keep_going is not None and rank_zero else True
    if world > 1:
        flag = torch.tensor([1 if go_on else 0], dtype=torch.int64)
        dist.broadcast(flag, src=0)
        go_on = bool(flag.item())
    return go_on


def _trainable(peft_model: Any) -> dict[str, torch.Tensor]:
    return {
        name: parameter.detach().clone()
        for name, parameter in peft_model.named_parameters()
        if parameter.requires_grad
    }


def _load_trainable(peft_model: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    parameters = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            parameters[name].copy_(tensor)


def _capture(session: _Session, *, epoch: int, batches_done: int) -> TrainingState:
    buffer = io.BytesIO()
    torch.save({"optimizer": session.optimizer.state_dict(), "rng": torch.get_rng_state()}, buffer)
    files = {
        TRAINABLE_FILE: save_safetensors(_trainable(session.peft_model)),
        OPTIMIZER_FILE: buffer.getvalue(),
        LOOP_FILE: session.loop.to_json(),
    }
    if session.best is not None:
        files[BEST_FILE] = save_safetensors(session.best)
    return TrainingState(step=session.step, epoch=epoch, batches_done=batches_done, files=files)


def _restore(
    state: TrainingState, peft_model: Any, optimizer: torch.optim.Optimizer
) -> tuple[_Loop, dict[str, torch.Tensor] | None]:
    try:
        _load_trainable(peft_model, load_safetensors(state.files[TRAINABLE_FILE]))
        saved = torch.load(io.BytesIO(state.files[OPTIMIZER_FILE]), weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        loop = _Loop.from_json(state.files[LOOP_FILE])
        best = load_safetensors(state.files[BEST_FILE]) if BEST_FILE in state.files else None
    except (KeyError, ValueError, RuntimeError) as error:
        raise ValueError(f"checkpoint at step {state.step} cannot be restored: {error}") from error
    return loop, best


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
