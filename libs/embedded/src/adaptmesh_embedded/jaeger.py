"""Jaeger v2 on one machine, without Docker: built once from its Go module, run as a child.

Jaeger v2 is a Go program (an OpenTelemetry Collector distribution). `go install` refuses its
module (it has replace directives), but a scratch module that adds it as a tool builds it:
`go get -tool github.com/jaegertracing/jaeger/cmd/jaeger@v1.75.0`, then `go build`. That takes
minutes on two cores, so the binary is built once into a cache directory and reused. It runs
with in-memory storage, the query API and UI on one port and OTLP on two (gRPC, HTTP), all on
127.0.0.1 only; the services export OTLP/HTTP (see `adaptmesh_kit.telemetry`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from adaptmesh_embedded.kafka import find_repo_root
from adaptmesh_embedded.ports import free_port, port_is_free
from adaptmesh_embedded.processes import ManagedProcess

_log = logging.getLogger(__name__)

JAEGER_VERSION = "v1.75.0"
JAEGER_PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"
JAEGER_BINARY_ENV = "MESH_EMBEDDED_JAEGER_BINARY"
"""A Jaeger v2 binary to run as it is (built elsewhere); nothing is built then. (`MESH_EMBEDDED_`
variables belong to this library: the services' settings leave them alone.)"""
CACHE_DIR_ENV = "MESH_EMBEDDED_CACHE_DIR"
"""Where built tools are kept (default: `$XDG_CACHE_HOME/adaptmesh`, else ~/.cache/adaptmesh)."""
UI_ASSETS_ENV = "MESH_EMBEDDED_JAEGER_UI"
"""A directory of built Jaeger UI assets (default: the repository's `infra/jaeger-ui`)."""
UI_ASSETS_DIR = Path("infra/jaeger-ui")
BUILD_TIMEOUT_SECONDS = 1800.0
NO_GO_ADVICE = (
    "to get traces another way, run any OTLP/HTTP collector yourself — Jaeger's container "
    "(`docker compose up jaeger`), or a Jaeger v2 binary built on a machine with Go "
    f"(`make jaeger`; point {JAEGER_BINARY_ENV} at it) — and set "
    "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 before starting the mesh"
)


class JaegerError(RuntimeError):
    """Jaeger could not be built or did not come up; the message says why and what to do."""


class GoMissingError(JaegerError):
    """No Go toolchain to build Jaeger with (and no binary given)."""


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "adaptmesh"


def cached_binary() -> Path:
    """Where the binary is, or will be once built: the override, else the versioned cache."""
    override = os.environ.get(JAEGER_BINARY_ENV)
    if override:
        return Path(override).expanduser()
    return cache_dir() / f"jaeger-{JAEGER_VERSION}" / "jaeger"


def build_commands(output: Path) -> list[list[str]]:
    """What builds the binary, in a scratch module (shown when it fails, to run by hand)."""
    return [
        ["go", "mod", "init", "adaptmesh-jaeger-build"],
        ["go", "get", "-tool", f"{JAEGER_PACKAGE}@{JAEGER_VERSION}"],
        ["go", "build", "-o", str(output), JAEGER_PACKAGE],
    ]


def ensure_jaeger_binary(report: Callable[[str], None] | None = None) -> Path:
    """The Jaeger binary, built once into the cache on first use (minutes; `report` is told).

    Raises `GoMissingError` (its message says how to get traces another way) when there is
    neither a binary nor Go, and `JaegerError` with the failing command and its output when
    the build fails.
    """
    binary = cached_binary()
    if os.environ.get(JAEGER_BINARY_ENV):
        if not os.access(binary, os.X_OK):
            raise JaegerError(f"{JAEGER_BINARY_ENV}={binary} is not an executable file")
        return binary
    if os.access(binary, os.X_OK):
        return binary
    if shutil.which("go") is None:
        raise GoMissingError(
            f"Jaeger needs Go to build it once (go is not on PATH); {NO_GO_ADVICE}"
        )
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Two processes starting at once (tests, a demo) build once: the second waits, then reuses.
    with _exclusive(binary.parent / ".build.lock"):
        if os.access(binary, os.X_OK):
            return binary
        (report or _log.warning)(
            f"building Jaeger {JAEGER_VERSION} once into {binary} "
            "(Go; about 4 minutes on two cores, then cached)"
        )
        started = time.monotonic()
        _build(binary)
        (report or _log.warning)(f"Jaeger built in {time.monotonic() - started:.0f} s")
    return binary


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(binary: Path) -> None:
    partial = binary.with_name(binary.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="adaptmesh-jaeger-build-") as scratch:
        for command in build_commands(partial):
            try:
                result = subprocess.run(  # noqa: S603 - fixed argv, no shell
                    command,
                    cwd=scratch,
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=BUILD_TIMEOUT_SECONDS,
                )
            except subprocess.TimeoutExpired as error:
                raise JaegerError(_build_failure(command, binary, "timed out")) from error
            if result.returncode != 0:
                output = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
                raise JaegerError(
                    _build_failure(command, binary, f"exited with {result.returncode}:\n{output}")
                )
    # Renamed into place only when whole, so a killed build never leaves a broken binary.
    partial.replace(binary)


def _build_failure(command: list[str], binary: Path, what: str) -> str:
    steps = "\n".join(f"  {' '.join(step)}" for step in build_commands(binary))
    return (
        f"building Jaeger failed: `{' '.join(command)}` {what}\n"
        f"To build it by hand, in an empty directory:\n{steps}"
    )


def ui_assets() -> Path | None:
    """The built Jaeger UI to serve: the Go module carries only a placeholder page (Jaeger's
    releases embed the UI, built with npm from jaeger-ui, at build time), so the repository
    keeps a build of the matching jaeger-ui release (see infra/jaeger-ui/README.md)."""
    configured = os.environ.get(UI_ASSETS_ENV)
    if configured:
        return Path(configured).expanduser()
    root = find_repo_root()
    if root is not None and (root / UI_ASSETS_DIR / "index.html").is_file():
        return root / UI_ASSETS_DIR
    return None


@dataclass(frozen=True, slots=True)
class JaegerPorts:
    """`ui`: the UI and query API; `query_grpc`: the query gRPC API; OTLP over gRPC and HTTP."""

    ui: int
    query_grpc: int
    otlp_grpc: int
    otlp_http: int

    @classmethod
    def free(cls) -> JaegerPorts:
        chosen: list[int] = []
        for _ in range(4):  # four distinct ports: the kernel may hand one out twice in a row
            chosen.append(free_port(exclude=chosen))
        return cls(*chosen)

    @classmethod
    def usual(cls) -> JaegerPorts:
        """Jaeger's well-known ports where free (UI 16686, OTLP 4317/4318), else free ones."""

        def usual_or_free(port: int) -> int:
            return port if port_is_free(port) else free_port()

        return cls(
            usual_or_free(16686), usual_or_free(16685), usual_or_free(4317), usual_or_free(4318)
        )


def jaeger_config(ports: JaegerPorts, ui: Path | None = None) -> dict[str, object]:
    """The all-in-one setup with in-memory storage, every listener on loopback, the UI from
    `ui` (else Jaeger's placeholder page; the query API works either way).

    JSON is YAML, so this goes to `--config` as it is. Jaeger's own telemetry is off: its
    metrics would listen on the fixed port 8888 (a second Jaeger would clash), and the query
    service would trace itself to 127.0.0.1:4317 (itself, or nothing: then shutdown waits on
    the exporter's retries).
    """
    storage = "memory_store"
    query: dict[str, object] = {
        "storage": {"traces": storage},
        "http": {"endpoint": f"127.0.0.1:{ports.ui}"},
        "grpc": {"endpoint": f"127.0.0.1:{ports.query_grpc}"},
        "enable_tracing": False,
    }
    if ui is not None:
        query["ui"] = {"assets_path": str(ui)}
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info"}},
        },
        "extensions": {
            "jaeger_storage": {"backends": {storage: {"memory": {"max_traces": 100_000}}}},
            "jaeger_query": query,
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"127.0.0.1:{ports.otlp_grpc}"},
                    "http": {"endpoint": f"127.0.0.1:{ports.otlp_http}"},
                }
            }
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": storage}},
    }


