"""Benchmark: how often the gate decides wrongly, paired statistics vs a point-threshold rule.

    make bench-gate   # or: uv run python -m bench.gate [--retrain] [--draws 400]

On two data sets nobody tuned the gate on (5 Reuters-21578 R8 topics and 5 20 Newsgroups
groups, the drift bench's choice), three real models are trained in-process with the recipe's
default training settings on all-MiniLM-L6-v2 (texts cut to 300 characters as the demo
scenario cuts them): a champion (training seed 13), an **equal** candidate (seed 14, same
data) and a **worse** candidate (seed 13, 15% of its training labels flipped to another
label; when that model is not measurably worse than the policy's margin on the full pool, a
stronger corruption is trained too and used, and both are reported). Each model answers a
large held-out pool once (the data set's test split); the answers are cached under
`.mesh/bench-gate/` so a re-run skips training (`--retrain` forces it).

Then, for eval splits of 100, 300 and 1,000 examples drawn at random (without replacement)
from the pool, `--draws` times each, both candidates are judged against the champion by:

- the **point rule** (the gate before paired statistics, TFMA-style change thresholds):
  approve iff the candidate's macro-F1 >= the floor and no label with eval support lost more
  than `max_regression` (0.02) F1;
- a second point rule, approve iff macro-F1 >= the floor and macro-F1 >= the champion's -
  margin;
- the **paired policy**: `adaptmesh_gate.policy.decide` with the default `GatePolicy`.

A wrong promotion is the worse candidate approved; a wrong rejection is the equal one
rejected; the combined wrong-decision rate is their mean. `ratio:` is the paired policy's
combined rate divided by the point rule's at 300 examples, over both data sets. Targets:
wrong promotions <= alpha (1 - confidence) at every size, and ratio <= 0.5.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adaptmesh_cli import newsgroups, reuters, scenario
from adaptmesh_cli.datasets import snapshot_from_docs
from adaptmesh_cli.reuters import ReutersDoc
from adaptmesh_gate.policy import Contender, decide
from adaptmesh_gate.statistics import compare, decision_seed
from adaptmesh_ml import (
    BaseModelCache,
    Classifier,
    classification_metrics,
    configure_torch_threads,
    train_classifier,
)
from adaptmesh_schemas.documents import DatasetExample, ModelEvaluation
from adaptmesh_schemas.events import RecipeChanged
from adaptmesh_schemas.values import GatePolicy, TrainingSettings

CACHE_FORMAT = 1
CACHE_DIR = Path(".mesh/bench-gate")
MAX_CHARS = 300  # as the demo scenario and the other benches cut their stories
SAMPLE_SEED = 7
CHAMPION_SEED = TrainingSettings.model_fields["seed"].default  # 13: the recipe's default
EQUAL_SEED = CHAMPION_SEED + 1
FLIP_SEED = 101
FLIPS = (0.15, 0.30, 0.45)  # the worse candidate: the first measurably worse than the margin
SIZES = (100, 300, 1000)
HEADLINE_SIZE = 300
TARGET_RATIO = 0.5
POLICY = GatePolicy()


@dataclass(frozen=True)
class DataSet:
    name: str
    source: str
    labels: tuple[str, ...]
    train: Callable[[], Sequence[ReutersDoc]]
    test: Callable[[], Sequence[ReutersDoc]]


DATASETS = {
    "reuters": DataSet(
        name="reuters",
        source="Reuters-21578 R8, 5 topics",
        labels=("acq", "crude", "earn", "money-fx", "trade"),
        train=lambda: reuters.load("r8", "train"),
        test=lambda: reuters.load("r8", "test"),
    ),
    "newsgroups": DataSet(
        name="newsgroups",
        source="20 Newsgroups, 5 groups",
        labels=(
            "comp.graphics",
            "rec.sport.hockey",
            "sci.med",
            "sci.space",
            "talk.politics.mideast",
        ),
        train=lambda: newsgroups.load("train"),
        test=lambda: newsgroups.load("test"),
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    seed: int
    flip: float

    def describe(self) -> str:
        if self.flip:
            return f"seed {self.seed}, {self.flip:.0%} of training labels flipped"
        return f"seed {self.seed}"


CHAMPION = ModelSpec("champion", CHAMPION_SEED, 0.0)
EQUAL = ModelSpec("equal", EQUAL_SEED, 0.0)
WORSE = tuple(ModelSpec(f"flip-{round(share * 100)}", CHAMPION_SEED, share) for share in FLIPS)


# --- data and models ---------------------------------------------------------------------------


def flipped(docs: Sequence[ReutersDoc], labels: Sequence[str], share: float) -> list[ReutersDoc]:
    """`docs` with `share` of them (chosen at random) relabelled to another label, at random."""
    if share == 0:
        return list(docs)
    rng = random.Random(FLIP_SEED)
    chosen = set(rng.sample(range(len(docs)), round(share * len(docs))))
    return [
        ReutersDoc(rng.choice([other for other in labels if other != doc.label]), doc.text)
        if index in chosen
        else doc
        for index, doc in enumerate(docs)
    ]


def recipe(data: DataSet, seed: int) -> RecipeChanged:
    return RecipeChanged(
        domain=f"bench-gate-{data.name}",
        recipe_version="r1",
        base_model=scenario.recipe().base_model,
        labels=data.labels,
        training=TrainingSettings(seed=seed),
    )


def pool_of(data: DataSet, trained_on: set[str]) -> list[ReutersDoc]:
    """The held-out pool: the test split's texts of the data set's labels, cut like the
    training texts, each text once and none trained on."""
    seen = set(trained_on)
    pool = []
    for doc in data.test():
        text = doc.text[:MAX_CHARS]
        if doc.label in data.labels and text not in seen:
            seen.add(text)
            pool.append(ReutersDoc(doc.label, text))
    return pool


class ModelCache:
    """Answers of each trained model on one data set's pool, in `.mesh/bench-gate/`."""

    def __init__(self, data: DataSet, key: str, *, retrain: bool) -> None:
        self.path = CACHE_DIR / f"{data.name}.json"
        self.key = key
        self.models: dict[str, dict[str, Any]] = {}
        if not retrain and self.path.is_file():
            stored = json.loads(self.path.read_text())
            if stored.get("format") == CACHE_FORMAT and stored.get("key") == key:
                self.models = stored["models"]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"format": CACHE_FORMAT, "key": self.key, "models": self.models}
        self.path.write_text(json.dumps(document))


