"""Evaluating a model from the artifact store on a dataset's eval split and must-pass cases.

The gate takes the evaluator as a parameter: the real one loads classifiers with
`adaptmesh_ml`; component tests hand in a function that returns prepared evaluations.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from adaptmesh_kit import ArtifactStore
from adaptmesh_ml import Classifier, evaluate
from adaptmesh_schemas.documents import (
    DatasetExample,
    DatasetSnapshot,
    ModelEvaluation,
    MustPassRecord,
)
from adaptmesh_schemas.values import ArtifactRef


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


class ClassifierEvaluator:
    """The real evaluator: loads classifiers (verifying every digest) and runs them.

    Loading costs seconds, so the last `models_per_domain` models used per domain stay loaded.
    Two is exactly enough to keep the champion across rounds: each round uses the champion and
    then a candidate, so the least recently used one is the previous round's loser.
    """

    def __init__(self, store: ArtifactStore, models_per_domain: int = 2) -> None:
        self._store = store
        self._models_per_domain = models_per_domain
        self._loaded: dict[str, OrderedDict[str, Classifier]] = {}
        self._lock = threading.Lock()

    def __call__(
        self,
        domain: str,
        model: ArtifactRef,
        examples: Sequence[DatasetExample],
        must_pass: Sequence[MustPassRecord],
        /,
    ) -> ModelEvaluation:
        return evaluate(self.classifier(domain, model), examples, must_pass)

    def classifier(self, domain: str, model: ArtifactRef) -> Classifier:
        """The loaded classifier for `model`, from the cache when it is there."""
        with self._lock:
            loaded = self._loaded.setdefault(domain, OrderedDict())
            # The manifest digest pins every file the manifest lists: it is the model's identity.
            classifier = loaded.get(model.sha256)
            if classifier is None:
                classifier = Classifier.load(self._store, model)
                loaded[model.sha256] = classifier
                while len(loaded) > self._models_per_domain:
                    loaded.popitem(last=False)
            loaded.move_to_end(model.sha256)
            return classifier
