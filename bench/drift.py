"""Benchmark: drift detection delay and false alarms, adaptmesh drift-sensing vs Alibi Detect.

    make bench-drift     # or: uv run --frozen python -m bench.drift

1. Streams (`bench/drift_streams.py`): per data set (Reuters R8 -> unseen R52 topics; 20
   Newsgroups, 5 groups -> the other 15) a real model is trained once (cached), profiled on its
   eval split (`ReferenceProfile`, drift policy ERT 500 and window 20: the recipe defaults) and
   scores a held-out pool; runs of four scenarios are sampled from the pool and written to
   `.mesh/bench-drift/streams.json`: `no-drift`, `unseen-topics`, `topic-mix` and
   `feedback-noise`, each with a known change point.
2. Alibi Detect 0.13 `MMDDriftOnline` (`bench/drift_alibi.py`) runs over the same embedding
   sketches with the same ERT and window in an environment of its own (it pins numpy < 2):
   `uv run --isolated --no-project --python 3.11 --with 'alibi-detect[torch]==0.13.*'
   --with torch==2.15.0 python bench/drift_alibi.py STREAMS OUT`.
3. The same runs go through the real drift-sensing service on a real Kafka broker (the embedded
   one, from the local jars): each run is its own domain, armed as the mesh arms one (its
   `ReferenceProfile` in the artifact store, a `dataset.versioned` and a `model.ready` naming
   it), then its records are published in order as `inference.logged` (and, in
   `feedback-noise`, each followed by its `feedback.submitted`). The service runs in this
   process (`build_app(DriftSettings(...))`, alert cool-down 0 so that every alarm is
   published); every `drift.detected` of the bench's domains is read from `mesh.drift.v1` once
   the service's consumer group has caught up with everything published.

Delay: for a run with change point c, the first alarm at record index i >= c gives delay
i - c + 1; alarms before c are false alarms; a run without an alarm at or after c is a miss (the
mean delay is over detected runs; detection rates are printed). False alarms per 1,000 no-drift
steps = alarms on `no-drift` runs x 1000 / steps; the ERT promises 1000 / ERT.
`ratio:` = our mean delay / Alibi's, averaged over the shift scenarios Alibi can see
(unseen-topics and topic-mix, every data set); `feedback-noise` is invisible to an embedding
detector (Alibi n/a).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from adaptmesh_drift.app import build_app
from adaptmesh_drift.settings import DriftSettings
from adaptmesh_embedded import EmbeddedKafka, ensure_kafka_jars
from adaptmesh_ingestion.snapshot import canonical_json, counts_of
from adaptmesh_kit import ArtifactStore, MeshApp, MeshSettings, create_app
from adaptmesh_kit.topic_ends import end_offsets
from adaptmesh_schemas import DecodeError, MeshEvent, Stream, decode_event, read_envelope
from adaptmesh_schemas.events import (
    DatasetVersioned,
    DriftDetected,
    FeedbackSubmitted,
    InferenceLogged,
    ModelReady,
)
from adaptmesh_schemas.values import DriftPolicy, Lineage
from bench import drift_streams
from bench.drift_streams import SCENARIOS, Prepared, Run, Scenario

ALIBI_SCRIPT = Path(__file__).with_name("drift_alibi.py")
ALIBI_REQUIREMENTS = ("alibi-detect[torch]==0.13.*", "torch==2.15.0")
ALIBI_OUT = Path(".mesh/bench-drift/alibi.json")
OURS_OUT = Path(".mesh/bench-drift/ours.json")
RESULTS_OUT = Path(".mesh/bench-drift/results.json")
ALIBI_SCENARIOS: tuple[Scenario, ...] = ("unseen-topics", "topic-mix")
TARGET_RATIO = 1.0
PUBLISH_CHUNK = 2000
QUIET_SECONDS = 3.0
DRAIN_TIMEOUT_SECONDS = 1800.0
ALERT_COOLDOWN_SETTING = "drift_alert_cooldown_seconds"


# -- detections and what they mean ---------------------------------------------------------


@dataclass
class RunOutcome:
    """One detector's alarms on one run."""

    run: Run
    detections: list[int]
    detectors: list[str] = field(default_factory=list)  # ours: which detector, per alarm

    @property
    def change_point(self) -> int | None:
        return self.run.change_point

    @property
    def false_alarms(self) -> int:
        c = self.change_point
        return len(self.detections) if c is None else sum(i < c for i in self.detections)

    @property
    def clean_steps(self) -> int:
        """Records before the change (all of them without one)."""
        c = self.change_point
        return len(self.run.records) if c is None else c

    @property
    def first_after(self) -> int | None:
        c = self.change_point
        if c is None:
            return None
        return next((i for i in self.detections if i >= c), None)

    @property
    def delay(self) -> int | None:
        first, c = self.first_after, self.change_point
        return None if first is None or c is None else first - c + 1

    @property
    def false_alarm_detectors(self) -> list[str]:
        c = self.change_point
        if not self.detectors:  # Alibi: one detector, unnamed
            return []
        return [
            detector
            for index, detector in zip(self.detections, self.detectors, strict=True)
            if c is None or index < c
        ]

    @property
    def first_detector(self) -> str | None:
        first = self.first_after
        if first is None or not self.detectors:
            return None
        return self.detectors[self.detections.index(first)]