def train_and_answer(
    data: DataSet,
    spec: ModelSpec,
    docs: Sequence[ReutersDoc],
    pool: Sequence[ReutersDoc],
    bases: BaseModelCache,
) -> dict[str, Any]:
    snapshot = snapshot_from_docs(
        recipe(data, spec.seed), flipped(docs, data.labels, spec.flip), batch_id=spec.name
    )
    started = time.perf_counter()
    trained = train_classifier(snapshot, bases=bases)
    seconds = time.perf_counter() - started
    classifier = Classifier.from_trained(trained, snapshot.base_model, spec.name)
    answers = [prediction.label for prediction in classifier.predict([d.text for d in pool])]
    print(
        f"  trained {spec.name} ({spec.describe()}) in {seconds:.0f}s: "
        f"{trained.metrics['train_examples']:.0f} examples, {trained.metrics['epochs']:.0f} "
        f"epochs; answered the pool in {time.perf_counter() - started - seconds:.0f}s",
        flush=True,
    )
    return {
        "predictions": answers,
        "seconds": seconds,
        "epochs": trained.metrics["epochs"],
        "train_examples": trained.metrics["train_examples"],
    }


# --- rules ---------------------------------------------------------------------------------------


def evaluation(
    version: str, truth: Sequence[str], answers: Sequence[str], labels: Sequence[str]
) -> ModelEvaluation:
    per_label, macro, accuracy, confusion = classification_metrics(truth, answers, labels)
    return ModelEvaluation(
        model_version=version,
        macro_f1=macro,
        accuracy=accuracy,
        per_label=per_label,
        confusion=confusion,
    )


def point_rule(candidate: ModelEvaluation, champion: ModelEvaluation) -> bool:
    """The gate before paired statistics: floor, and no per-label F1 drop beyond the margin."""
    if candidate.macro_f1 + 1e-9 < POLICY.min_macro_f1:
        return False
    return all(
        champion.per_label[label].f1 - metrics.f1 <= POLICY.max_regression + 1e-9
        for label, metrics in candidate.per_label.items()
        if metrics.support > 0 and label in champion.per_label
    )


