"""Evaluating a model from the artifact store on a dataset's eval split and must-pass cases.

The gate takes the evaluator as a parameter: the real one (`classifiers.ClassifierEvaluator`)
loads classifiers with `adaptmesh_ml`; component tests hand in a function that returns
prepared evaluations. This module stays free of the model stack, which takes seconds to import.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from adaptmesh_schemas.documents import (
    DatasetExample,
    DatasetSnapshot,
    ModelEvaluation,
    MustPassRecord,
    ReferenceProfile,
)
from adaptmesh_schemas.values import ArtifactRef, DriftPolicy

ModelT = TypeVar("ModelT")


@dataclass(frozen=True, slots=True)
class EvalSet:
    """What every contender of a round is judged on: one dataset version's eval split and
    must-pass cases, plus what a reference profile built from the answers must record."""

    domain: str
    dataset_version: str
    examples: tuple[DatasetExample, ...]
    must_pass: tuple[MustPassRecord, ...]
    drift: DriftPolicy

    @classmethod
    def of(cls, snapshot: DatasetSnapshot, dataset_version: str) -> EvalSet:
        """The eval split and cases of `snapshot`, stored as `dataset_version`."""
        return cls(
            domain=snapshot.domain,
            dataset_version=dataset_version,
            examples=eval_split(snapshot),
            must_pass=snapshot.must_pass,
            drift=snapshot.recipe.drift,
        )


@dataclass(frozen=True, slots=True)
class Evaluated:
    """A model's evaluation, its answer per eval example and, when the evaluator can build
    one, its reference profile.

    `predictions` holds the predicted label of each eval example, in the eval set's order:
    the gate compares candidate and champion example by example (paired statistics); without
    them the paired checks cannot be computed and fail. The profile comes from the same
    predictions (one pass over the eval split); the gate stores it only for a candidate it
    promotes.
    """

    evaluation: ModelEvaluation
    profile: ReferenceProfile | None = None
    predictions: tuple[str, ...] | None = None


class Evaluator(Protocol):
    """Evaluates the model behind `model` (a manifest ref) on `on`.

    Blocking and CPU-bound: the gate calls it in a worker thread. Raises
    `adaptmesh_kit.ArtifactIntegrityError` when the model's files fail verification.
    """

    def __call__(self, model: ArtifactRef, on: EvalSet, /) -> Evaluated: ...


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
