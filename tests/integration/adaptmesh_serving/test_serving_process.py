"""`adaptmesh-serving` as operators run it: one trace from model.ready to the first prediction,
readiness, and a clean drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from adaptmesh_embedded.ports import free_port
from adaptmesh_kit import ArtifactStore, MeshSettings, provision_topics
from adaptmesh_ml import TrainedModel
from adaptmesh_schemas import Stream, topic_name
from tests.integration.adaptmesh_serving.conftest import DOMAIN, saved_model_ready
from tests.meshtest import body_json, read_records, record_of, stop_with_sigterm
from tests.otlp_collector import OtlpCollector

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[3]


async def wait_until_ready(client: httpx.AsyncClient, service: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(180):
        while service.poll() is None:
            try:
                if (await client.get("/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await asyncio.sleep(0.2)
    raise AssertionError(f"serving exited with {service.returncode} before it was ready")


@pytest.mark.timeout(600)
async def test_the_first_prediction_joins_the_model_ready_trace_and_sigterm_drains(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, trained_model: TrainedModel
) -> None:
    prefix = f"t-{unique_name}."
    artifact_root = f"file://{tmp_path}/artifacts"
    await provision_topics(
        MeshSettings(
            kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, topic_partitions=1
        )
    )
    ready = saved_model_ready(ArtifactStore(artifact_root), trained_model, "v1")
    headers, body, _ = record_of(ready)
    trace_id = os.urandom(16).hex()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic_name(Stream.MODELS_READY, prefix),
            body,
            key=DOMAIN.encode(),
            headers=[*headers, ("traceparent", f"00-{trace_id}-{os.urandom(8).hex()}-01".encode())],
        )
    finally:
        await producer.stop()

    port = free_port()
    with OtlpCollector() as collector:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "OTEL_"))},
            "HF_HUB_OFFLINE": "1",
            "MESH_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "MESH_TOPIC_PREFIX": prefix,
            "MESH_TOPIC_PARTITIONS": "1",
            "MESH_ARTIFACT_ROOT": artifact_root,
            "MESH_SERVING_PORT": str(port),
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        command = [str(Path(sys.executable).with_name("adaptmesh-serving"))]
        service = subprocess.Popen(command, cwd=tmp_path, env=env)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await wait_until_ready(client, service)
                assert (await client.get("/health")).status_code == 204
                first = await client.post(f"/v1/domains/{DOMAIN}/predict", json={"text": "oil"})
                assert first.json()["model_version"] == "v1"
                last = await client.post(f"/v1/domains/{DOMAIN}/predict", json={"text": "wheat"})
                last_id = last.json()["prediction_id"]

            await stop_with_sigterm(service)  # the drain's effects are checked below
        finally:
            if service.poll() is None:
                service.kill()
                service.wait()

        # The log of the prediction answered just before SIGTERM was still published.
        await read_records(
            kafka_bootstrap,
            topic_name(Stream.INFERENCE, prefix),
            1,
            where=lambda r: body_json(r)["prediction_id"] == last_id,
        )
        spans = {s.name: s for s in collector.in_trace(trace_id)}
        process = spans[f"{topic_name(Stream.MODELS_READY, prefix)} process"]
        predict = spans[f"predict {DOMAIN}"]
        publish = spans[f"{topic_name(Stream.INFERENCE, prefix)} publish"]
        assert {process.service, predict.service, publish.service} == {"serving"}
        assert predict.parent_span_id == process.span_id
        assert predict.attributes["adaptmesh.model_version"] == "v1"
        assert len([s for s in collector.in_trace(trace_id) if s.name == predict.name]) == 1