def macro_drop_rule(candidate: ModelEvaluation, champion: ModelEvaluation) -> bool:
    """Floor, and macro-F1 no more than the margin below the champion's (point estimates)."""
    return (
        candidate.macro_f1 + 1e-9 >= POLICY.min_macro_f1
        and candidate.macro_f1 + 1e-9 >= champion.macro_f1 - POLICY.margin
    )


RULES = ("point (old gate)", "point (macro drop)", "paired (ours)")
SWEEP = (0.02, 0.03, 0.04, 0.05)  # margins the paired policy's verdicts are re-read at


@dataclass
class Tally:
    """How the rules judged one candidate on every eval split of one size."""

    draws: int = 0
    approved: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULES, 0))
    failed: Counter[str] = field(default_factory=Counter)  # paired checks failed, by name
    too_small: int = 0
    # McNemar's p(worse) <= alpha: an info line under non-inferiority (it judges nothing).
    mcnemar_worse: int = 0
    resolution: float = 0.0
    # Per draw: the lower bound of the macro-F1 difference, and whether every paired check
    # other than non-inferiority passed (the verdict at another margin follows from both).
    lows: list[float] = field(default_factory=list)
    others_passed: list[bool] = field(default_factory=list)

    def rate(self, rule: str) -> float:
        return self.approved[rule] / self.draws

    def rate_at(self, margin: float) -> float:
        """The paired policy's approval rate had the margin been `margin`."""
        approvals = sum(
            others and low + 1e-9 >= -margin
            for low, others in zip(self.lows, self.others_passed, strict=True)
        )
        return approvals / self.draws


def judge(
    data: DataSet,
    pool: Sequence[ReutersDoc],
    answers: dict[str, list[str]],
    candidates: Sequence[str],
    size: int,
    draws: int,
) -> dict[str, Tally]:
    """Draw `draws` eval splits of `size` from the pool; judge each candidate on each."""
    examples = [
        DatasetExample(
            example_id=f"{data.name}-{index}",
            text=doc.text,
            label=doc.label,
            split="eval",
            source_event_id="bench",
        )
        for index, doc in enumerate(pool)
    ]
    rng = np.random.default_rng(size)
    tallies = {name: Tally() for name in candidates}
    for draw in range(draws):
        chosen = np.sort(rng.choice(len(pool), size=size, replace=False))
        split = tuple(examples[index] for index in chosen)
        truth = [example.label for example in split]
        champion_answers = tuple(answers[CHAMPION.name][index] for index in chosen)
        champion_eval = evaluation(CHAMPION.name, truth, champion_answers, data.labels)
        champion = Contender(champion_eval, data.labels, champion_answers)
        for name in candidates:
            tally = tallies[name]
            tally.draws += 1
            cand_answers = tuple(answers[name][index] for index in chosen)
            cand_eval = evaluation(name, truth, cand_answers, data.labels)
            tally.approved[RULES[0]] += point_rule(cand_eval, champion_eval)
            tally.approved[RULES[1]] += macro_drop_rule(cand_eval, champion_eval)
            decision = decide(
                POLICY,
                Contender(cand_eval, data.labels, cand_answers),
                champion,
                split,
                seed=decision_seed(f"{data.name}/{size}/{draw}", name, CHAMPION.name),
            )
            tally.approved[RULES[2]] += decision.approved
            failed = {check.check for check in decision.checks if not check.passed}
            tally.failed.update(failed)
            comparison = decision.comparison
            assert comparison is not None
            tally.too_small += comparison.too_small is not None
            tally.mcnemar_worse += comparison.mcnemar_p_worse <= 1 - POLICY.confidence + 1e-9
            tally.resolution += comparison.resolution / draws
            tally.lows.append(comparison.macro_f1_difference.low)
            tally.others_passed.append(not failed - {"non-inferiority"})
    return tallies


# --- the run -------------------------------------------------------------------------------------


def cache_key(data: DataSet, docs: Sequence[ReutersDoc], pool: Sequence[ReutersDoc]) -> str:
    digest = hashlib.sha256()
    for doc in (*docs, *pool):
        digest.update(f"{doc.label}\t{doc.text}\n".encode())
    digest.update(scenario.recipe().base_model.model_dump_json().encode())
    digest.update(TrainingSettings().model_dump_json().encode())
    digest.update(f"{FLIP_SEED} {data.labels}".encode())
    return digest.hexdigest()


