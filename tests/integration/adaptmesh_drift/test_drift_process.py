"""`adaptmesh-drift-sensing` as operators run it: settings from the environment, `app.run()`,
the outbox relay publishing in the change's trace, a clean stop on SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from adaptmesh_drift.settings import DriftSettings
from adaptmesh_embedded.ports import free_port
from adaptmesh_schemas import Stream, topic_name
from tests.integration.adaptmesh_drift.wire import (
    header,
    new_traceparent,
    request_of,
    send,
)
from tests.integration.test_service_process import health
from tests.meshtest import eventually, read_records, stop_with_sigterm
from tests.otlp_collector import OtlpCollector
from tests.unit.adaptmesh_drift.builders import dataset

REPO = Path(__file__).resolve().parents[3]


async def test_the_service_process_publishes_the_request_in_the_changes_trace(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    prefix = f"t-{unique_name}."
    port = free_port()
    with OtlpCollector() as collector:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "OTEL_"))},
            "PYTHONPATH": str(REPO),
            "MESH_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "MESH_TOPIC_PREFIX": prefix,
            "MESH_TOPIC_PARTITIONS": "1",
            "MESH_HEALTH_PORT": str(port),
            "MESH_STATE_DIR": str(tmp_path / "state"),
            "MESH_ARTIFACT_ROOT": f"file://{tmp_path}/artifacts",
            "MESH_DRIFT_SETTLE_MS": "300",
            "MESH_DRIFT_DETECTORS": "embedding-mmd, feedback-accuracy",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        service = subprocess.Popen([sys.executable, "-m", "adaptmesh_drift"], cwd=REPO, env=env)
        try:
            await eventually(lambda: health(port) == 204 or service.poll() is not None, 60)
            assert service.poll() is None, "the service died at start-up"

            settings = DriftSettings(topic_prefix=prefix, kafka_bootstrap_servers=kafka_bootstrap)
            trace_id, traceparent = new_traceparent()
            sent = await send(
                kafka_bootstrap,
                settings,
                dataset("fin-news", "ds-1", change_kind="recipe"),
                traceparent=traceparent,
                correlation_id="the-recipe-change",
            )
            [record] = await read_records(kafka_bootstrap, topic_name(Stream.RETRAIN, prefix), 1)
            assert request_of(record).dataset_version == "ds-1"
            assert header(record, "ce_correlationid") == "the-recipe-change"
            assert header(record, "ce_causationid") == sent
            assert header(record, "traceparent").split("-")[1] == trace_id

            await stop_with_sigterm(service)
        finally:
            if service.poll() is None:
                service.kill()
                service.wait()

        spans = collector.in_trace(trace_id)
        assert {s.service for s in spans} == {"drift-sensing"}
        names = {s.name for s in spans}
        assert f"{topic_name(Stream.DATASETS, prefix)} process" in names
        assert f"{topic_name(Stream.RETRAIN, prefix)} publish" in names