@dataclass(frozen=True)
class Summary:
    """One side's numbers for one (data set, scenario)."""

    runs: int
    detected: int
    delays: tuple[int, ...]
    false_alarms: int
    clean_steps: int
    first_detectors: Mapping[str, int]
    false_alarm_detectors: Mapping[str, int]

    @property
    def mean_delay(self) -> float:
        return statistics.fmean(self.delays) if self.delays else math.nan

    @property
    def median_delay(self) -> float:
        return statistics.median(self.delays) if self.delays else math.nan

    @property
    def false_alarms_per_1000(self) -> float:
        return self.false_alarms * 1000 / self.clean_steps if self.clean_steps else math.nan

    def as_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "detected": self.detected,
            "mean_delay": _finite_or_none(self.mean_delay),
            "median_delay": _finite_or_none(self.median_delay),
            "delays": list(self.delays),
            "false_alarms": self.false_alarms,
            "clean_steps": self.clean_steps,
            "false_alarms_per_1000": _finite_or_none(self.false_alarms_per_1000),
            "first_detectors": dict(self.first_detectors),
            "false_alarm_detectors": dict(self.false_alarm_detectors),
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def summarise(outcomes: Sequence[RunOutcome]) -> Summary:
    delays = tuple(d for d in (o.delay for o in outcomes) if d is not None)
    firsts = Counter(f for f in (o.first_detector for o in outcomes) if f is not None)
    return Summary(
        runs=len(outcomes),
        detected=len(delays),
        delays=delays,
        false_alarms=sum(o.false_alarms for o in outcomes),
        clean_steps=sum(o.clean_steps for o in outcomes),
        first_detectors=dict(firsts),
        false_alarm_detectors=dict(Counter(d for o in outcomes for d in o.false_alarm_detectors)),
    )


# -- Alibi, in its own environment -----------------------------------------------------------


def alibi_command(streams: Path, out: Path, n_bootstraps: int | None) -> list[str]:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        raise SystemExit("uv is needed to run Alibi Detect in an environment of its own")
    command = [uv, "run", "--isolated", "--no-project", "--python", "3.11"]
    for requirement in ALIBI_REQUIREMENTS:
        command += ["--with", requirement]
    command += ["python", str(ALIBI_SCRIPT), str(streams), str(out)]
    if n_bootstraps is not None:
        command += ["--n-bootstraps", str(n_bootstraps)]
    return command


