"""The real evaluator: classifiers loaded from the artifact store and scored with adaptmesh_ml."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from adaptmesh_gate.evaluation import LoadedModels
from adaptmesh_kit import ArtifactStore
from adaptmesh_ml import Classifier, evaluate
from adaptmesh_schemas.documents import DatasetExample, ModelEvaluation, MustPassRecord
from adaptmesh_schemas.values import ArtifactRef


class ClassifierEvaluator:
    """The real evaluator: loads classifiers from the store (verifying every digest), keeps
    each domain's recent ones loaded (loading costs seconds), and scores them."""

    def __init__(self, store: ArtifactStore) -> None:
        self.classifiers = LoadedModels(partial(Classifier.load, store))

    def __call__(
        self,
        domain: str,
        model: ArtifactRef,
        examples: Sequence[DatasetExample],
        must_pass: Sequence[MustPassRecord],
        /,
    ) -> ModelEvaluation:
        return evaluate(self.classifiers.get(domain, model), examples, must_pass)