def pool_gap(
    truth: Sequence[str], candidate: Sequence[str], champion: Sequence[str]
) -> tuple[float, float, float]:
    """Full-pool macro-F1 difference (candidate - champion) with its one-sided bounds."""
    macro = compare(
        truth,
        candidate,
        champion,
        confidence=POLICY.confidence,
        samples=POLICY.bootstrap_samples,
        seed=0,
        margin=POLICY.margin,
    ).comparison.macro_f1_difference
    return macro.estimate, macro.low, macro.high


Rates = dict[tuple[str, int], tuple[float, float]]  # (rule, size) -> (promotions, rejections)


def run(data: DataSet, *, per_label: int, draws: int, retrain: bool) -> Rates:
    print(f"\n{data.name} ({data.source})", flush=True)
    docs = reuters.sample(
        data.train(), data.labels, per_label, seed=SAMPLE_SEED, max_chars=MAX_CHARS
    )
    pool = pool_of(data, {doc.text for doc in docs})
    truth = [doc.label for doc in pool]
    mix = ", ".join(f"{label} {truth.count(label)}" for label in data.labels)
    print(f"  trained on {len(docs)} texts ({per_label} a label); pool {len(pool)} ({mix})")
    cache = ModelCache(data, cache_key(data, docs, pool), retrain=retrain)
    bases = BaseModelCache()

    def answers_of(spec: ModelSpec) -> list[str]:
        if spec.name not in cache.models:
            cache.models[spec.name] = train_and_answer(data, spec, docs, pool, bases)
            cache.save()
        answers: list[str] = cache.models[spec.name]["predictions"]
        return answers

    answers = {spec.name: answers_of(spec) for spec in (CHAMPION, EQUAL)}
    worse: ModelSpec | None = None
    gaps: dict[str, tuple[float, float, float]] = {}
    for spec in WORSE:
        answers[spec.name] = answers_of(spec)
        gaps[spec.name] = pool_gap(truth, answers[spec.name], answers[CHAMPION.name])
        estimate, low, high = gaps[spec.name]
        beyond = high < -POLICY.margin
        print(
            f"  {spec.name}: full-pool macro-F1 gap {estimate:+.3f} [{low:+.3f}, {high:+.3f}] "
            f"-> {'worse than' if beyond else 'NOT measurably worse than'} the margin "
            f"{POLICY.margin:.3f}"
        )
        if beyond:
            worse = spec
            break
    if worse is None:
        worse = WORSE[-1]
        print(f"  no corruption is measurably worse than the margin; using {worse.name}")

    champion_macro = classification_metrics(truth, answers[CHAMPION.name], data.labels)[1]
    for spec in (CHAMPION, EQUAL, *(s for s in WORSE if s.name in answers)):
        macro = classification_metrics(truth, answers[spec.name], data.labels)[1]
        trained = cache.models[spec.name]
        print(
            f"  {spec.name:9} ({spec.describe()}): full-pool macro-F1 {macro:.3f} "
            f"(gap {macro - champion_macro:+.3f}); {trained['train_examples']:.0f} examples, "
            f"{trained['epochs']:.0f} epochs, {trained['seconds']:.0f}s"
        )
    equal_gap = pool_gap(truth, answers[EQUAL.name], answers[CHAMPION.name])
    print(
        f"  equal vs champion on the full pool: {equal_gap[0]:+.3f} "
        f"[{equal_gap[1]:+.3f}, {equal_gap[2]:+.3f}]"
    )

    alpha = 1 - POLICY.confidence
    rates: Rates = {}
    flips = [spec for spec in WORSE if spec.name in answers]
    names = [EQUAL.name, *(spec.name for spec in flips)]
    tallies: dict[int, dict[str, Tally]] = {}
    print(
        f"  {'n':>5}  {'rule':20} {'wrong promotions':>17} {'wrong rejections':>17} {'combined':>9}"
    )
    for size in SIZES:
        started = time.perf_counter()
        tallies[size] = judge(data, pool, answers, names, size, draws)
        equal, worst = tallies[size][EQUAL.name], tallies[size][worse.name]
        for rule in RULES:
            promoted, rejected = worst.rate(rule), 1 - equal.rate(rule)
            rates[rule, size] = (promoted, rejected)
            note = ""
            if rule == RULES[2]:
                note = f"  promotions <= alpha: {'held' if promoted <= alpha else 'NOT held'}"
            print(
                f"  {size if rule == RULES[0] else '':>5}  {rule:20} {promoted:>17.3f} "
                f"{rejected:>17.3f} {(promoted + rejected) / 2:>9.3f}{note}"
            )
        reasons = ", ".join(f"{check} {count / draws:.0%}" for check, count in equal.failed.items())
        print(
            f"  {'':>5}  paired, equal candidate: checks failed {reasons or 'none'}; too small "
            f"{equal.too_small / draws:.0%}; resolution {equal.resolution:.3f} "
            f"({draws} draws, {time.perf_counter() - started:.0f}s)",
            flush=True,
        )
        significant = ", ".join(
            f"{name} {tallies[size][name].mcnemar_worse / draws:.0%}" for name in names
        )
        print(f"  {'':>5}  McNemar p(worse) <= alpha (info, judges nothing): {significant}")
    ours, point = combined(rates, RULES[2]), combined(rates, RULES[0])
    print(f"  ratio at {HEADLINE_SIZE}: {ours / point:.2f}" if point else "  ratio: n/a")

    print(
        "  margin sweep, paired policy: rejections of the equal candidate / approvals of each "
        "flipped one (* = worse than that margin on the full pool: a wrong promotion)"
    )
    print(f"  {'margin':>7} {'n':>5} {'equal rej.':>11} " + " ".join(f"{n:>9}" for n in names[1:]))
    for margin in SWEEP:
        for size in SIZES:
            cells = []
            for spec in flips:
                mark = "*" if gaps[spec.name][2] < -margin else " "
                cells.append(f"{tallies[size][spec.name].rate_at(margin):>8.3f}{mark}")
            rejected = 1 - tallies[size][EQUAL.name].rate_at(margin)
            print(f"  {margin:>7.3f} {size:>5} {rejected:>11.3f} " + " ".join(cells))
    return rates