def run_alibi(streams: Path, out: Path, n_bootstraps: int | None) -> dict[str, Any]:
    command = alibi_command(streams, out, n_bootstraps)
    print("alibi: " + " ".join(command), flush=True)
    # Its own environment: nothing of this one's (the project venv would be layered under it).
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PYTHONWARNINGS"] = "ignore::FutureWarning,ignore::UserWarning"
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    print(f"alibi: done in {time.perf_counter() - started:.1f}s", flush=True)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def alibi_outcomes(result: Mapping[str, Any], prepared: Prepared) -> list[RunOutcome]:
    runs = result["datasets"][prepared.dataset.name]["runs"]
    return [RunOutcome(run, list(runs[run.run_id]["detections"])) for run in prepared.runs]


# -- the real drift-sensing service ----------------------------------------------------------


def domain_of(run: Run) -> str:
    return f"bench-{run.run_id}"


def arming_events(store: ArtifactStore, prepared: Prepared) -> list[MeshEvent]:
    """What the mesh publishes when a model goes into production, once per run's domain."""
    snapshot = prepared.snapshot
    dataset_bytes = canonical_json(snapshot)
    dataset_ref = store.put_bytes(dataset_bytes)
    events: list[MeshEvent] = []
    for run in prepared.runs:
        domain = domain_of(run)
        profile = prepared.profile.model_copy(update={"domain": domain})
        profile_ref = store.put_document(profile)
        events.append(
            DatasetVersioned(
                domain=domain,
                dataset_version=prepared.dataset_version,
                artifact=dataset_ref,
                labels=snapshot.labels,
                taxonomy_version=snapshot.taxonomy_version,
                recipe_version=snapshot.recipe.recipe_version,
                base_model=snapshot.base_model,
                counts=counts_of(snapshot),
                change_kind="recipe",
                cause_event_ids=("bench-drift",),
            )
        )
        events.append(
            ModelReady(
                domain=domain,
                model_version=prepared.model_version,
                # drift-sensing does not load the model: the profile stands in for its manifest.
                artifact=profile_ref,
                labels=prepared.profile.labels,
                lineage=Lineage(
                    dataset_version=prepared.dataset_version,
                    dataset_sha256=hashlib.sha256(dataset_bytes).hexdigest(),
                    recipe_version=snapshot.recipe.recipe_version,
                    base_model=snapshot.base_model,
                    code_version="bench-drift",
                    seed=snapshot.recipe.training.seed,
                    correlation_id="bench-drift",
                ),
                reference_profile=profile_ref,
            )
        )
    return events


def record_events(prepared: Prepared, run: Run) -> Iterator[MeshEvent]:
    """The run's records as serving and a user would publish them, in order."""
    domain = domain_of(run)
    for record in run.records:
        scored = prepared.pool[record.pool_index]
        yield InferenceLogged(
            domain=domain,
            prediction_id=record.prediction_id,
            model_version=prepared.model_version,
            label=scored.label,
            confidence=scored.confidence,
            margin=scored.margin,
            embedding_sketch=scored.sketch,
            text=scored.text,
        )
        if record.feedback_label is not None:
            yield FeedbackSubmitted(
                domain=domain,
                prediction_id=record.prediction_id,
                text=scored.text,
                true_label=record.feedback_label,
                predicted_label=scored.label,
            )


def drift_settings(bootstrap: str, artifact_root: str, state_dir: Path) -> DriftSettings:
    if ALERT_COOLDOWN_SETTING not in DriftSettings.model_fields:
        raise SystemExit(
            f"DriftSettings has no {ALERT_COOLDOWN_SETTING}: this drift-sensing is not the "
            "rewritten service with calibrated online detectors (bench-drift needs it)"
        )
    overrides: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "artifact_root": artifact_root,
        "state_dir": state_dir,
        ALERT_COOLDOWN_SETTING: 0.0,  # every alarm published: each one is measured
    }
    return DriftSettings(**overrides)


