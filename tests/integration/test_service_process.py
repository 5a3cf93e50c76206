"""A service process as operators run it: health, OTLP export by OTEL_*, causality, shutdown."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from adaptmesh_embedded.ports import free_port
from adaptmesh_schemas import Stream, topic_name
from tests.integration.test_kit_on_kafka import batch
from tests.meshtest import eventually, read_records, record_of, stop_with_sigterm
from tests.otlp_collector import OtlpCollector

REPO = Path(__file__).resolve().parents[2]


def health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            status: int = response.status
            return status
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


async def test_service_process_health_tracing_causality_and_clean_shutdown(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    prefix = f"t-{unique_name}."
    port = free_port()
    trace_id = os.urandom(16).hex()
    traceparent = f"00-{trace_id}-{os.urandom(8).hex()}-01"
    with OtlpCollector() as collector:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "OTEL_"))},
            "PYTHONPATH": str(REPO),
            "MESH_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "MESH_TOPIC_PREFIX": prefix,
            "MESH_TOPIC_PARTITIONS": "2",
            "MESH_HEALTH_PORT": str(port),
            "MESH_STATE_DIR": str(tmp_path / "state"),
            "MESH_ARTIFACT_ROOT": f"file://{tmp_path}/artifacts",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        service = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.probe_service"], cwd=REPO, env=env
        )
        try:
            await eventually(lambda: health(port) == 204 or service.poll() is not None, 60)
            assert service.poll() is None, "the service died at start-up"

            # The user's change, published with plain aiokafka and its own trace.
            headers, body, sent = record_of(batch("fin-news", "traced"))
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            try:
                await producer.send_and_wait(
                    topic_name(Stream.CHANGES, prefix),
                    body,
                    key=b"fin-news",
                    headers=[*headers, ("traceparent", traceparent.encode())],
                )
            finally:
                await producer.stop()
            [consequence] = await read_records(
                kafka_bootstrap, topic_name(Stream.RETRAIN, prefix), 1
            )
            consequence_headers = dict(consequence.headers)
            assert consequence_headers["ce_correlationid"].decode() == sent.id
            assert consequence_headers["ce_causationid"].decode() == sent.id
            assert consequence_headers["traceparent"].decode().split("-")[1] == trace_id

            await stop_with_sigterm(service)  # the drain's effects are checked below
        finally:
            if service.poll() is None:
                service.kill()
                service.wait()

        spans = collector.in_trace(trace_id)
        assert {s.service for s in spans} == {"probe-service"}
        names = {s.name for s in spans}
        assert f"{topic_name(Stream.CHANGES, prefix)} process" in names
        assert f"{topic_name(Stream.RETRAIN, prefix)} publish" in names

    # Offsets of the handled record were committed on the way down.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets("adaptmesh.probe-service")
        changes = topic_name(Stream.CHANGES, prefix)
        handled = sum(
            meta.offset for tp, meta in committed.items() if tp.topic == changes and meta.offset > 0
        )
        assert handled == 1
        assert TopicPartition(changes, 0) in committed or TopicPartition(changes, 1) in committed
        [config] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_name(Stream.MODELS_READY, prefix))]
        )
        entries = {entry[0]: entry[1] for entry in config.resources[0][4]}
        assert entries["cleanup.policy"] == "compact"
        described = await admin.describe_topics([changes])
        assert len(described[0]["partitions"]) == 2
    finally:
        await admin.close()
