"""One base model in memory, many domains on it: each domain is a LoRA adapter and a head.

`Classifier` loads a whole base model per domain. `SharedBaseModels` loads each base model once
(per process) and puts every domain trained on it beside the others as a named PEFT adapter,
so twenty domains on MiniLM cost one MiniLM plus twenty adapters.

Requests for several domains on one base run in one forward pass: PEFT's mixed-adapter batches
(`adapter_names`, one name per row) apply each row's own LoRA weights inside the shared
backbone. The heads cannot go through PEFT: `modules_to_save` copies the base's head once per
adapter, so every adapter's head must have the base head's shape, and a mixed batch stacks the
heads' outputs into one tensor, which fails for heads over different label counts. Each
domain's head is therefore kept here, and the base's own head is replaced by `_HeadInput`, a
pass-through: the architecture's `...ForSequenceClassification.forward` then returns what its
head would have been given, already pooled the architecture's way (BERT: pooler + dropout;
Llama and other decoders: the hidden state of each row's last non-pad token), and each domain's
head is applied to its own rows. A linear head applied before or after picking a row gives the
same logits, so the results are those of `Classifier` (the tests compare them).

Resident adapters are capped (`capacity`, across all bases); the least recently used one is
unloaded first and, by default, loaded again (digests checked again) when it is next asked for.
A base whose last adapter goes is freed. Loading a new model version for a domain puts it under
a fresh adapter name beside the old one, which keeps answering until the caller unloads it.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from peft import LoraConfig, PeftConfig, PeftModel, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from adaptmesh_kit import ArtifactStore
from adaptmesh_ml.artifacts import load_model_files
from adaptmesh_ml.base_cache import HEAD_MODULE_NAMES, classifier_head, load_base
from adaptmesh_ml.classifier import EmbeddingSketcher, Prediction, prediction_of
from adaptmesh_ml.model_files import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    LABELS_FILE,
    MODEL_FILES,
    ModelFilesError,
    configure_torch_threads,
    labels_from_document,
)
from adaptmesh_ml.training import TrainedModel
from adaptmesh_schemas.documents import ModelManifest
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, TrainingSettings

# How PEFT prefixes every key of a saved adapter (the PeftModel's `base_model.model`).
_PEFT_PREFIX = "base_model.model."
# PEFT initialisations that change the base weights: such an adapter cannot share its base.
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "eva", "orthogonal")

Hyperparameters = Mapping[str, float | int | str | bool]
ModelSource = Callable[[], tuple[ModelManifest | None, Mapping[str, bytes]]]
"""Where an evicted model is read from again: its manifest (if any) and its files."""


class AdapterUnloadedError(RuntimeError):
    """A model was unloaded: evicted (and reloading is off) or retired with `unload`."""

    def __init__(self, message: str, models: Sequence[DomainModel]) -> None:
        super().__init__(message)
        self.models = tuple(models)


@dataclass(frozen=True)
class AdapterInfo:
    """One adapter resident on a base: the adapter's PEFT name and the model it belongs to."""

    adapter_name: str
    key: str
    model_version: str
    labels: tuple[str, ...]
    parameter_bytes: int
    """LoRA weights and head together."""


@dataclass(frozen=True)
class BaseInfo:
    """One base model in memory, as `SharedBaseModels.bases` reports it."""

    base_key: BaseModelSpec
    model_type: str
    model_id: int
    """`id()` of the one transformers model every adapter on this base runs in."""
    backbone_id: int
    """`id()` of its backbone (`bert`, `model`, ...), the module the adapters share."""
    backbone_class: str
    parameter_tensors: int
    """The base's own parameter tensors (LoRA weights and heads excluded)."""
    parameter_bytes: int
    adapters: tuple[AdapterInfo, ...]