class AlarmReader:
    """Reads `mesh.drift.v1` from its beginning, keeping the bench's `drift.detected`."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.alarms: list[DriftDetected] = []
        self.last_alarm_at = time.monotonic()
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    try:
                        event = decode_event(read_envelope(record.headers), record.value)
                    except DecodeError:
                        continue
                    if isinstance(event, DriftDetected) and event.domain.startswith("bench-"):
                        self.alarms.append(event)
                        self.last_alarm_at = time.monotonic()

    async def positions(self) -> dict[int, int]:
        assigned = self._consumer.assignment()
        return {tp.partition: await self._consumer.position(tp) for tp in assigned}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


async def group_lag(bootstrap: str, group: str, topics: Sequence[str]) -> int:
    """Records of `topics` the consumer group has not committed yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    lag = 0
    for topic in topics:
        for partition, end in (await end_offsets(bootstrap, topic)).items():
            offset = committed.get(TopicPartition(topic, partition))
            lag += end - (offset.offset if offset is not None and offset.offset >= 0 else 0)
    return lag


@dataclass
class MeshReplay:
    alarms: list[DriftDetected]
    records: int
    publish_seconds: float
    drain_seconds: float
    arm_seconds: float


async def replay(prepared: Sequence[Prepared], work: Path, bootstrap: str) -> MeshReplay:
    # drift-sensing logs a WARNING per alarm; the bench reads every alarm from the topic.
    logging.getLogger("adaptmesh_drift").setLevel(logging.ERROR)
    artifact_root = f"file://{work / 'artifacts'}"
    store = ArtifactStore(artifact_root)
    user_settings = MeshSettings(kafka_bootstrap_servers=bootstrap, artifact_root=artifact_root)
    async with create_app(user_settings, "bench-drift") as user:
        # Armed before the service starts: it reads model.ready to its end before its first
        # batch, so no record is judged before its domain's model is known.
        started = time.perf_counter()
        arming = [event for item in prepared for event in arming_events(store, item)]
        await user.publish_many(arming)
        settings = drift_settings(bootstrap, artifact_root, work / "drift-state")
        service = build_app(settings)
        reader = AlarmReader(bootstrap, service.topic(Stream.DRIFT))
        await reader.start()
        async with service:
            arm_seconds = time.perf_counter() - started
            print(
                f"mesh: {len(arming) // 2} domains armed, drift-sensing up "
                f"({arm_seconds:.1f}s); publishing the runs",
                flush=True,
            )
            started = time.perf_counter()
            count = await _publish_runs(user, prepared)
            publish_seconds = time.perf_counter() - started
            print(
                f"mesh: {count:,} records published in {publish_seconds:.1f}s; waiting for "
                "drift-sensing to consume them",
                flush=True,
            )
            await _drained(service, reader, bootstrap)
            drain_seconds = time.perf_counter() - started
        await reader.stop()
    return MeshReplay(reader.alarms, count, publish_seconds, drain_seconds, arm_seconds)


async def _publish_runs(user: MeshApp, prepared: Sequence[Prepared]) -> int:
    count = 0
    chunk: list[MeshEvent] = []
    for item in prepared:
        for run in item.runs:
            for event in record_events(item, run):
                chunk.append(event)
                if len(chunk) >= PUBLISH_CHUNK:
                    await user.publish_many(chunk)
                    count += len(chunk)
                    chunk = []
    if chunk:
        await user.publish_many(chunk)
        count += len(chunk)
    return count


async def _drained(service: MeshApp, reader: AlarmReader, bootstrap: str) -> None:
    """Until the service's group has committed every inference and feedback record and the
    reader has read `mesh.drift.v1` to its end with no new alarm for `QUIET_SECONDS`."""
    topics = [service.topic(Stream.INFERENCE), service.topic(Stream.FEEDBACK)]
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    reported = time.monotonic()
    while time.monotonic() < deadline:
        lag = await group_lag(bootstrap, service.consumer_group, topics)
        if lag == 0:
            ends = await end_offsets(bootstrap, reader.topic)
            positions = await reader.positions()
            read_all = all(positions.get(p, 0) >= end for p, end in ends.items())
            if read_all and time.monotonic() - reader.last_alarm_at >= QUIET_SECONDS:
                return
        if time.monotonic() - reported >= 15:
            print(f"  ... {lag:,} records still to consume, {len(reader.alarms)} alarms so far")
            reported = time.monotonic()
        await asyncio.sleep(0.5)
    raise TimeoutError(f"drift-sensing did not consume the runs in {DRAIN_TIMEOUT_SECONDS:.0f}s")


