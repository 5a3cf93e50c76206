"""Benchmark: retraining after a small data batch, warm from the champion vs cold from the base.

    make bench-incremental   # or: uv run python -m bench.incremental --per-label 45

In one process, without Kafka or Ray: a champion is trained on a Reuters R8 snapshot (8 labels,
`--per-label` stories each, texts cut to 300 characters by the demo scenario's sampler) and
saved to an artifact store as the training service saves it. A batch then adds ~10% new
stories (other texts, another seed). On that one new snapshot (the same eval split: splits are
a hash of the example id, as ingestion makes them) two models are trained: (a) warm from the
champion (`plan_warm_start`: its adapter and head, the new examples plus a replay share of old
ones) and (b) cold from the base on everything. Both use the recipe's defaults (early stopping,
lr 2e-3, batches of 16), the same torch thread count and one cached base model (as a training
worker keeps it), and are evaluated on the eval split. `ratio:` is warm seconds / cold seconds;
the warm time includes planning the warm start (reading and verifying the champion).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Sequence

from adaptmesh_cli import reuters, scenario
from adaptmesh_cli.datasets import snapshot_from_docs
from adaptmesh_ingestion.snapshot import canonical_json, dataset_version_id
from adaptmesh_kit import ArtifactStore
from adaptmesh_ml import (
    BaseModelCache,
    Classifier,
    TrainedModel,
    WarmStart,
    base_model_sha256,
    configure_torch_threads,
    evaluate,
    plan_warm_start,
    save_model,
    train_classifier,
)
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.events import RecipeChanged
from adaptmesh_schemas.values import ArtifactRef, Lineage

DOMAIN = "reuters-incremental"
MAX_CHARS = 300
BATCH_SHARE = 0.1
TARGET_RATIO = 0.4
TARGET_F1_SLACK = 0.01


def snapshot_of(docs: Sequence[reuters.ReutersDoc], source: str) -> DatasetSnapshot:
    """A snapshot as ingestion writes it, with a recipe of required fields only (defaults)."""
    recipe = RecipeChanged(
        domain=DOMAIN,
        recipe_version="r1",
        base_model=scenario.recipe().base_model,
        labels=scenario.R8_LABELS,
    )
    return snapshot_from_docs(recipe, docs, batch_id=source)


def store_champion(
    store: ArtifactStore, snapshot: DatasetSnapshot, trained: TrainedModel
) -> ArtifactRef:
    """Save the snapshot and the champion as the ingestion and training services do."""
    dataset = store.put_bytes(canonical_json(snapshot))
    lineage = Lineage(
        dataset_version=dataset_version_id(dataset.sha256),
        dataset_sha256=dataset.sha256,
        recipe_version=snapshot.recipe.recipe_version,
        base_model=snapshot.base_model,
        code_version="bench",
        seed=trained.seed,
        hyperparameters=trained.hyperparameters,
        correlation_id="bench",
        base_model_sha256=base_model_sha256(snapshot.base_model),
        library_versions=trained.library_versions,
        determinism=trained.determinism,
    )
    ref, _ = save_model(store, trained, domain=DOMAIN, model_version="champion", lineage=lineage)
    return ref


def timed_training(
    snapshot: DatasetSnapshot, bases: BaseModelCache, warm_start: WarmStart | None = None
) -> tuple[TrainedModel, float]:
    started = time.perf_counter()
    trained = train_classifier(snapshot, bases=bases, warm_start=warm_start)
    return trained, time.perf_counter() - started


def macro_f1(trained: TrainedModel, snapshot: DatasetSnapshot, name: str) -> float:
    classifier = Classifier.from_trained(trained, snapshot.base_model, name)
    eval_split = [e for e in snapshot.examples if e.split == "eval"]
    return evaluate(classifier, eval_split, snapshot.must_pass).macro_f1


def describe(name: str, trained: TrainedModel, seconds: float, f1: float) -> str:
    m = trained.metrics
    return (
        f"{name}: macro-F1 {f1:.3f} in {seconds:.1f}s ({m['train_examples']:.0f} examples "
        f"trained on, {m['new_examples']:.0f} new; {m['epochs']:.0f} epochs, "
        f"best {m['best_epoch']:.0f})"
    )


def main(per_label: int) -> None:
    threads = configure_torch_threads()
    train_docs = reuters.load("r8", "train")
    champion_docs = reuters.sample(
        train_docs, scenario.R8_LABELS, per_label, seed=7, max_chars=MAX_CHARS
    )
    # New texts only: the stories whose head the champion already has are left out.
    seen = {doc.text for doc in champion_docs}
    batch_docs = reuters.sample(
        train_docs,
        scenario.R8_LABELS,
        math.ceil(per_label * BATCH_SHARE),
        seed=11,
        max_chars=MAX_CHARS,
        exclude=frozenset(d.text for d in train_docs if d.text[:MAX_CHARS] in seen),
    )
    champion_snapshot = snapshot_of(champion_docs, "champion-batch")
    snapshot = snapshot_of([*champion_docs, *batch_docs], "new-batch")
    added = len(snapshot.examples) - len(champion_snapshot.examples)
    bases = BaseModelCache()
    with tempfile.TemporaryDirectory(prefix="bench-incremental-") as work:
        store = ArtifactStore(f"file://{work}")
        champion, champion_seconds = timed_training(champion_snapshot, bases)
        champion_ref = store_champion(store, champion_snapshot, champion)
        print(
            f"champion: {len(champion_snapshot.examples)} examples, 8 labels, trained in "
            f"{champion_seconds:.1f}s ({champion.metrics['epochs']:.0f} epochs), "
            f"macro-F1 {macro_f1(champion, snapshot, 'champion'):.3f} on the new eval split"
        )
        print(
            f"batch: +{added} new examples ({added / len(champion_snapshot.examples):.0%}); "
            f"new snapshot {len(snapshot.examples)} examples, "
            f"{sum(e.split == 'eval' for e in snapshot.examples)} in eval; "
            f"torch threads {threads} (both runs)"
        )
        started = time.perf_counter()
        plan = plan_warm_start(store, snapshot, champion_ref)
        if plan.warm_start is None:
            raise SystemExit(f"no warm start: {plan.reason}")
        plan_seconds = time.perf_counter() - started
        warm, warm_train_seconds = timed_training(snapshot, bases, plan.warm_start)
        warm_seconds = plan_seconds + warm_train_seconds
        cold, cold_seconds = timed_training(snapshot, bases)
    warm_f1, cold_f1 = macro_f1(warm, snapshot, "warm"), macro_f1(cold, snapshot, "cold")
    print(describe("warm (from the champion)", warm, warm_seconds, warm_f1))
    print(describe("cold (from the base)    ", cold, cold_seconds, cold_f1))
    ratio = warm_seconds / cold_seconds
    print(f"ratio: {ratio:.2f}")
    met = warm_f1 >= cold_f1 - TARGET_F1_SLACK and ratio <= TARGET_RATIO
    print(
        f"target (warm macro-F1 >= cold - {TARGET_F1_SLACK} at <= {TARGET_RATIO}x the time): "
        f"{'met' if met else 'NOT met'} (macro-F1 {warm_f1 - cold_f1:+.3f}, time {ratio:.2f}x)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-label", type=int, default=45, help="champion stories per label")
    main(parser.parse_args().per_label)