class DomainModel:
    """A handle on one model (a domain's adapter and head) living on a shared base.

    Satisfies serving's `Predictor` (as `Classifier` does). The handle stays valid when its
    adapter is evicted: `loaded` turns False and the next prediction loads it again, unless
    the owner was built with `reload_evicted=False`, in which case predictions raise
    `AdapterUnloadedError` until the caller loads the model again. After `unload` (retired)
    predictions always raise it.
    """

    def __init__(
        self,
        owner: SharedBaseModels,
        *,
        key: str,
        model_version: str,
        labels: tuple[str, ...],
        base_key: BaseModelSpec,
        max_length: int,
        manifest: ModelManifest | None,
        source: ModelSource,
    ) -> None:
        self.key = key
        self.model_version = model_version
        self.labels = labels
        self.base_key = base_key
        self.max_length = max_length
        self._manifest = manifest
        self._owner = owner
        self._source = source
        # Guarded by the owner's lock:
        self._base: _Base | None = None
        self._adapter_name = ""
        self._state = _State.LOADING
        self.reloads = 0
        """How many times this model was loaded again after being evicted."""
        self._reload_lock = threading.Lock()

    @property
    def owner(self) -> SharedBaseModels:
        return self._owner

    @property
    def loaded(self) -> bool:
        """Whether the adapter is in memory now (False once evicted or retired)."""
        return self._state in (_State.RESIDENT, _State.RETIRING)

    @property
    def retired(self) -> bool:
        """Whether `unload` was called on this model: no call that starts later uses it."""
        return self._state in (_State.RETIRED, _State.RETIRING)

    @property
    def adapter_name(self) -> str:
        """The PEFT adapter name it has now (a reload gives it a new one)."""
        return self._adapter_name

    @property
    def manifest(self) -> ModelManifest:
        """The manifest this model was loaded from (not for in-process models)."""
        if self._manifest is None:
            raise LookupError(
                f"model {self.model_version} was built in-process (from files): no manifest"
            )
        return self._manifest

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[Prediction]:
        """Predictions for `texts`, in order (as `Classifier.predict`)."""
        return self._owner.predict_mixed([(self, text) for text in texts], batch_size)

    def __repr__(self) -> str:
        return (
            f"DomainModel(key={self.key!r}, model_version={self.model_version!r}, "
            f"adapter={self._adapter_name!r}, state={self._state.value})"
        )


class _State(enum.Enum):
    """Life of a `DomainModel`."""

    LOADING = "loading"
    RESIDENT = "resident"
    RETIRING = "retiring"
    """`unload` was called while calls were using it: deleted when the last one ends."""
    EVICTED = "evicted"
    RETIRED = "retired"


