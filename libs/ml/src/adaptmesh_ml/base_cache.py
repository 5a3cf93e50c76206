"""Base models kept in memory between runs, and the fresh classifier each run starts from.

Loading a base model costs seconds (imports aside) and converting a GGUF one tens of seconds;
a long-lived training worker loads each base once and gives every run a deep copy with a
new head. The copy, not the cached model, is trained and wrapped by PEFT, so runs never see
each other's weights.

The head is always built here, under the run's seed, whether or not the base came from the
cache: a run's initial weights then depend only on the base and the seed, which is what makes
a model rebuildable bit for bit in another process.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from adaptmesh_ml.base_models import resolve_base_model
from adaptmesh_ml.model_files import load_base_classifier, load_tokenizer, quiet_about_the_head
from adaptmesh_schemas.values import BaseModelSpec

# Where sequence-classification models of transformers keep their head (the names PEFT's
# SEQ_CLS task saves as `modules_to_save`).
HEAD_MODULE_NAMES = ("classifier", "score")
_PLACEHOLDER_LABELS = ("label-0", "label-1")
DEFAULT_CAPACITY = 2


@dataclass(frozen=True)
class LoadedBase:
    """One base model in memory: its tokenizer and the untouched classifier it was loaded as."""

    spec: BaseModelSpec
    directory: Path
    tokenizer: PreTrainedTokenizerBase
    pristine: PreTrainedModel

    def fresh_classifier(self, labels: Sequence[str], seed: int) -> PreTrainedModel:
        """A copy of the base with a new head over `labels`, initialised from `seed` alone."""
        model = copy.deepcopy(self.pristine)
        head_name, head = classifier_head(model)
        old = head if isinstance(head, torch.nn.Linear) else _last_linear(head)
        generator = torch.Generator().manual_seed(seed)
        new = torch.nn.Linear(old.in_features, len(labels), bias=old.bias is not None)
        # The initialisation transformers gives a fresh head: N(0, initializer_range), bias 0.
        std = float(getattr(model.config, "initializer_range", 0.02))
        with torch.no_grad():
            new.weight.copy_(torch.randn(new.weight.shape, generator=generator) * std)
            if new.bias is not None:
                new.bias.zero_()
        if head is old:
            setattr(model, head_name, new)
        else:
            _replace_last_linear(head, new)
        model.config.num_labels = len(labels)
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {label: index for index, label in enumerate(labels)}
        setattr(model, "num_labels", len(labels))  # noqa: B010  (typed as a Module attribute)
        return model


def classifier_head(model: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    """The name and module of a sequence classifier's head."""
    for name in HEAD_MODULE_NAMES:
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return name, head
    raise ValueError(
        f"{type(model).__name__} has no classification head named one of {HEAD_MODULE_NAMES}"
    )


def load_base(spec: BaseModelSpec) -> LoadedBase:
    """Read a base model and its tokenizer from disk (no cache)."""
    directory = resolve_base_model(spec)
    tokenizer = load_tokenizer(spec, directory)
    with quiet_about_the_head():
        pristine = load_base_classifier(
            spec, directory, _PLACEHOLDER_LABELS, tokenizer.pad_token_id
        )
    pristine.train(mode=False)
    return LoadedBase(spec=spec, directory=directory, tokenizer=tokenizer, pristine=pristine)


class BaseModelCache:
    """The last `capacity` base models used, least recently used evicted first. Thread-safe."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._loaded: OrderedDict[BaseModelSpec, LoadedBase] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: BaseModelSpec) -> LoadedBase:
        with self._lock:
            found = self._loaded.get(spec)
            if found is not None:
                self._loaded.move_to_end(spec)
                return found
            loaded = load_base(spec)
            self._loaded[spec] = loaded
            while len(self._loaded) > self._capacity:
                self._loaded.popitem(last=False)
            return loaded

    def __contains__(self, spec: BaseModelSpec) -> bool:
        return spec in self._loaded


def _last_linear(module: torch.nn.Module) -> torch.nn.Linear:
    linears = [child for child in module.modules() if isinstance(child, torch.nn.Linear)]
    if not linears:
        raise ValueError(f"head {type(module).__name__} has no linear layer")
    return linears[-1]


def _replace_last_linear(head: torch.nn.Module, new: torch.nn.Linear) -> None:
    target = _last_linear(head)
    for parent in head.modules():
        for name, child in parent.named_children():
            if child is target:
                setattr(parent, name, new)
                return