def combined(rates: Rates, rule: str, size: int = HEADLINE_SIZE) -> float:
    promoted, rejected = rates[rule, size]
    return (promoted + rejected) / 2


def main(names: Sequence[str], *, per_label: int, draws: int, retrain: bool) -> None:
    threads = configure_torch_threads()
    alpha = 1 - POLICY.confidence
    print(
        f"policy: {POLICY.test}, margin {POLICY.margin:.3f}, confidence {POLICY.confidence}, "
        f"max_regression {POLICY.max_regression:.3f}, floor {POLICY.min_macro_f1:.3f}, "
        f"{POLICY.bootstrap_samples} resamples; torch threads {threads}"
    )
    print(f"alpha: {alpha:.3f}")
    started = time.perf_counter()
    results = {
        name: run(DATASETS[name], per_label=per_label, draws=draws, retrain=retrain)
        for name in names
    }
    print()
    held = all(rates[RULES[2], size][0] <= alpha for rates in results.values() for size in SIZES)
    print(
        f"wrong promotions <= alpha ({alpha:.3f}), paired policy: "
        + "; ".join(
            f"{name} "
            + ", ".join(
                f"n={size} {rates[RULES[2], size][0]:.3f}"
                f" {'held' if rates[RULES[2], size][0] <= alpha else 'NOT held'}"
                for size in SIZES
            )
            for name, rates in results.items()
        )
    )
    ours = float(np.mean([combined(rates, RULES[2]) for rates in results.values()]))
    point = float(np.mean([combined(rates, RULES[0]) for rates in results.values()]))
    ratio = ours / point if point else float("nan")
    print(
        f"combined wrong-decision rate at {HEADLINE_SIZE}, mean over {', '.join(results)}: "
        f"paired {ours:.3f}, point rule {point:.3f}"
    )
    print(f"ratio: {ratio:.2f}")
    print(
        f"target (wrong promotions <= alpha at every size, ratio <= {TARGET_RATIO}): "
        f"{'met' if held and ratio <= TARGET_RATIO else 'NOT met'}; total "
        f"{time.perf_counter() - started:.0f}s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", default="reuters,newsgroups", help="comma-separated")
    parser.add_argument("--per-label", type=int, default=120, help="training texts per label")
    parser.add_argument("--draws", type=int, default=400, help="eval splits drawn per size")
    parser.add_argument("--retrain", action="store_true", help="ignore cached answers")
    arguments = parser.parse_args()
    main(
        arguments.datasets.split(","),
        per_label=arguments.per_label,
        draws=arguments.draws,
        retrain=arguments.retrain,
    )