def mesh_outcomes(alarms: Sequence[Sequence[Any]], prepared: Prepared) -> list[RunOutcome]:
    """Each run's alarms, placed at the index of the record that tipped them."""
    where = {
        record.prediction_id: (run.run_id, index)
        for run in prepared.runs
        for index, record in enumerate(run.records)
    }
    found: dict[str, list[tuple[int, str]]] = {run.run_id: [] for run in prepared.runs}
    for _, trigger, detector in alarms:
        place = where.get(trigger or "")
        if place is not None:
            found[place[0]].append((place[1], detector))
    outcomes = []
    for run in prepared.runs:
        ordered = sorted(found[run.run_id])
        outcomes.append(RunOutcome(run, [i for i, _ in ordered], [d for _, d in ordered]))
    return outcomes


def mesh_side(work: Path, prepared: Sequence[Prepared], out: Path) -> dict[str, Any]:
    """Replay the runs through drift-sensing; its alarms (domain, trigger prediction id,
    detector) are written to `out` at once, so the report can be made again from them."""
    with EmbeddedKafka(jars_dir=ensure_kafka_jars(), data_dir=work / "kafka") as kafka:
        print(f"mesh: Kafka up at {kafka.bootstrap_servers}", flush=True)
        result = asyncio.run(replay(prepared, work, kafka.bootstrap_servers))
    print(
        f"mesh: {len(result.alarms)} drift.detected read; {result.records:,} records consumed "
        f"{result.drain_seconds:.1f}s after the first was published "
        f"({result.records / result.drain_seconds:,.0f} records/s)",
        flush=True,
    )
    raw = {
        "records": result.records,
        "arm_seconds": result.arm_seconds,
        "publish_seconds": result.publish_seconds,
        "drain_seconds": result.drain_seconds,
        "alarms": [[a.domain, a.trigger_prediction_id, a.detector] for a in result.alarms],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(raw))
    return raw


# -- the report ------------------------------------------------------------------------------


def by_scenario(outcomes: Sequence[RunOutcome]) -> dict[Scenario, list[RunOutcome]]:
    grouped: dict[Scenario, list[RunOutcome]] = {s: [] for s in SCENARIOS}
    for outcome in outcomes:
        grouped[outcome.run.scenario].append(outcome)
    return grouped


def _delay(summary: Summary | None) -> str:
    if summary is None:
        return "n/a"
    if not summary.delays:
        return "-"
    return f"{summary.mean_delay:.1f} ({summary.median_delay:.0f})"


def _rate(summary: Summary | None) -> str:
    return "n/a" if summary is None else f"{summary.detected}/{summary.runs}"


def _fa(summary: Summary | None) -> str:
    if summary is None:
        return "n/a"
    return f"{summary.false_alarms_per_1000:.2f} ({summary.false_alarms})"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))


