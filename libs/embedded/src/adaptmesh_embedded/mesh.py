"""The whole mesh on one machine: a real Kafka broker and the five services as processes.

`adaptmesh up`, `make demo` and the end-to-end tests all start the mesh through this one
supervisor, so what a test proves is what a user runs. Every child dies with the supervisor
(see `processes.py`); `stop()` drains services with SIGTERM before the broker goes.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from adaptmesh_embedded.kafka import EmbeddedKafka, ensure_kafka_jars
from adaptmesh_embedded.processes import ManagedProcess


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    module: str


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("ingestion", "adaptmesh_ingestion"),
    ServiceSpec("drift-sensing", "adaptmesh_drift"),
    ServiceSpec("training", "adaptmesh_training"),
    ServiceSpec("evaluation-gate", "adaptmesh_gate"),
    ServiceSpec("serving", "adaptmesh_serving"),
)
SERVING = "serving"


class MeshStartError(RuntimeError):
    """A service or the broker did not come up; the message quotes its log."""


@dataclass(slots=True)
class RunningService:
    spec: ServiceSpec
    instance: int
    process: ManagedProcess
    health_url: str
    log_path: Path

    @property
    def label(self) -> str:
        return f"{self.spec.name}#{self.instance}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str, expected: int) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL
            status: int = response.status
            return status == expected
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class EmbeddedMesh:
    """Kafka (embedded, unless `bootstrap_servers` names one) plus every service's processes."""

    def __init__(
        self,
        work_dir: Path,
        *,
        bootstrap_servers: str | None = None,
        instances: Mapping[str, int] | None = None,
        serving_port: int | None = None,
        otlp_endpoint: str | None = None,
        topic_prefix: str = "",
        extra_env: Mapping[str, str] | None = None,
        startup_timeout: float = 180.0,
        stop_timeout: float = 60.0,
    ) -> None:
        self.work_dir = work_dir.resolve()
        self.instances = {spec.name: 1 for spec in SERVICES} | dict(instances or {})
        self.serving_port = serving_port or free_port()
        self.otlp_endpoint = otlp_endpoint
        self.topic_prefix = topic_prefix
        self.extra_env = dict(extra_env or {})
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._external_bootstrap = bootstrap_servers
        self._kafka: EmbeddedKafka | None = None
        self.services: list[RunningService] = []

    @property
    def bootstrap_servers(self) -> str:
        if self._external_bootstrap:
            return self._external_bootstrap
        if self._kafka is None:
            raise MeshStartError("the mesh is not running")
        return self._kafka.bootstrap_servers

    @property
    def serving_url(self) -> str:
        return f"http://127.0.0.1:{self.serving_port}"

    @property
    def artifact_root(self) -> str:
        return f"file://{self.work_dir}/artifacts"

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "logs"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Broker first, then every service instance at once; returns when all are healthy."""
        if not self._external_bootstrap:
            self._kafka = EmbeddedKafka(ensure_kafka_jars(), self.work_dir / "kafka")
            self._kafka.start()
        try:
            for spec in SERVICES:
                for instance in range(1, self.instances.get(spec.name, 0) + 1):
                    self.services.append(self._launch(spec, instance))
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise

    def add_instance(self, service: str) -> RunningService:
        """Start one more instance of `service` (scaling out by consumer group)."""
        spec = next(s for s in SERVICES if s.name == service)
        running = self._launch(spec, 1 + sum(1 for s in self.services if s.spec == spec))
        self.services.append(running)
        self._wait_until_healthy([running])
        return running

    def stop(self) -> None:
        """SIGTERM every service (they drain and commit), then stop the broker."""
        for service in self.services:
            service.process.signal_stop()
        for service in self.services:
            service.process.stop(self.stop_timeout)
        self.services = []
        if self._kafka is not None:
            self._kafka.stop()
            self._kafka = None

    def environment(self, spec: ServiceSpec, instance: int, health_port: int) -> dict[str, str]:
        """What a service process is told: mesh settings, OTel and library switches."""
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("MESH_", "OTEL_"))
        }
        env = inherited | {
            "MESH_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "MESH_TOPIC_PREFIX": self.topic_prefix,
            "MESH_ARTIFACT_ROOT": self.artifact_root,
            "MESH_STATE_DIR": str(self.work_dir / "state" / f"{spec.name}-{instance}"),
            "MESH_HEALTH_PORT": str(health_port),
            "OTEL_SERVICE_NAME": spec.name,
            # Models come from installed packages or local paths only.
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            # Idle OpenMP threads spinning on a busy 2-core box made training up to 40x slower.
            "OMP_WAIT_POLICY": "PASSIVE",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        }
        if spec.name == SERVING:
            env["MESH_SERVING_PORT"] = str(self.serving_port)
        if self.otlp_endpoint:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.otlp_endpoint
            env["OTEL_BSP_SCHEDULE_DELAY"] = "500"
        return env | self.extra_env

    def _launch(self, spec: ServiceSpec, instance: int) -> RunningService:
        health_port = free_port()
        log_path = self.log_dir / f"{spec.name}-{instance}.log"
        process = ManagedProcess(
            f"{spec.name}-{instance}",
            [sys.executable, "-m", spec.module],
            cwd=self.work_dir,
            env=self.environment(spec, instance, health_port),
            log_path=log_path,
        )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        process.start()
        health_url = (
            f"{self.serving_url}/ready"
            if spec.name == SERVING
            else f"http://127.0.0.1:{health_port}/health"
        )
        return RunningService(spec, instance, process, health_url, log_path)

    def _wait_until_healthy(self, services: list[RunningService] | None = None) -> None:
        waiting = list(services if services is not None else self.services)
        deadline = time.monotonic() + self.startup_timeout
        while waiting:
            for service in list(waiting):
                if not service.process.is_running:
                    raise MeshStartError(
                        f"{service.label} exited during start-up "
                        f"(code {service.process.wait(0)}); its log:\n{_tail(service.log_path)}"
                    )
                expected = 200 if service.spec.name == SERVING else 204
                if _answers(service.health_url, expected):
                    waiting.remove(service)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(s.label for s in waiting)
                raise MeshStartError(f"not healthy after {self.startup_timeout:.0f} s: {names}")
            time.sleep(0.3)