class SharedBaseModels:
    """Base models loaded once each, with up to `capacity` domain adapters on them. Thread-safe.

    `capacity` counts resident adapters across all bases, a superseded version that was not
    unloaded included; past it, the least recently used adapter (loaded or predicted with) is
    evicted. Adapters that a running `predict_mixed` uses are never evicted: while calls
    together use more models than `capacity`, more stay resident, down to the cap afterwards.
    """

    def __init__(
        self, capacity: int, *, reload_evicted: bool = True, threads_per_call: int | None = None
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if threads_per_call is not None and threads_per_call < 1:
            raise ValueError("threads_per_call must be at least 1")
        self._capacity = capacity
        self._threads_per_call = threads_per_call
        self._reload_evicted = reload_evicted
        self._lock = threading.Lock()
        self._bases: dict[BaseModelSpec, _Base] = {}
        self._resident: OrderedDict[DomainModel, None] = OrderedDict()  # LRU first
        self._current: dict[str, DomainModel] = {}
        self._pins: dict[DomainModel, int] = {}  # models a call is using: never evicted
        self._names = itertools.count(1)

    @property
    def capacity(self) -> int:
        return self._capacity

    # -- loading ---------------------------------------------------------------------------

    def load(
        self, key: str, store: ArtifactStore, ref: ArtifactRef, *, activate: bool = True
    ) -> DomainModel:
        """Load the model whose manifest `ref` names, verifying every file's digest.

        The model becomes `key`'s current one when `activate` (the previous one stays loaded
        and answering until it is unloaded). An evicted model is read from the store again.
        """
        manifest, files = load_model_files(store, ref)

        def source() -> tuple[ModelManifest | None, Mapping[str, bytes]]:
            return load_model_files(store, ref)

        return self._load_new(
            key,
            manifest.lineage.base_model,
            files,
            model_version=manifest.model_version,
            hyperparameters=manifest.lineage.hyperparameters,
            manifest=manifest,
            source=source,
            activate=activate,
        )

    def load_files(
        self,
        key: str,
        base_model: BaseModelSpec,
        files: Mapping[str, bytes],
        *,
        model_version: str,
        hyperparameters: Hyperparameters | None = None,
        manifest: ModelManifest | None = None,
        activate: bool = True,
    ) -> DomainModel:
        """Load a model from its files (already verified by the caller).

        `files` is kept, by reference, to load the model again after an eviction.
        """
        kept = dict(files)

        def source() -> tuple[ModelManifest | None, Mapping[str, bytes]]:
            return manifest, kept

        return self._load_new(
            key,
            base_model,
            kept,
            model_version=model_version,
            hyperparameters=hyperparameters or {},
            manifest=manifest,
            source=source,
            activate=activate,
        )

    def load_trained(
        self,
        key: str,
        trained: TrainedModel,
        base_model: BaseModelSpec,
        model_version: str,
        *,
        activate: bool = True,
    ) -> DomainModel:
        """A model straight from `train_classifier`'s result (as `Classifier.from_trained`)."""
        return self.load_files(
            key,
            base_model,
            trained.files,
            model_version=model_version,
            hyperparameters=trained.hyperparameters,
            activate=activate,
        )

    def activate(self, model: DomainModel) -> DomainModel | None:
        """Make `model` its key's current model, atomically; returns the one it replaced
        (still loaded: unload it when its last caller is done), or None."""
        self._check_owned(model)
        with self._lock:
            if model._state is _State.RETIRED:
                raise AdapterUnloadedError(f"{model!r} was unloaded", [model])
            previous = self._current.get(model.key)
            self._current[model.key] = model
        return previous if previous is not model else None

    def current(self, key: str) -> DomainModel | None:
        """`key`'s current model (resident or evicted), or None."""
        with self._lock:
            return self._current.get(key)

    def unload(self, model: DomainModel) -> None:
        """Retire `model`: its adapter and head are deleted and it never answers again.

        Calls already using it finish (the rows of a mixed batch do not fail because one of
        their models was retired meanwhile): its adapter goes when the last of them ends, and
        calls that start later raise `AdapterUnloadedError` for it. If it is its key's
        current model, the key has none afterwards.
        """
        self._check_owned(model)
        with self._lock:
            if model._state in (_State.RETIRED, _State.RETIRING):
                return
            if self._current.get(model.key) is model:
                del self._current[model.key]
            if model in self._pins and model._state is _State.RESIDENT:
                model._state = _State.RETIRING
                return
            removal = self._detach(model, _State.RETIRED)
        self._remove(removal)

    def resident(self) -> tuple[DomainModel, ...]:
        """The models in memory, least recently used first."""
        with self._lock:
            return tuple(self._resident)

    # -- predicting ------------------------------------------------------------------------

    def predict_mixed(
        self, rows: Sequence[tuple[DomainModel, str]], batch_size: int = 64
    ) -> list[Prediction]:
        """Predictions for (model, text) rows, in order.

        Rows of models on one base are answered together: sorted by token length and cut into
        forward passes of at most `batch_size` rows with little padding (`forward_chunks`),
        each one forward pass of the base whatever the mix of models in it. Evicted models are
        loaded again first (or `AdapterUnloadedError` is raised, see `reload_evicted`);
        unloaded (retired) ones raise it. Blocks (CPU-bound). Calls from several threads run
        their forward passes at the same time, on one base as on several (each thread's rows
        carry their adapters: `_ROW_ADAPTERS`); loading and unloading wait for the passes
        running on their base. With `threads_per_call`, each call runs its passes on that many
        torch threads (set for the calling thread): two calls of one thread each use two cores
        better than one call of two threads when other work shares the cores.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not rows:
            return []
        models = list(dict.fromkeys(model for model, _ in rows))
        for model in models:
            self._check_owned(model)
        placed = self._pin(models)
        try:
            if self._threads_per_call is not None and (
                torch.get_num_threads() != self._threads_per_call
            ):
                torch.set_num_threads(self._threads_per_call)  # this thread's torch threads
            groups: dict[int, tuple[_Base, list[_Row]]] = {}
            for index, (model, text) in enumerate(rows):
                base, adapter_name = placed[model]
                groups.setdefault(id(base), (base, []))[1].append(
                    _Row(index, model, adapter_name, text)
                )
            results: list[Prediction | None] = [None] * len(rows)
            for base, group in groups.values():
                answered = base.predict(group, batch_size)
                if answered is None:  # pinned models leave only through `unload`
                    gone = [row.model for row in group if not row.model.loaded]
                    raise AdapterUnloadedError(
                        "unloaded while predicting: " + ", ".join(map(repr, gone)), gone
                    )
                for row, prediction in zip(group, answered, strict=True):
                    results[row.index] = prediction
        finally:
            self._unpin(models)
        return [prediction for prediction in results if prediction is not None]

    # -- introspection ---------------------------------------------------------------------

    def bases(self) -> tuple[BaseInfo, ...]:
        """Every base model in memory, with the adapters on it."""
        with self._lock:
            bases = list(self._bases.values())
        return tuple(info for base in bases if (info := base.info()) is not None)

    def backbone(self, base_key: BaseModelSpec) -> torch.nn.Module:
        """The backbone module shared by every adapter on `base_key` (for hooks in tests)."""
        with self._lock:
            base = self._bases.get(base_key)
        module = None if base is None else base.backbone()
        if module is None:
            raise LookupError(f"base model {base_key.model_id!r} is not loaded")
        return module

    # -- internals -------------------------------------------------------------------------

    def _check_owned(self, model: DomainModel) -> None:
        if model._owner is not self:
            raise ValueError(f"{model!r} belongs to another SharedBaseModels")

    def _load_new(
        self,
        key: str,
        base_model: BaseModelSpec,
        files: Mapping[str, bytes],
        *,
        model_version: str,
        hyperparameters: Hyperparameters,
        manifest: ModelManifest | None,
        source: ModelSource,
        activate: bool,
    ) -> DomainModel:
        configure_torch_threads()
        parsed = _parse_model_files(files, manifest)
        max_length = hyperparameters.get("max_length", TrainingSettings().max_length)
        model = DomainModel(
            self,
            key=key,
            model_version=model_version,
            labels=parsed.labels,
            base_key=base_model,
            max_length=int(max_length),
            manifest=manifest,
            source=source,
        )
        self._attach(model, parsed)
        if activate:
            self.activate(model)
        return model

    def _attach(self, model: DomainModel, parsed: _ParsedModel) -> None:
        """Put `model`'s adapter and head on its base (loading the base if needed)."""
        with self._lock:
            base = self._bases.get(model.base_key)
            if base is None:
                base = self._bases[model.base_key] = _Base(model.base_key)
            adapter_name = f"domain{next(self._names)}"
            base.members[adapter_name] = model  # holds the base while it loads
        try:
            base.add(adapter_name, parsed)
        except BaseException:
            with self._lock:
                del base.members[adapter_name]
                free = not base.members and self._bases.get(model.base_key) is base
                if free:
                    del self._bases[model.base_key]
            if free:
                base.free()
            raise
        with self._lock:
            unloaded_meanwhile = model._state is _State.RETIRED
            model._base = base
            model._adapter_name = adapter_name
            model._state = _State.RESIDENT
            self._resident[model] = None
            removals = [self._detach(model, _State.RETIRED)] if unloaded_meanwhile else []
            removals.extend(self._over_capacity())
        for removal in removals:
            self._remove(removal)

    def _detach(self, model: DomainModel, state: _State) -> _Removal | None:
        """Book `model` as no longer resident (caller holds the lock); what to delete."""
        was_resident = model._state in (_State.RESIDENT, _State.RETIRING)
        model._state = state
        if not was_resident or model._base is None:
            return None
        self._resident.pop(model, None)
        base = model._base
        base.members.pop(model._adapter_name, None)
        free = not base.members and self._bases.get(model.base_key) is base
        if free:
            del self._bases[model.base_key]
        return _Removal(base, model._adapter_name, free)

    @staticmethod
    def _remove(removal: _Removal | None) -> None:
        if removal is None:
            return
        if removal.free_base:
            removal.base.free()
        else:
            removal.base.remove(removal.adapter_name)

    def _pin(self, models: Sequence[DomainModel]) -> dict[DomainModel, tuple[_Base, str]]:
        """Where each model's adapter is, reloading evicted ones; until `_unpin` none of them
        is evicted (the cap is exceeded for a while rather than a call failing)."""
        with self._lock:
            for model in models:
                if model._state in (_State.RETIRED, _State.RETIRING):
                    raise AdapterUnloadedError(f"{model!r} was unloaded", [model])
            for model in models:
                self._pins[model] = self._pins.get(model, 0) + 1
                if model in self._resident:
                    self._resident.move_to_end(model)
            evicted = [model for model in models if model._state is not _State.RESIDENT]
        try:
            return self._place(models, evicted)
        except BaseException:
            self._unpin(models)
            raise

    def _place(
        self, models: Sequence[DomainModel], evicted: Sequence[DomainModel]
    ) -> dict[DomainModel, tuple[_Base, str]]:
        if evicted and not self._reload_evicted:
            raise AdapterUnloadedError("evicted models: " + ", ".join(map(repr, evicted)), evicted)
        for model in evicted:
            self._reload(model)
        with self._lock:
            placed = {}
            for model in models:
                # RETIRING: unloaded since it was pinned; this call may still use it.
                if model._state not in (_State.RESIDENT, _State.RETIRING) or model._base is None:
                    raise AdapterUnloadedError(f"{model!r} was unloaded", [model])
                placed[model] = (model._base, model._adapter_name)
            return placed

    def _unpin(self, models: Sequence[DomainModel]) -> None:
        with self._lock:
            removals: list[_Removal | None] = []
            for model in models:
                left = self._pins.pop(model) - 1
                if left:
                    self._pins[model] = left
                elif model._state is _State.RETIRING:
                    removals.append(self._detach(model, _State.RETIRED))
            removals.extend(self._over_capacity())
        for removal in removals:
            self._remove(removal)

    def _over_capacity(self) -> list[_Removal | None]:
        """Evict least recently used, unpinned models down to the cap (caller holds the lock)."""
        excess = len(self._resident) - self._capacity
        if excess <= 0:
            return []
        victims = [model for model in self._resident if model not in self._pins][:excess]
        return [self._detach(victim, _State.EVICTED) for victim in victims]

    def _reload(self, model: DomainModel) -> None:
        with model._reload_lock:
            if model._state is not _State.EVICTED:
                return
            manifest, files = model._source()
            parsed = _parse_model_files(files, manifest)
            if parsed.labels != model.labels:
                raise ModelFilesError(
                    f"{model!r} reloaded with labels {parsed.labels}, not {model.labels}"
                )
            self._attach(model, parsed)
            model.reloads += 1


MAX_PADDING = 0.25
"""A forward pass pads its rows to the longest: at most this share of its tokens is padding."""
MAX_ROWS_PER_FORWARD = 16
"""Rows in one forward pass, at most (fewer when the caller's `batch_size` is smaller)."""


def forward_chunks(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """The positions of rows of token counts `lengths`, cut into forward passes.

    Rows are sorted by length and a pass is closed before padding would pass `MAX_PADDING` of
    its tokens or it reaches `MAX_ROWS_PER_FORWARD` rows: on CPU a pass costs about its padded
    tokens, so a batch of mixed lengths padded to its longest text costs more per text than
    the texts one at a time. Measured on MiniLM, 2 threads, R8 stories (80 tokens on average,
    cut at 128), per text: one at a time 12.2 ms; batches of 16 padded to their longest 16.5;
    cut this way 8.0-9.5 (sorted passes of at most 16 rows beat passes of 64, whose attention
    and activations outgrow the caches).
    """
    order = sorted(range(len(lengths)), key=lambda position: lengths[position])
    most_rows = max(1, min(batch_size, MAX_ROWS_PER_FORWARD))
    chunks: list[list[int]] = []
    chunk: list[int] = []
    tokens = 0
    for position in order:
        length = lengths[position]  # the longest so far: rows are in ascending order
        padded = (len(chunk) + 1) * length
        if chunk and (len(chunk) >= most_rows or padded > (1 + MAX_PADDING) * (tokens + length)):
            chunks.append(chunk)
            chunk, tokens = [], 0
        chunk.append(position)
        tokens += length
    if chunk:
        chunks.append(chunk)
    return chunks


@dataclass(frozen=True)
class _Row:
    index: int
    model: DomainModel
    adapter_name: str
    text: str


@dataclass(frozen=True)
class _Removal:
    base: _Base
    adapter_name: str
    free_base: bool


@dataclass
class _ParsedModel:
    """A model's files, read and checked, before anything is put on a base."""

    labels: tuple[str, ...]
    config: LoraConfig
    head_name: str
    head_state: dict[str, torch.Tensor]
    lora_state: dict[str, torch.Tensor]
    parameter_bytes: int


def _parse_model_files(files: Mapping[str, bytes], manifest: ModelManifest | None) -> _ParsedModel:
    """Labels, LoRA config, LoRA weights and head weights of a model directory's files."""
    missing = [name for name in MODEL_FILES if name not in files]
    if missing:
        raise ModelFilesError(f"model files lack {', '.join(missing)}")
    labels = labels_from_document(files[LABELS_FILE])
    if manifest is not None and tuple(manifest.labels) != labels:
        raise ValueError(
            f"manifest labels {manifest.labels} differ from the model's label map {labels}"
        )
    try:
        document = json.loads(files[ADAPTER_CONFIG_FILE])
        config = cast(Any, PeftConfig).from_peft_type(**document)
    except (ValueError, TypeError, KeyError) as error:
        raise ModelFilesError(f"{ADAPTER_CONFIG_FILE} is not a PEFT config: {error!r}") from None
    if not isinstance(config, LoraConfig):
        raise ModelFilesError(f"only LoRA adapters can share a base, not {config.peft_type}")
    init = config.init_lora_weights
    if isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS):
        raise ModelFilesError(f"a {init} adapter changes its base weights and cannot share it")
    extra = set(config.modules_to_save or ()) - set(HEAD_MODULE_NAMES)
    if extra:
        raise ModelFilesError(
            f"modules_to_save {sorted(extra)} besides the head cannot be shared between domains"
        )
    # The head is kept outside PEFT (see the module docstring); the rest is a plain adapter.
    config.modules_to_save = None
    config.task_type = None
    config.inference_mode = True
    try:
        state = load_safetensors(files[ADAPTER_WEIGHTS_FILE])
    except SafetensorError as error:
        raise ModelFilesError(f"{ADAPTER_WEIGHTS_FILE} is unreadable: {error!r}") from None
    head_state: dict[str, torch.Tensor] = {}
    lora_state: dict[str, torch.Tensor] = {}
    head_names = set()
    for name, tensor in state.items():
        inner = name.removeprefix(_PEFT_PREFIX)
        top, _, rest = inner.partition(".")
        if top in HEAD_MODULE_NAMES:
            head_names.add(top)
            head_state[rest] = tensor
        else:
            lora_state[name] = tensor
    if len(head_names) != 1:
        raise ModelFilesError(
            f"{ADAPTER_WEIGHTS_FILE} must hold one head ({' or '.join(HEAD_MODULE_NAMES)}), "
            f"found {sorted(head_names) or 'none'}"
        )
    return _ParsedModel(
        labels=labels,
        config=config,
        head_name=head_names.pop(),
        head_state=head_state,
        lora_state=lora_state,
        parameter_bytes=sum(t.numel() * t.element_size() for t in state.values()),
    )


class _HeadInput(torch.nn.Module):
    """Stands in for a shared base's head: returns the head's input unchanged."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@dataclass
class _Adapter:
    head: torch.nn.Module
    parameter_bytes: int


_ROW_ADAPTERS = threading.local()
"""`names`: the adapter of each row of the forward pass this thread is running (else None).

PEFT's own way of passing `adapter_names` to its LoRA layers registers hooks on the shared
modules for the length of one call, so two threads' calls would see each other's names. Each
base's LoRA layers get one permanent hook instead (`_inject_row_adapters`), which reads the
names of the calling thread."""


def _inject_row_adapters(
    _module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    names = getattr(_ROW_ADAPTERS, "names", None)
    if names is None:
        return None
    return args, {**kwargs, "adapter_names": names}


class _SharedOrExclusive:
    """A lock that forward passes hold together and a change of adapters holds alone.

    A waiting change goes before passes that arrive after it, so a steady stream of requests
    cannot starve a swap."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._sharing = 0
        self._exclusive = False
        self._waiting_exclusive = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._changed:
            while self._exclusive or self._waiting_exclusive:
                self._changed.wait()
            self._sharing += 1
        try:
            yield
        finally:
            with self._changed:
                self._sharing -= 1
                if not self._sharing:
                    self._changed.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._changed:
            self._waiting_exclusive += 1
            while self._exclusive or self._sharing:
                self._changed.wait()
            self._waiting_exclusive -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._changed:
                self._exclusive = False
                self._changed.notify_all()


@dataclass(eq=False)
class _Base:
    """One base model with its adapters. `members` is guarded by the owner's lock; the model
    and heads by `access` (forward passes share it, a change of adapters holds it alone); the
    tokenizer, whose settings change with each call, by `tokenizing`."""

    spec: BaseModelSpec
    members: dict[str, DomainModel] = field(default_factory=dict)
    access: _SharedOrExclusive = field(default_factory=_SharedOrExclusive)
    tokenizing: threading.Lock = field(default_factory=threading.Lock)
    hooked: set[int] = field(default_factory=set)
    tokenizer: PreTrainedTokenizerBase | None = None
    transformer: PreTrainedModel | None = None
    peft: Any = None
    head_name: str = ""
    head_template: torch.nn.Module | None = None
    adapters: dict[str, _Adapter] = field(default_factory=dict)
    sketch: EmbeddingSketcher = field(default_factory=EmbeddingSketcher)
    freed: bool = False

    def add(self, adapter_name: str, parsed: _ParsedModel) -> None:
        with self.access.exclusive():
            if self.freed:  # cannot happen: a base with members is never freed
                raise RuntimeError(f"base {self.spec.model_id!r} was freed")
            if self.transformer is None:
                self._load()
            transformer = cast(PreTrainedModel, self.transformer)
            if parsed.head_name != self.head_name:
                raise ModelFilesError(
                    f"the adapter's head is {parsed.head_name!r}, the base's {self.head_name!r}"
                )
            head = self._head(parsed.head_state, len(parsed.labels))
            if self.peft is None:
                self.peft = PeftModel(transformer, parsed.config, adapter_name=adapter_name)
            else:
                self.peft.add_adapter(adapter_name, parsed.config)
            try:
                self._set_lora_weights(adapter_name, parsed.lora_state)
            except BaseException:
                if len(self.peft.peft_config) > 1:
                    self.peft.delete_adapter(adapter_name)
                else:  # its only adapter: start again from a fresh model next time
                    self._drop()
                raise
            self.peft.eval()
            self._hook_lora_layers()
            self.adapters[adapter_name] = _Adapter(head, parsed.parameter_bytes)

    def _hook_lora_layers(self) -> None:
        """Give every LoRA layer (new ones appear when an adapter targets other modules) the
        hook that passes it the calling thread's row adapters."""
        for module in cast(torch.nn.Module, self.peft).modules():
            if isinstance(module, LoraLayer) and id(module) not in self.hooked:
                module.register_forward_pre_hook(_inject_row_adapters, with_kwargs=True)
                self.hooked.add(id(module))

    def _set_lora_weights(self, adapter_name: str, state: Mapping[str, torch.Tensor]) -> None:
        result: Any = set_peft_model_state_dict(self.peft, dict(state), adapter_name=adapter_name)
        missing = [key for key in result.missing_keys if f".{adapter_name}." in key]
        if missing or result.unexpected_keys:
            raise ModelFilesError(
                f"{ADAPTER_WEIGHTS_FILE} does not fit the base: missing {missing[:3]}, "
                f"unexpected {list(result.unexpected_keys)[:3]}"
            )

    def remove(self, adapter_name: str) -> None:
        with self.access.exclusive():
            if self.adapters.pop(adapter_name, None) is None or self.peft is None:
                return
            # Rows name their adapters, so which one is "active" never matters here; moving it
            # first spares the warning PEFT gives when the active adapter is deleted.
            others = [name for name in self.peft.peft_config if name != adapter_name]
            if others and adapter_name in self.peft.active_adapters:
                self.peft.set_adapter(others[0], inference_mode=True)
            self.peft.delete_adapter(adapter_name)

    def free(self) -> None:
        with self.access.exclusive():
            self.freed = True
            self._drop()

    def predict(self, rows: Sequence[_Row], batch_size: int) -> list[Prediction] | None:
        """Predictions for `rows`, in order; None if one of their adapters is gone."""
        with self.access.shared(), torch.inference_mode():
            if any(row.adapter_name not in self.adapters for row in rows):
                return None
            tokenizer = cast(Any, self.tokenizer)
            encodings: list[dict[str, list[int]]] = [{} for _ in rows]
            by_model: dict[DomainModel, list[int]] = {}
            for position, row in enumerate(rows):
                by_model.setdefault(row.model, []).append(position)
            for model, positions in by_model.items():
                with self.tokenizing:
                    encoded = tokenizer(
                        [rows[p].text for p in positions],
                        truncation=True,
                        max_length=model.max_length,
                    )
                for offset, position in enumerate(positions):
                    encodings[position] = {name: encoded[name][offset] for name in encoded}
            lengths = [len(encoding["input_ids"]) for encoding in encodings]
            results: list[Prediction | None] = [None] * len(rows)
            for chunk in forward_chunks(lengths, batch_size):
                for position, prediction in zip(
                    chunk,
                    self._predict_batch([rows[p] for p in chunk], [encodings[p] for p in chunk]),
                    strict=True,
                ):
                    results[position] = prediction
        return [prediction for prediction in results if prediction is not None]

    def _predict_batch(
        self, rows: Sequence[_Row], encodings: list[dict[str, list[int]]]
    ) -> list[Prediction]:
        tokenizer = cast(Any, self.tokenizer)
        with self.tokenizing:
            batch = tokenizer.pad(encodings, padding="longest", return_tensors="pt")
        _ROW_ADAPTERS.names = [row.adapter_name for row in rows]
        try:
            outputs = self.peft(**batch, output_hidden_states=True)
        finally:
            _ROW_ADAPTERS.names = None
        features = outputs.logits  # what each row's head takes (see _HeadInput)
        sketches = self.sketch(outputs.hidden_states[-1], batch["attention_mask"]).tolist()
        probabilities: list[list[float]] = [[] for _ in rows]
        by_adapter: dict[str, list[int]] = {}
        for position, row in enumerate(rows):
            by_adapter.setdefault(row.adapter_name, []).append(position)
        for adapter_name, positions in by_adapter.items():
            head = self.adapters[adapter_name].head
            logits = head(features[positions])
            for position, values in zip(
                positions, torch.softmax(logits.float(), dim=-1).tolist(), strict=True
            ):
                probabilities[position] = values
        return [
            prediction_of(row.model.labels, values, sketch)
            for row, values, sketch in zip(rows, probabilities, sketches, strict=True)
        ]

    def _load(self) -> None:
        loaded = load_base(self.spec)
        transformer = loaded.pristine
        head_name, head = classifier_head(transformer)
        setattr(transformer, head_name, _HeadInput())
        self.tokenizer = loaded.tokenizer
        self.transformer = transformer
        self.head_name = head_name
        self.head_template = head

    def _head(self, state: Mapping[str, torch.Tensor], num_labels: int) -> torch.nn.Module:
        """A copy of the base's head shaped like `state` (its label count) holding `state`."""
        template = cast(torch.nn.Module, self.head_template)
        own = dict(template.named_parameters())
        if set(state) != set(own):
            raise ModelFilesError(
                f"the head's weights {sorted(state)} are not the base head's {sorted(own)}"
            )
        head = _reshaped_copy(template, state)
        try:
            head.load_state_dict(dict(state), strict=True)
        except RuntimeError as error:
            raise ModelFilesError(f"the head does not fit the base: {error}") from None
        out = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1].out_features
        if out != num_labels:
            raise ModelFilesError(f"the head has {out} outputs for {num_labels} labels")
        head.requires_grad_(requires_grad=False)
        head.eval()
        return head

    def _drop(self) -> None:
        self.peft = None
        self.transformer = None
        self.tokenizer = None
        self.head_template = None
        self.adapters.clear()
        self.hooked.clear()

    def backbone(self) -> torch.nn.Module | None:
        with self.access.exclusive():
            return None if self.transformer is None else _backbone_of(self.transformer)

    def info(self) -> BaseInfo | None:
        with self.access.exclusive():
            if self.transformer is None:
                return None
            transformer = self.transformer
            backbone = _backbone_of(transformer)
            own = [
                parameter
                for name, parameter in transformer.named_parameters()
                if ".lora_" not in name
            ]
            adapters = tuple(
                AdapterInfo(
                    adapter_name=name,
                    key=self.members[name].key,
                    model_version=self.members[name].model_version,
                    labels=self.members[name].labels,
                    parameter_bytes=adapter.parameter_bytes,
                )
                for name, adapter in self.adapters.items()
                if name in self.members
            )
            return BaseInfo(
                base_key=self.spec,
                model_type=str(transformer.config.model_type),
                model_id=id(transformer),
                backbone_id=id(backbone),
                backbone_class=type(backbone).__name__,
                parameter_tensors=len(own),
                parameter_bytes=sum(p.numel() * p.element_size() for p in own),
                adapters=adapters,
            )


def _backbone_of(transformer: PreTrainedModel) -> torch.nn.Module:
    """The transformer under the head (`bert` for BERT, `model` for Llama)."""
    return cast(torch.nn.Module, getattr(transformer, transformer.base_model_prefix))


def _reshaped_copy(template: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """A fresh module like `template` whose linear layers have the shapes of `state`.

    Only the label count differs between heads, which only changes the last linear layer's
    rows; every linear layer is rebuilt from `state`'s shapes all the same.
    """
    head = copy.deepcopy(template)
    for module_name, module in list(head.named_modules()):
        if not isinstance(module, torch.nn.Linear):
            continue
        prefix = f"{module_name}." if module_name else ""
        weight = state[f"{prefix}weight"]
        if tuple(weight.shape) == tuple(module.weight.shape):
            continue
        new = torch.nn.Linear(
            weight.shape[1],
            weight.shape[0],
            bias=module.bias is not None,
            dtype=module.weight.dtype,
        )
        if not module_name:  # the head is one linear layer
            return new
        parent_name, _, child = module_name.rpartition(".")
        setattr(head.get_submodule(parent_name) if parent_name else head, child, new)
    return head
