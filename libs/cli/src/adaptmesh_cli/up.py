"""`adaptmesh up`: the embedded mesh in the foreground, for your own Kafka clients."""

from __future__ import annotations

import os
import signal
import threading
from datetime import datetime
from pathlib import Path
from types import FrameType

from adaptmesh_embedded import EmbeddedMesh
from adaptmesh_embedded.jaeger import EmbeddedJaeger, JaegerError, start_jaeger
from adaptmesh_embedded.ports import PORTS_FILE
from adaptmesh_schemas import Stream, topic_name

DEFAULT_SERVING_PORT = 8080
"""Serving's port on a work directory's first start, when free (later starts keep theirs)."""


def run_up(
    work_dir: Path,
    *,
    serving_port: int | None,
    kafka_port: int | None,
    otlp_endpoint: str | None,
    jaeger: bool = False,
    secure: bool = False,
) -> int:
    tracing: EmbeddedJaeger | None = None
    if jaeger:
        try:
            tracing = start_jaeger(work_dir / "jaeger", _report)
        except JaegerError as error:
            print(f"--jaeger: {error}", flush=True)
            return 1
        otlp_endpoint = tracing.otlp_endpoint
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"starting the adaptmesh mesh in {work_dir} (broker, then five services) ...", flush=True)
    try:
        with EmbeddedMesh(
            work_dir,
            serving_port=serving_port,
            kafka_port=kafka_port,
            preferred_serving_port=DEFAULT_SERVING_PORT,
            otlp_endpoint=otlp_endpoint,
            report=_report,
            secure=secure,
            # Services take their settings from the operator's environment (MESH_*).
            operator_settings=os.environ,
        ) as mesh:
            print(
                "\nadaptmesh is up\n"
                f"  Kafka bootstrap:  {mesh.bootstrap_servers}\n"
                f"  publish changes:  {topic_name(Stream.CHANGES)} (CloudEvents binary mode)\n"
                f"  models ready:     {topic_name(Stream.MODELS_READY)}\n"
                f"  serving:          {mesh.serving_url}/v1/domains/<domain>/predict\n"
                f"  traces:           {_trace_target(otlp_endpoint, tracing)}\n"
                f"  artifacts:        {mesh.artifact_root}\n"
                f"  service logs:     {mesh.log_dir}\n"
                f"  ports kept in:    {mesh.work_dir / PORTS_FILE} (--kafka-port, "
                "--serving-port change them)\n"
                "A service or broker that crashes is restarted and reported here. "
                "Ctrl-C stops everything.",
                flush=True,
            )
            if secure:
                print(_secure_clients(mesh), flush=True)
            while not stop.wait(0.5):
                pass  # the supervisor thread restarts and reports; this one awaits Ctrl-C
            print("stopping: services drain and commit, then the broker stops ...", flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if tracing is not None:
            tracing.stop()
    print("stopped; no process left behind", flush=True)
    return 0


def _report(message: str) -> None:
    print(f"{datetime.now().astimezone():%H:%M:%S} {message}", flush=True)


def _secure_clients(mesh: EmbeddedMesh) -> str:
    user_env = mesh.credentials.env_file("user")
    return (
        "Kafka is locked down: TLS (CA generated into the work directory), SCRAM-SHA-512, ACLs.\n"
        "  as the user principal (writes changes and feedback, reads the rest), e.g. for the CLI:\n"
        f"    set -a; . {user_env}; set +a\n"
        "  which sets MESH_KAFKA_BOOTSTRAP_SERVERS, MESH_KAFKA_SECURITY_PROTOCOL=SASL_SSL,\n"
        "  MESH_KAFKA_SASL_MECHANISM=SCRAM-SHA-512, MESH_KAFKA_SASL_USERNAME=user,\n"
        f"  MESH_KAFKA_SASL_PASSWORD and MESH_KAFKA_SSL_CAFILE={mesh.credentials.ca_file}\n"
        f"  (other clients: SASL_SSL + SCRAM-SHA-512, CA {mesh.credentials.ca_file}; every "
        f"principal's password is in {user_env.parent}, readable by you only)"
    )


def _trace_target(otlp_endpoint: str | None, jaeger: EmbeddedJaeger | None = None) -> str:
    if jaeger is not None:
        return (
            f"Jaeger UI {jaeger.ui_url} (OTLP/HTTP {jaeger.otlp_endpoint}); a change's trace: "
            f"{jaeger.trace_url('<trace id of its traceparent>')}"
        )
    if otlp_endpoint:
        return f"OTLP/HTTP to {otlp_endpoint} (Jaeger UI on :16686 if that is Jaeger)"
    return "not exported (set OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://127.0.0.1:4318)"
