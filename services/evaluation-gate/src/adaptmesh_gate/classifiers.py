"""The real evaluator: classifiers loaded from the artifact store and scored with adaptmesh_ml."""

from __future__ import annotations

from functools import partial

from adaptmesh_gate.evaluation import EvalSet, Evaluated, LoadedModels
from adaptmesh_kit import ArtifactStore
from adaptmesh_ml import Classifier, evaluate_with_predictions, profile_from_predictions
from adaptmesh_schemas.values import ArtifactRef


class ClassifierEvaluator:
    """The real evaluator: loads classifiers from the store (verifying every digest), keeps
    each domain's recent ones loaded (loading costs seconds), and scores them."""

    def __init__(self, store: ArtifactStore) -> None:
        self.classifiers = LoadedModels(partial(Classifier.load, store))

    def __call__(self, model: ArtifactRef, on: EvalSet, /) -> Evaluated:
        classifier = self.classifiers.get(on.domain, model)
        evaluation, predictions = evaluate_with_predictions(classifier, on.examples, on.must_pass)
        # Built for every contender (it costs no model call): only the gate knows, after the
        # decision, whether this one is promoted.
        profile = profile_from_predictions(
            predictions,
            on.examples,
            domain=on.domain,
            dataset_version=on.dataset_version,
            model_version=classifier.model_version,
            labels=classifier.labels,
            drift=on.drift,
        )
        return Evaluated(
            evaluation, profile, predictions=tuple(prediction.label for prediction in predictions)
        )
