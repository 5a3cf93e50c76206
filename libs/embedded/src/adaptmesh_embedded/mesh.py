"""The whole mesh on one machine: a real Kafka broker and the five services as processes.

`adaptmesh up`, `make demo` and the end-to-end tests all start the mesh through this one
supervisor, so what a test proves is what a user runs. Every child dies with the supervisor
(see `processes.py`); `stop()` drains services with SIGTERM before the broker goes.

While the mesh runs, a supervisor thread restarts whatever crashed — a service, or the embedded
broker — with backoff, and reports it; the broker and the other services keep running. Ports
clients connect to are kept in the work directory (`ports.py`), so a restarted mesh, or a
restarted broker, is found where it was.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from adaptmesh_embedded.kafka import EmbeddedKafka, EmbeddedKafkaError, ensure_kafka_jars
from adaptmesh_embedded.ports import (
    MeshPorts,
    free_port,
    port_is_free,
    remember_ports,
    remembered_ports,
    settle_kafka_port,
    settle_serving_port,
)
from adaptmesh_embedded.processes import ManagedProcess
from adaptmesh_embedded.security import USER, KafkaCredentials, mesh_acls

_log = logging.getLogger(__name__)


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


RESTART_BACKOFF_SECONDS: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits before restarting something that crashed, by how often in a row it has crashed."""
STABLE_AFTER_SECONDS = 60.0
"""Up this long after a restart, a crash counts as the first in a row again."""


class MeshStartError(RuntimeError):
    """A service or the broker did not come up; the message quotes its log."""


def restart_delay(crashes_in_a_row: int, backoff: tuple[float, ...]) -> float:
    """The wait before the restart that follows the `crashes_in_a_row`-th crash (from 1)."""
    return backoff[min(crashes_in_a_row, len(backoff)) - 1]


@dataclass(slots=True)
class Recovery:
    """A supervised child's crash record: what the supervisor needs to restart it in time."""

    restarts: int = 0
    crashes_in_a_row: int = 0
    down_since: float | None = None
    restart_at: float | None = None
    started_at: float = field(default_factory=time.monotonic)
    awaiting_health: bool = False

    def crashed(self, now: float, backoff: tuple[float, ...]) -> float:
        """Record a crash seen at `now`; the delay before the restart."""
        if now - self.started_at >= STABLE_AFTER_SECONDS:
            self.crashes_in_a_row = 0
        self.crashes_in_a_row += 1
        self.down_since = now
        delay = restart_delay(self.crashes_in_a_row, backoff)
        self.restart_at = now + delay
        return delay

    def restarted(self, now: float) -> None:
        self.restarts += 1
        self.restart_at = None
        self.started_at = now
        self.awaiting_health = True


