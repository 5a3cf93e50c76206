"""How good a classifier is: per-label metrics, macro-F1, confusion, must-pass outcomes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from adaptmesh_schemas.documents import (
    DatasetExample,
    ModelEvaluation,
    MustPassOutcome,
    MustPassRecord,
)
from adaptmesh_schemas.events.gate import LabelMetrics

if TYPE_CHECKING:
    from adaptmesh_ml.classifier import Classifier, Prediction


def classification_metrics(
    true_labels: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> tuple[dict[str, LabelMetrics], float, float, dict[str, dict[str, int]]]:
    """Per-label metrics, macro-F1, accuracy and the confusion matrix.

    Metrics cover `labels` plus any other label found in either sequence (appended in order of
    first appearance). Precision, recall and F1 are 0 where undefined. Macro-F1 averages the
    labels with support (a label no eval example carries says nothing about the model).
    The confusion matrix is dense: true label -> predicted label -> count.
    """
    if len(true_labels) != len(predicted):
        raise ValueError(f"{len(true_labels)} true labels but {len(predicted)} predictions")
    every_label = list(dict.fromkeys([*labels, *true_labels, *predicted]))
    pairs = Counter(zip(true_labels, predicted, strict=True))
    support = Counter(true_labels)
    predicted_counts = Counter(predicted)

    per_label: dict[str, LabelMetrics] = {}
    for label in every_label:
        correct = pairs[(label, label)]
        precision = _ratio(correct, predicted_counts[label])
        recall = _ratio(correct, support[label])
        # min(): rounding must not push a perfect score past the schema's bound of 1.
        f1 = min(1.0, _ratio(2 * precision * recall, precision + recall))
        per_label[label] = LabelMetrics(
            precision=precision, recall=recall, f1=f1, support=support[label]
        )
    supported = [metrics.f1 for metrics in per_label.values() if metrics.support > 0]
    macro_f1 = sum(supported) / len(supported) if supported else 0.0
    accuracy = _ratio(sum(pairs[(label, label)] for label in every_label), len(true_labels))
    confusion = {
        true: {guess: pairs[(true, guess)] for guess in every_label} for true in every_label
    }
    return per_label, macro_f1, accuracy, confusion


def evaluate(
    classifier: Classifier,
    examples: Sequence[DatasetExample],
    must_pass: Sequence[MustPassRecord],
) -> ModelEvaluation:
    """Score `classifier` on `examples` (callers pass the eval split) and the must-pass cases.

    An example or case whose label the classifier does not know counts as a miss: that label
    gets support and zero recall, which lowers macro-F1.
    """
    evaluation, _ = evaluate_with_predictions(classifier, examples, must_pass)
    return evaluation


def evaluate_with_predictions(
    classifier: Classifier,
    examples: Sequence[DatasetExample],
    must_pass: Sequence[MustPassRecord],
) -> tuple[ModelEvaluation, list[Prediction]]:
    """`evaluate`, plus the classifier's predictions for `examples` (same order).

    The predictions are what a reference profile is built from
    (`profile_from_predictions`): whoever evaluates a model it may promote gets both from one
    pass over the eval split. Must-pass predictions are not returned: they are rules, not a
    sample of the domain's inputs.
    """
    texts = [example.text for example in examples] + [case.text for case in must_pass]
    predictions = classifier.predict(texts) if texts else []
    example_predictions = predictions[: len(examples)]
    case_guesses = [prediction.label for prediction in predictions[len(examples) :]]
    per_label, macro_f1, accuracy, confusion = classification_metrics(
        [example.label for example in examples],
        [prediction.label for prediction in example_predictions],
        classifier.labels,
    )
    outcomes = tuple(
        MustPassOutcome(
            rule_id=case.rule_id,
            case_id=case.case_id,
            expected_label=case.expected_label,
            predicted_label=guess,
            passed=guess == case.expected_label,
        )
        for case, guess in zip(must_pass, case_guesses, strict=True)
    )
    evaluation = ModelEvaluation(
        model_version=classifier.model_version,
        macro_f1=macro_f1,
        accuracy=accuracy,
        per_label=per_label,
        confusion=confusion,
        must_pass=outcomes,
    )
    return evaluation, example_predictions


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0