def report(
    prepared: Sequence[Prepared],
    ours: Mapping[str, Sequence[RunOutcome]] | None,
    alibi: Mapping[str, Sequence[RunOutcome]],
    policy: DriftPolicy,
) -> dict[str, Any]:
    promise = 1000 / policy.ert
    print(
        f"\nERT {policy.ert} (promise: at most {promise:.2f} false alarms per 1,000 no-drift "
        f"steps), window {policy.window}. Delay = records from the change point to the first "
        "alarm at or after it (1 = the first changed record tipped it): mean (median) over "
        "detected runs. FA/1000 = false alarms per 1,000 clean steps (no-drift runs; before "
        "the change point in the others), count in brackets."
    )
    results: dict[str, Any] = {"ert": policy.ert, "window": policy.window, "datasets": {}}
    cell_ratios: list[float] = []
    cell_delays: list[tuple[float, float]] = []  # (ours, Alibi's) mean delay per cell
    clean: dict[tuple[str, str], list[Summary]] = defaultdict(list)
    no_drift: dict[str, list[Summary]] = {"ours": [], "alibi": []}
    for item in prepared:
        name = item.dataset.name
        ours_by = by_scenario(ours[name]) if ours is not None else None
        alibi_by = by_scenario(alibi[name])
        print(
            f"\n{name}: {item.dataset.source}; model {item.model_version}, eval accuracy "
            f"{item.profile.accuracy:.3f} on {len(item.profile.examples)} reference examples"
        )
        header = (
            f"  {'scenario':<15}{'runs':>5}  {'ours: detected':>14} {'delay':>12} "
            f"{'FA/1000':>12}  {'alibi: detected':>15} {'delay':>12} {'FA/1000':>12}"
            f"  {'ratio':>6}"
        )
        print(header)
        per_scenario: dict[str, Any] = {}
        for scenario in SCENARIOS:
            mine = summarise(ours_by[scenario]) if ours_by is not None else None
            theirs = summarise(alibi_by[scenario]) if scenario != "feedback-noise" else None
            ratio = math.nan
            if mine is not None and theirs is not None and scenario in ALIBI_SCENARIOS:
                ratio = mine.mean_delay / theirs.mean_delay
                cell_ratios.append(ratio)
                cell_delays.append((mine.mean_delay, theirs.mean_delay))
            if scenario == "no-drift":
                if mine is not None:
                    no_drift["ours"].append(mine)
                if theirs is not None:
                    no_drift["alibi"].append(theirs)
            shown = f"{ratio:.2f}" if math.isfinite(ratio) else "-"
            runs = len(alibi_by[scenario])
            print(
                f"  {scenario:<15}{runs:>5}  {_rate(mine) if scenario != 'no-drift' else '-':>14} "
                f"{_delay(mine) if scenario != 'no-drift' else '-':>12} {_fa(mine):>12}  "
                f"{_rate(theirs) if scenario != 'no-drift' else '-':>15} "
                f"{_delay(theirs) if scenario != 'no-drift' else '-':>12} {_fa(theirs):>12}"
                f"  {shown:>6}"
            )
            if mine is not None and mine.first_detectors:
                print(f"{'':<24}first alarm after the change: {_counts(mine.first_detectors)}")
            if mine is not None and mine.false_alarm_detectors:
                print(f"{'':<24}false alarms: {_counts(mine.false_alarm_detectors)}")
            if mine is not None:
                clean[("ours", name)].append(mine)
            if scenario != "feedback-noise":
                clean[("alibi", name)].append(summarise(alibi_by[scenario]))
            per_scenario[scenario] = {
                "ours": mine.as_json() if mine is not None else None,
                "alibi": theirs.as_json() if theirs is not None else None,
                "ratio": _finite_or_none(ratio),
            }
        results["datasets"][name] = per_scenario
    print()
    for side, summaries in no_drift.items():
        if not summaries:
            continue
        alarms = sum(s.false_alarms for s in summaries)
        steps = sum(s.clean_steps for s in summaries)
        rate = alarms * 1000 / steps
        expected = steps / policy.ert
        print(
            f"{side}: {alarms} false alarms in {steps:,} no-drift steps = {rate:.2f} per 1,000 "
            f"(the ERT promises <= {promise:.2f}: {expected:.0f} +- {math.sqrt(expected):.0f} "
            f"alarms) -> {'within' if rate <= promise else 'ABOVE'} the promise"
        )
        results[f"{side}_false_alarms_per_1000"] = rate
    for (side, name), summaries in clean.items():
        alarms = sum(s.false_alarms for s in summaries)
        steps = sum(s.clean_steps for s in summaries)
        print(
            f"{side}, {name}, every clean step (no-drift runs and every run before its change"
            f"{'' if side == 'ours' else ', feedback-noise left out'}): {alarms} false alarms "
            f"in {steps:,} steps = {alarms * 1000 / steps:.2f} per 1,000"
        )
    if ours is None:
        print("ratio: n/a (the service was not run: --skip-mesh)")
        return results
    ratio = statistics.fmean(cell_ratios) if cell_ratios else math.nan
    results["ratio"] = _finite_or_none(ratio)
    ours_rate = results.get("ours_false_alarms_per_1000", math.nan)
    met = ratio <= TARGET_RATIO and ours_rate <= promise
    pooled = sum(o for o, _ in cell_delays) / sum(a for _, a in cell_delays)
    results["pooled_ratio"] = _finite_or_none(pooled)
    print(
        f"(the same cells pooled: sum of our mean delays / sum of Alibi's = {pooled:.2f}; "
        f"per cell {', '.join(f'{r:.2f}' for r in cell_ratios)})"
    )
    print(f"ratio: {ratio:.2f}")
    print(
        f"target (ratio <= {TARGET_RATIO}, our no-drift false alarms <= {promise:.2f} per "
        f"1,000): {'met' if met else 'NOT met'} (ratio {ratio:.2f} = mean over "
        f"{len(cell_ratios)} data set x scenario cells of our mean delay / Alibi's; false "
        f"alarms {ours_rate:.2f} per 1,000)"
    )
    return results