@dataclass(slots=True)
class RunningService:
    spec: ServiceSpec
    instance: int
    process: ManagedProcess
    health_url: str
    log_path: Path
    health_port: int = 0
    recovery: Recovery = field(default_factory=Recovery)

    @property
    def label(self) -> str:
        return f"{self.spec.name}#{self.instance}"

    def answers_health(self) -> bool:
        """Serving's readiness (200) or the kit's health endpoint (204) answers."""
        return _answers(self.health_url, 200 if self.spec.name == SERVING else 204)


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
        kafka_port: int | None = None,
        preferred_serving_port: int | None = None,
        otlp_endpoint: str | None = None,
        topic_prefix: str = "",
        extra_env: Mapping[str, str] | None = None,
        operator_settings: Mapping[str, str] | None = None,
        startup_timeout: float = 180.0,
        stop_timeout: float = 60.0,
        supervise: bool = True,
        report: Callable[[str], None] | None = None,
        restart_backoff: tuple[float, ...] = RESTART_BACKOFF_SECONDS,
        secure: bool = False,
    ) -> None:
        """Ports not given are those of the last start on `work_dir` (`ports.json`), else
        `preferred_serving_port` if free, else free ones. With `supervise`, crashed services
        and a crashed embedded broker are restarted after `restart_backoff`, each told to
        `report` (default: this module's log). `secure` locks the embedded broker down
        (TLS, a SCRAM user per service, the mesh's ACLs; see `security.py`) and gives each
        service its own credentials. `operator_settings` are `MESH_*` settings for every
        service (an operator's environment under `adaptmesh up`: batch sizes, base model
        roots, residency roots...); those the mesh chooses itself (broker, topic prefix,
        artifact root, state, ports, credentials) stay the mesh's."""
        if secure and bootstrap_servers:
            raise ValueError("secure applies to the embedded broker, not to an external one")
        self.secure = secure
        self.work_dir = work_dir.resolve()
        self.instances = {spec.name: 1 for spec in SERVICES} | dict(instances or {})
        remembered = remembered_ports(self.work_dir)
        self.serving_port = settle_serving_port(serving_port, remembered, preferred_serving_port)
        self.kafka_port = None if bootstrap_servers else settle_kafka_port(kafka_port, remembered)
        self.otlp_endpoint = otlp_endpoint
        self.topic_prefix = topic_prefix
        self.extra_env = dict(extra_env or {})
        self.operator_settings = {
            key: value
            for key, value in (operator_settings or {}).items()
            # How to reach the broker is the mesh's to say, secure or not (a user.env sourced
            # in the operator's shell must not point a service at other credentials).
            if key.startswith("MESH_") and not key.startswith("MESH_KAFKA_")
        }
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.supervise = supervise
        self.report = report or (lambda message: _log.warning("%s", message))
        self.restart_backoff = restart_backoff
        self._external_bootstrap = bootstrap_servers
        self._kafka: EmbeddedKafka | None = None
        self._broker_recovery = Recovery()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.services: list[RunningService] = []

    @property
    def bootstrap_servers(self) -> str:
        if self._external_bootstrap:
            return self._external_bootstrap
        if self._kafka is None:
            raise MeshStartError("the mesh is not running")
        return self._kafka.bootstrap_servers

    @property
    def broker_pid(self) -> int | None:
        """PID of the embedded broker's JVM (None on an external broker)."""
        return None if self._kafka is None else self._kafka.pid

    @property
    def broker_restarts(self) -> int:
        return self._broker_recovery.restarts

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
        self._check_ports_free()
        self._stopping.clear()
        if not self._external_bootstrap:
            self._kafka = self._start_broker()
            self.kafka_port = self._kafka.port
        try:
            for spec in SERVICES:
                for instance in range(1, self.instances.get(spec.name, 0) + 1):
                    self.services.append(self._launch(spec, instance))
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        remember_ports(self.work_dir, MeshPorts(serving=self.serving_port, kafka=self.kafka_port))
        if self.supervise:
            self._supervisor = threading.Thread(
                target=self._supervise, name="mesh-supervisor", daemon=True
            )
            self._supervisor.start()

    def add_instance(self, service: str) -> RunningService:
        """Start one more instance of `service` (scaling out by consumer group)."""
        spec = next(s for s in SERVICES if s.name == service)
        with self._lock:
            running = self._launch(spec, 1 + sum(1 for s in self.services if s.spec == spec))
            self.services.append(running)
        self._wait_until_healthy([running])
        return running

    def service(self, name: str, instance: int = 1) -> RunningService:
        """The running record of `name`'s `instance` (it is replaced when restarted)."""
        with self._lock:
            return next(s for s in self.services if s.spec.name == name and s.instance == instance)

    def stop(self) -> None:
        """SIGTERM every service (they drain and commit), then stop the broker."""
        self._stopping.set()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join()
        with self._lock:
            services, self.services = self.services, []
        for service in services:
            service.process.signal_stop()
        for service in services:
            service.process.stop(self.stop_timeout)
        if self._kafka is not None:
            self._kafka.stop()
            self._kafka = None

    # -- supervision ----------------------------------------------------------------------

    def _supervise(self) -> None:
        """Until `stop()`: restart what crashed, after its backoff, and report it."""
        while not self._stopping.wait(0.25):
            try:
                self._look_after_broker()
                with self._lock:
                    services = list(self.services)
                for service in services:
                    self._look_after(service)
            except Exception:  # noqa: BLE001 - logged; the loop goes on
                # The supervisor must outlive any one failed restart; it tries again.
                _log.exception("mesh supervisor: a restart failed")

    def _look_after_broker(self) -> None:
        kafka = self._kafka
        if kafka is None or kafka.is_running:
            return
        recovery, now = self._broker_recovery, time.monotonic()
        if recovery.restart_at is None:
            delay = recovery.crashed(now, self.restart_backoff)
            self.report(
                f"Kafka broker exited (code {kafka.wait(0)}); restarting it on port "
                f"{self.kafka_port} in {delay:.1f} s (see {kafka.server_log}); "
                "the services keep running and reconnect"
            )
        if now < (recovery.restart_at or now) or self._stopping.is_set():
            return
        kafka.stop()  # reaps what is left of the old JVM; idempotent
        try:
            self._kafka = self._start_broker()
        except EmbeddedKafkaError as error:
            delay = recovery.crashed(time.monotonic(), self.restart_backoff)
            self.report(f"Kafka broker did not restart ({error}); trying again in {delay:.1f} s")
            return
        recovery.restarted(time.monotonic())
        self.report(
            f"Kafka broker is back at {self.bootstrap_servers} "
            f"(restart {recovery.restarts}, down {self._down_for(recovery):.1f} s)"
        )

    def _look_after(self, service: RunningService) -> None:
        recovery, now = service.recovery, time.monotonic()
        if service.process.is_running:
            if recovery.awaiting_health and service.answers_health():
                recovery.awaiting_health = False
                self.report(
                    f"{service.label} is back (restart {recovery.restarts}, "
                    f"down {self._down_for(recovery):.1f} s)"
                )
            return
        if recovery.restart_at is None:
            delay = recovery.crashed(now, self.restart_backoff)
            self.report(
                f"{service.label} exited (code {service.process.wait(0)}); restarting it "
                f"in {delay:.1f} s; see {service.log_path}"
            )
        if now < (recovery.restart_at or now) or self._stopping.is_set():
            return
        service.process.stop(self.stop_timeout)  # reap it; idempotent
        with self._lock:
            if self._stopping.is_set() or service not in self.services:
                return
            restarted = self._launch(
                service.spec, service.instance, health_port=service.health_port
            )
            restarted.recovery = recovery
            recovery.restarted(time.monotonic())
            self.services[self.services.index(service)] = restarted

    @staticmethod
    def _down_for(recovery: Recovery) -> float:
        return time.monotonic() - (recovery.down_since or time.monotonic())

    def _start_broker(self) -> EmbeddedKafka:
        kafka = EmbeddedKafka(
            ensure_kafka_jars(), self.work_dir / "kafka", port=self.kafka_port, secure=self.secure
        )
        kafka.start()
        if self.secure:
            kafka.grant(mesh_acls(self.topic_prefix))
        return kafka

    @property
    def credentials(self) -> KafkaCredentials:
        """A secure mesh's CA, passwords and per-principal `.env` files."""
        if self._kafka is None:
            raise MeshStartError("the mesh is not running")
        return self._kafka.credentials

    def client_environment(self, principal: str = USER) -> dict[str, str]:
        """The `MESH_KAFKA_*` settings of a client of this mesh connecting as `principal`."""
        if self._kafka is None:
            return {"MESH_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers}
        return self._kafka.client_environment(principal)

    def _check_ports_free(self) -> None:
        """Fail before anything starts when a port clients expect is taken."""
        wanted = [("serving", self.serving_port, "--serving-port")]
        if not self._external_bootstrap and self.kafka_port is not None:
            wanted.append(("Kafka", self.kafka_port, "--kafka-port"))
        for what, port, option in wanted:
            if not port_is_free(port):
                raise MeshStartError(
                    f"the {what} port {port} (given, or kept in {self.work_dir}/ports.json "
                    f"from the last start) is in use; stop what holds it or pass {option}"
                )

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
        env |= self.client_environment(spec.name)
        # Tests filter the caller's MESH_* (above) so a stray setting never leaks in; an
        # operator's are passed on on purpose, but never over what the mesh chose.
        env = self.operator_settings | env
        return env | self.extra_env

    def _launch(
        self, spec: ServiceSpec, instance: int, *, health_port: int | None = None
    ) -> RunningService:
        health_port = health_port or free_port()
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
        return RunningService(spec, instance, process, health_url, log_path, health_port)

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
                if service.answers_health():
                    waiting.remove(service)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(s.label for s in waiting)
                raise MeshStartError(f"not healthy after {self.startup_timeout:.0f} s: {names}")
            time.sleep(0.3)