class EmbeddedJaeger:
    """A Jaeger v2 all-in-one process that never outlives this one (see `processes.py`)."""

    def __init__(
        self,
        binary: Path,
        work_dir: Path,
        *,
        ports: JaegerPorts | None = None,
        ui: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        """`ports` default to Jaeger's usual ones where free (`JaegerPorts.usual`), `ui` to
        the repository's build of the Jaeger UI (`ui_assets`)."""
        self.binary = binary
        self.work_dir = work_dir
        self.ports = ports or JaegerPorts.usual()
        self.ui = ui or ui_assets()
        self.startup_timeout = startup_timeout
        self._process: ManagedProcess | None = None

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.ui}"

    @property
    def otlp_endpoint(self) -> str:
        """OTLP/HTTP, as the services export (`OTEL_EXPORTER_OTLP_ENDPOINT`)."""
        return f"http://127.0.0.1:{self.ports.otlp_http}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "jaeger.log"

    def trace_url(self, trace_id: str) -> str:
        """The trace's page in the UI."""
        return f"{self.ui_url}/trace/{trace_id}"

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
        """Start Jaeger; returns once its query API answers."""
        taken = [port for port in (self.ports.ui, self.ports.otlp_http) if not port_is_free(port)]
        if taken:
            raise JaegerError(f"Jaeger's port(s) {taken} are in use on 127.0.0.1")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "jaeger-config.yaml"
        config.write_text(
            json.dumps(jaeger_config(self.ports, self.ui), indent=2) + "\n", encoding="utf-8"
        )
        process = ManagedProcess(
            "jaeger",
            [str(self.binary), "--config", str(config)],
            cwd=self.work_dir,
            log_path=self.log_path,
        )
        process.start()
        self._process = process
        deadline = time.monotonic() + self.startup_timeout
        while not self._answers():
            if not process.is_running:
                self.stop()
                raise JaegerError(f"Jaeger exited during start-up; its log:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise JaegerError(
                    f"Jaeger's query API did not answer in {self.startup_timeout:.0f} s; "
                    f"its log:\n{self._log_tail()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.stop(10.0)

    def trace(self, trace_id: str) -> dict[str, object] | None:
        """The trace as Jaeger's query API gives it (`/api/traces/<id>`), None if unknown."""
        try:
            with urllib.request.urlopen(  # noqa: S310 - our own loopback URL
                f"{self.ui_url}/api/traces/{trace_id}", timeout=10
            ) as response:
                body: dict[str, object] = json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise
        return body

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(  # noqa: S310 - our own loopback URL
                f"{self.ui_url}/api/services", timeout=2
            ) as response:
                status: int = response.status
                return status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def start_jaeger(work_dir: Path, report: Callable[[str], None]) -> EmbeddedJaeger:
    """For `adaptmesh up --jaeger` and the demo: build once if needed, then start Jaeger on its
    usual ports where free. Raises `GoMissingError` (with advice) or `JaegerError`."""
    jaeger = EmbeddedJaeger(ensure_jaeger_binary(report), work_dir)
    jaeger.start()
    return jaeger


def services_in_trace(trace: dict[str, object]) -> set[str]:
    """The `service.name` of every span in a trace from `/api/traces/<id>`."""
    names: set[str] = set()
    data = trace.get("data")
    for entry in data if isinstance(data, list) else []:
        processes = entry.get("processes", {}) if isinstance(entry, dict) else {}
        for span in entry.get("spans", []) if isinstance(entry, dict) else []:
            process = processes.get(span.get("processID"), {})
            if "serviceName" in process:
                names.add(str(process["serviceName"]))
    return names


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    """`make jaeger`: build the binary into the cache once, and say where it is."""
    try:
        binary = ensure_jaeger_binary(report=_say)
    except JaegerError as error:
        sys.stderr.write(f"{error}\n")
        return 1
    sys.stdout.write(f"Jaeger {JAEGER_VERSION}: {binary}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