# -- main ------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> None:
    names, plan, policy = drift_streams.plan_from(args)
    print(
        f"streams: data sets {', '.join(names)}; ERT {policy.ert}, window {policy.window}; "
        f"{plan.no_drift_runs} no-drift runs of {plan.no_drift_length}, {plan.runs} runs a "
        f"shift scenario ({plan.pre} records before the change)",
        flush=True,
    )
    prepared = drift_streams.build(names, plan, policy, args.streams)
    if args.alibi_results is not None:
        alibi_result = json.loads(args.alibi_results.read_text())
        print(f"alibi: results read from {args.alibi_results}", flush=True)
    else:
        alibi_result = run_alibi(args.streams, ALIBI_OUT, args.n_bootstraps)
    alibi = {item.dataset.name: alibi_outcomes(alibi_result, item) for item in prepared}
    ours: dict[str, list[RunOutcome]] | None = None
    mesh: dict[str, Any] | None = None
    if args.ours_results is not None:
        mesh = json.loads(args.ours_results.read_text())
        print(f"mesh: drift-sensing's alarms read from {args.ours_results}", flush=True)
    elif not args.skip_mesh:
        with tempfile.TemporaryDirectory(prefix="bench-drift-") as work:
            mesh = mesh_side(Path(work), prepared, OURS_OUT)
    if mesh is not None:
        ours = {item.dataset.name: mesh_outcomes(mesh["alarms"], item) for item in prepared}
        placed = sum(len(o.detections) for outcomes in ours.values() for o in outcomes)
        if placed != len(mesh["alarms"]):
            print(f"mesh: {len(mesh['alarms']) - placed} alarms not placed on a run record")
    results = report(prepared, ours, alibi, policy)
    results["alibi"] = {
        k: alibi_result[k] for k in ("detector", "versions", "n_bootstraps") if k in alibi_result
    }
    if mesh is not None:
        results["mesh"] = {k: v for k, v in mesh.items() if k != "alarms"}
    RESULTS_OUT.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_OUT.write_text(json.dumps(results, indent=1))
    print(f"(results in {RESULTS_OUT})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    drift_streams.plan_arguments(parser)
    parser.add_argument("--n-bootstraps", type=int, default=None, help="Alibi's (default 20 x ERT)")
    parser.add_argument(
        "--alibi-results",
        type=Path,
        default=None,
        help="read Alibi's detections from this file instead of running it",
    )
    parser.add_argument(
        "--ours-results",
        type=Path,
        default=None,
        help=f"read drift-sensing's alarms from this file (as {OURS_OUT} is written) instead "
        "of running the service",
    )
    parser.add_argument(
        "--skip-mesh", action="store_true", help="Alibi only (the service is not run)"
    )
    main(parser.parse_args())
    sys.exit(0)
