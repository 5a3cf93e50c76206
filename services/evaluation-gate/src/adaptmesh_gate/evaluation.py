"""Evaluating a model from the artifact store on a dataset's eval split and must-pass cases.

The gate takes the evaluator as a parameter: the real one (`classifiers.ClassifierEvaluator`)
loads classifiers with `adaptmesh_ml`; component tests hand in a function that returns
prepared evaluations. This module stays free of the model stack, which takes seconds to import.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from adaptmesh_schemas.documents import (
    DatasetExample,
    DatasetSnapshot,
    ModelEvaluation,
    MustPassRecord,
)
from adaptmesh_schemas.values import ArtifactRef

ModelT = TypeVar("ModelT")


class Evaluator(Protocol):
    """Evaluates the model behind `model` (a manifest ref) on examples and cases.

    Blocking and CPU-bound: the gate calls it in a worker thread. Raises
    `adaptmesh_kit.ArtifactIntegrityError` when the model's files fail verification.
    """

    def __call__(
        self,
        domain: str,
        model: ArtifactRef,
        examples: Sequence[DatasetExample],
        must_pass: Sequence[MustPassRecord],
        /,
    ) -> ModelEvaluation: ...


def eval_split(snapshot: DatasetSnapshot) -> tuple[DatasetExample, ...]:
    """The examples a snapshot holds out for judging models."""
    return tuple(example for example in snapshot.examples if example.split == "eval")


class LoadedModels(Generic[ModelT]):
    """The last `per_domain` models used in each domain, loaded once, keyed by manifest digest.

    Two per domain keep the champion loaded across rounds as long as each round uses the
    champion before the candidate: when the next candidate loads, the least recently used
    model is then the previous round's loser (or the replaced champion), never the champion.
    """

    def __init__(self, load: Callable[[ArtifactRef], ModelT], per_domain: int = 2) -> None:
        self._load = load
        self._per_domain = per_domain
        self._loaded: dict[str, OrderedDict[str, ModelT]] = {}
        self._lock = threading.Lock()

    def get(self, domain: str, model: ArtifactRef) -> ModelT:
        """The loaded model behind `model`, loading it on a miss."""
        with self._lock:
            loaded = self._loaded.setdefault(domain, OrderedDict())
            # The manifest digest pins every file the manifest lists: it is the model's identity.
            if model.sha256 not in loaded:
                loaded[model.sha256] = self._load(model)
                while len(loaded) > self._per_domain:
                    loaded.popitem(last=False)
            loaded.move_to_end(model.sha256)
            return loaded[model.sha256]
