from __future__ import annotations

import math
from pathlib import Path

import pytest

from adaptmesh_kit import ArtifactIntegrityError, ArtifactStore
from adaptmesh_ml import (
    ADAPTER_WEIGHTS_FILE,
    SKETCH_DIMENSIONS,
    Classifier,
    TrainedModel,
    evaluate,
    evaluate_with_predictions,
    profile_from_predictions,
    save_model,
    sketch_projection,
)
from adaptmesh_schemas.documents import DatasetExample, MustPassRecord
from adaptmesh_schemas.values import ArtifactRef, Lineage
from tests.unit.adaptmesh_ml import tiny_domain

TEXTS = [
    "the goalkeeper saved a penalty in the final minute of the cup match",
    "rates",
    "snow and frost tonight",
]


def saved(trained: TrainedModel, tmp_path: Path) -> tuple[ArtifactStore, ArtifactRef]:
    store = ArtifactStore(f"file://{tmp_path}/artifacts")
    lineage = Lineage(
        dataset_version="ds-1",
        dataset_sha256="b" * 64,
        recipe_version="r1",
        base_model=tiny_domain.BASE_MODEL,
        code_version="0.1.0",
        seed=trained.seed,
        correlation_id="change-1",
    )
    ref, _ = save_model(
        store, trained, domain="tiny-news", model_version="tiny-v1", lineage=lineage
    )
    return store, ref


def test_a_loaded_model_predicts_like_the_trained_one(
    trained: TrainedModel, classifier: Classifier, tmp_path: Path
) -> None:
    store, ref = saved(trained, tmp_path)
    loaded = Classifier.load(store, ref)
    assert loaded.model_version == "tiny-v1"
    assert loaded.labels == classifier.labels
    assert loaded.manifest.lineage.hyperparameters["max_length"] == 32
    for mine, theirs in zip(loaded.predict(TEXTS), classifier.predict(TEXTS), strict=True):
        assert mine.label == theirs.label
        assert mine.confidence == pytest.approx(theirs.confidence, abs=1e-6)
        assert mine.embedding_sketch == pytest.approx(theirs.embedding_sketch, abs=2e-4)


def test_a_tampered_adapter_is_never_loaded(trained: TrainedModel, tmp_path: Path) -> None:
    store, ref = saved(trained, tmp_path)
    adapter = Path(ref.uri.removeprefix("file://")).parent / ADAPTER_WEIGHTS_FILE
    adapter.write_bytes(adapter.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(ArtifactIntegrityError):
        Classifier.load(store, ref)


def test_predictions_are_distributions_with_a_sketch(classifier: Classifier) -> None:
    predictions = classifier.predict(TEXTS)
    assert len(predictions) == len(TEXTS)
    for prediction in predictions:
        assert set(prediction.probabilities) == set(tiny_domain.LABELS)
        assert math.fsum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.confidence == max(prediction.probabilities.values())
        assert prediction.probabilities[prediction.label] == prediction.confidence
        assert len(prediction.embedding_sketch) == SKETCH_DIMENSIONS
        assert all(round(value, 4) == value for value in prediction.embedding_sketch)
        # A unit vector through an N(0, 1/16) projection keeps a length near 1.
        assert 0.2 < math.hypot(*prediction.embedding_sketch) < 3.0


def test_batching_does_not_change_answers_or_their_order(classifier: Classifier) -> None:
    together = classifier.predict(TEXTS, batch_size=2)
    alone = [classifier.predict([text])[0] for text in TEXTS]
    assert [p.label for p in together] == [p.label for p in alone]
    for batched, single in zip(together, alone, strict=True):
        assert batched.confidence == pytest.approx(single.confidence, abs=1e-5)


def test_nothing_in_nothing_out(classifier: Classifier) -> None:
    assert classifier.predict([]) == []


def test_the_sketch_projection_is_fixed() -> None:
    assert sketch_projection(384).equal(sketch_projection(384))
    assert sketch_projection(384).shape == (384, SKETCH_DIMENSIONS)


def test_an_in_process_classifier_has_no_manifest(classifier: Classifier) -> None:
    with pytest.raises(LookupError, match="no manifest"):
        _ = classifier.manifest


def test_evaluation_scores_examples_and_must_pass_cases(classifier: Classifier) -> None:
    examples = [*tiny_domain.examples(split="eval")[:6]]
    unknown = DatasetExample(
        example_id="e-new",
        text="the election results are in",
        label="politics",
        split="eval",
        source_event_id="test-event",
    )
    cases = [
        MustPassRecord(
            rule_id="rule-1",
            rule_version="1",
            case_id=f"case-{index}",
            text=text,
            expected_label="sports",
        )
        for index, text in enumerate(TEXTS)
    ]
    evaluation = evaluate(classifier, [*examples, unknown], cases)
    predicted = [p.label for p in classifier.predict(TEXTS)]

    assert evaluation.model_version == "tiny-v1"
    assert [outcome.predicted_label for outcome in evaluation.must_pass] == predicted
    assert [outcome.passed for outcome in evaluation.must_pass] == [
        label == "sports" for label in predicted
    ]
    assert evaluation.per_label["politics"].support == 1
    assert evaluation.per_label["politics"].recall == 0.0
    assert set(evaluation.confusion["politics"]) == {*tiny_domain.LABELS, "politics"}
    assert 0.0 <= evaluation.macro_f1 <= 1.0
    assert evaluation.accuracy <= 6 / 7


def test_evaluation_with_predictions_returns_the_eval_answers_it_scored(
    classifier: Classifier,
) -> None:
    examples = tiny_domain.examples(split="eval")[::7]  # two of each label
    cases = [
        MustPassRecord(
            rule_id="rule-1",
            rule_version="1",
            case_id="case-1",
            text="rates",
            expected_label="markets",
        )
    ]
    evaluation, predictions = evaluate_with_predictions(classifier, examples, cases)

    assert evaluation == evaluate(classifier, examples, cases)
    # One per eval example, in order; the must-pass case's answer is not among them.
    expected = classifier.predict([example.text for example in examples])
    assert [p.label for p in predictions] == [p.label for p in expected]
    assert [p.confidence for p in predictions] == pytest.approx([p.confidence for p in expected])
    profile = profile_from_predictions(
        predictions,
        examples,
        domain="tiny-news",
        dataset_version="ds-1",
        model_version=classifier.model_version,
        labels=classifier.labels,
    )
    assert profile.accuracy == evaluation.accuracy
