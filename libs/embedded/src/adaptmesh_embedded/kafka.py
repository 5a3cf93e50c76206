"""A real Apache Kafka broker for one machine, run from Maven Central jars instead of Docker.

The embedded deployment shape (and the test suite when no Docker engine answers) needs the
genuine broker, not an in-memory imitation: consumer groups, auto-created topics and size limits
must behave exactly as in production. This module formats and launches a single combined
broker+controller KRaft node bound to 127.0.0.1 and guarantees the JVM never outlives Python.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

from adaptmesh_embedded.ports import free_port
from adaptmesh_embedded.processes import ManagedProcess
from adaptmesh_embedded.security import (
    ADMIN,
    Acl,
    KafkaCredentials,
    SecuritySetupError,
    create_acls_blocking,
    prepare_credentials,
)

_log = logging.getLogger(__name__)

JARS_DIR_ENV = "MESH_KAFKA_JARS_DIR"
"""Points at a directory of broker jars gathered elsewhere (CI cache, a shared install)."""

_POM = Path("infra/kafka/pom.xml")
_LOG4J_CONFIG_NAME = "log4j2.properties"
_BROKER_JAR_GLOB = "kafka_2.13-*.jar"
_STARTED_MARKER = b"Kafka Server started"
_HEAP_PATTERN = re.compile(r"\d+[kKmMgG]?")
_BIND_FAILURE = re.compile(r"failed to bind to 127\.0\.0\.1:(\d+): Address already in use")
_AUTO_PORT_ATTEMPTS = 3


class EmbeddedKafkaError(RuntimeError):
    """The broker could not be prepared, started or stopped; the message quotes its log."""


def find_repo_root(start: Path | None = None) -> Path | None:
    """Locate the checkout holding ``infra/kafka/pom.xml``.

    The jars and the log4j config live in the repository rather than in the wheel, so the
    launcher has to find them from wherever it is imported (editable install or a test run).
    """
    origins = [start] if start is not None else [Path(__file__).resolve(), Path.cwd().resolve()]
    for origin in origins:
        for candidate in (origin, *origin.parents):
            if (candidate / _POM).is_file():
                return candidate
    return None


def _has_broker_jar(jars_dir: Path) -> bool:
    return jars_dir.is_dir() and any(jars_dir.glob(_BROKER_JAR_GLOB))


def ensure_kafka_jars(repo_root: Path | None = None) -> Path:
    """Return the directory of broker jars, fetching them with Maven on first use.

    ``MESH_KAFKA_JARS_DIR`` wins so machines without Maven can reuse jars gathered elsewhere;
    in that case nothing is downloaded, because the POM writes to its own ``lib/`` only.
    """
    override = os.environ.get(JARS_DIR_ENV)
    if override:
        jars_dir = Path(override).expanduser().resolve()
        if not _has_broker_jar(jars_dir):
            raise EmbeddedKafkaError(
                f"{JARS_DIR_ENV}={override} holds no {_BROKER_JAR_GLOB}; "
                f"unset it to fetch the jars with {_POM}"
            )
        return jars_dir

    root = repo_root if repo_root is not None else find_repo_root()
    if root is None:
        raise EmbeddedKafkaError(
            f"cannot find {_POM} above {Path(__file__).parent} or the working directory; "
            f"set {JARS_DIR_ENV} to a directory holding the Kafka jars"
        )
    pom = root / _POM
    jars_dir = pom.parent / "lib"
    if _has_broker_jar(jars_dir):
        return jars_dir

    mvn = shutil.which("mvn")
    if mvn is None:
        raise EmbeddedKafkaError(
            f"Kafka jars are missing from {jars_dir} and Maven (mvn) is not on PATH; "
            f"install Maven or set {JARS_DIR_ENV}"
        )
    _log.info("fetching Kafka jars into %s (first use, needs Maven Central)", jars_dir)
    command = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        command, cwd=root, capture_output=True, text=True, check=False, timeout=900
    )
    if result.returncode != 0 or not _has_broker_jar(jars_dir):
        raise EmbeddedKafkaError(
            f"{' '.join(command)} exited with {result.returncode}:\n"
            f"{_last_lines(result.stdout + result.stderr)}"
        )
    return jars_dir


def _new_cluster_id() -> str:
    # KRaft cluster ids are 16 random bytes in unpadded base64url, the form StorageTool expects.
    # One starting with "-" is taken for an option on StorageTool's command line (about one
    # start in 64 failed); Kafka's own Uuid.randomUuid() redraws those too.
    while True:
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _last_lines(text: str, count: int = 40) -> str:
    return "\n".join(text.splitlines()[-count:])


def _tail(path: Path, count: int = 40) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            return _last_lines(handle.read().decode("utf-8", "replace"), count)
    except FileNotFoundError:
        return f"({path} does not exist)"


def _properties_text(properties: Mapping[str, str]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n")

    lines = ["# Written by adaptmesh_embedded.kafka on every start; edits are overwritten."]
    lines += [f"{key}={escape(value)}" for key, value in properties.items()]
    return "\n".join(lines) + "\n"


class EmbeddedKafka:
    """One single-node KRaft Kafka (broker and controller in one JVM) bound to 127.0.0.1.

    Ports left as ``None`` are picked free at each start, so parallel test sessions never
    collide. The controller quorum is static (``controller.quorum.voters``): the voter's address
    then lives only in server.properties, which is rewritten on every start, so a kept
    ``data_dir`` can be restarted on different ports. A dynamic quorum formatted with
    ``--standalone`` records the controller endpoint in the metadata log instead.
    """

    def __init__(
        self,
        jars_dir: Path,
        data_dir: Path,
        *,
        heap: str = "512m",
        port: int | None = None,
        controller_port: int | None = None,
        log4j_config: Path | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 20.0,
        overrides: Mapping[str, str] | None = None,
        inherit_stdio: bool = False,
        secure: bool = False,
    ) -> None:
        """Describe the broker; nothing runs until ``start()``.

        ``secure`` serves clients over TLS with SCRAM-SHA-512 users and ACLs only (see
        `security.py`); its CA, passwords and each principal's settings are kept in
        ``<data_dir>/secure``, and the ACLs are created with `grant`.

        ``overrides`` are broker properties applied last, for the odd test that needs them.
        ``inherit_stdio`` sends the JVM's console (WARN and above) to this process's terminal
        instead of ``<data_dir>/logs/console.log``; only a foreground broker wants that.
        """
        if not _HEAP_PATTERN.fullmatch(heap):
            raise ValueError(f"heap must look like 512m or 1g, got {heap!r}")
        self.jars_dir = Path(jars_dir).resolve()
        self.data_dir = Path(data_dir).resolve()
        self.heap = heap
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._fixed_port = port
        self._fixed_controller_port = controller_port
        self._log4j_config = log4j_config
        self._overrides = dict(overrides or {})
        self._inherit_stdio = inherit_stdio
        self.secure = secure
        self._credentials: KafkaCredentials | None = None
        self._port: int | None = None
        self._controller_port: int | None = None
        self._broker: ManagedProcess | None = None
        # Set by the reaper thread once the JVM is reaped. An Event, not Thread.is_alive():
        # on Python 3.11 a join() interrupted by Ctrl-C/SIGTERM marks the still-running thread
        # as stopped (the bpo-45274 fix releases that thread's lock), so stop() would skip the
        # orderly shutdown and leave the JVM to the parent-death SIGKILL.
        self._lock = threading.Lock()

    # -- public surface -------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>`` of the running broker, for ``bootstrap_servers=`` settings."""
        if self._port is None:
            raise EmbeddedKafkaError("the broker has not been started")
        return f"127.0.0.1:{self._port}"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def credentials(self) -> KafkaCredentials:
        """The secure broker's CA and passwords (prepared by ``start()``)."""
        if self._credentials is None:
            raise EmbeddedKafkaError("not a secure broker, or not started yet")
        return self._credentials

    def client_environment(self, principal: str) -> dict[str, str]:
        """The ``MESH_KAFKA_*`` settings a client connecting as `principal` needs.

        On a broker that is not secure every principal connects alike, in plain text.
        """
        environment = {"MESH_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers}
        if self.secure:
            environment |= self.credentials.client_environment(principal)
        return environment

    def grant(self, acls: Sequence[Acl]) -> None:
        """Create `acls` as the super user (`security.mesh_acls` gives the mesh's own)."""
        create_acls_blocking(self.credentials.client_kwargs(ADMIN, self.bootstrap_servers), acls)

    @property
    def controller_port(self) -> int | None:
        return self._controller_port

    @property
    def pid(self) -> int | None:
        """PID of the JVM, which also leads its own process group."""
        return None if self._broker is None else self._broker.pid

    @property
    def is_running(self) -> bool:
        return self._broker is not None and self._broker.is_running

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def console_log(self) -> Path:
        return self.log_dir / "console.log"

    @property
    def kraft_dir(self) -> Path:
        return self.data_dir / "kraft"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

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
        """Format storage if needed, launch the JVM and block until the broker serves."""
        with self._lock:
            if self._broker is not None:
                raise EmbeddedKafkaError(f"already started (pid {self._broker.pid})")
            java = shutil.which("java")
            if java is None:
                raise EmbeddedKafkaError("java (17 or newer) is not on PATH")
            if not _has_broker_jar(self.jars_dir):
                raise EmbeddedKafkaError(
                    f"no {_BROKER_JAR_GLOB} in {self.jars_dir}; call ensure_kafka_jars() first"
                )
            log4j_config = self._resolve_log4j_config()
            self.kraft_dir.mkdir(parents=True, exist_ok=True)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            if self.secure:
                self._credentials = self._prepare_credentials()

            auto_ports = self._fixed_port is None or self._fixed_controller_port is None
            attempts = _AUTO_PORT_ATTEMPTS if auto_ports else 1
            for attempt in range(1, attempts + 1):
                self._choose_ports()
                self._write_properties()
                if attempt == 1:
                    self._format_storage(java, log4j_config)
                began = time.monotonic()
                log_offset = self.server_log.stat().st_size if self.server_log.exists() else 0
                self._launch(self._broker_command(java, log4j_config))
                try:
                    self._wait_until_ready(log_offset, began + self.startup_timeout)
                except BaseException as error:
                    self._terminate()
                    # A freshly probed port can be grabbed by someone else before the JVM binds
                    # it; with ports we picked ourselves another pair is as good.
                    retry = (
                        isinstance(error, EmbeddedKafkaError)
                        and attempt < attempts
                        and self._clashed_on_chosen_port(log_offset)
                    )
                    if not retry:
                        raise
                    _log.warning("port clash on attempt %d, retrying with new ports", attempt)
                    continue
                atexit.register(self.stop)
                if self._credentials is not None:
                    self._credentials.write_env_files(self.bootstrap_servers)
                _log.info(
                    "Kafka ready at %s in %.1f s (pid %d, logs in %s)",
                    self.bootstrap_servers,
                    time.monotonic() - began,
                    self.pid,
                    self.log_dir,
                )
                return

    def stop(self) -> None:
        """SIGTERM the JVM's process group, SIGKILL it after ``stop_timeout``; idempotent."""
        with self._lock:
            atexit.unregister(self.stop)
            self._terminate()

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the JVM exits (or ``timeout``); return its exit code, None if running."""
        broker = self._broker
        return None if broker is None else broker.wait(timeout)

    # -- internals ------------------------------------------------------------------------

    def _resolve_log4j_config(self) -> Path:
        candidates = [self._log4j_config] if self._log4j_config is not None else []
        if not candidates:
            candidates.append(self.jars_dir.parent / _LOG4J_CONFIG_NAME)
            root = find_repo_root()
            if root is not None:
                candidates.append(root / _POM.parent / _LOG4J_CONFIG_NAME)
        for candidate in candidates:
            if candidate.is_file():
                return candidate.resolve()
        raise EmbeddedKafkaError(
            "no log4j2 config for the broker (looked at "
            f"{', '.join(str(c) for c in candidates)}); pass log4j_config="
        )

    def _choose_ports(self) -> None:
        taken: set[int] = set()
        self._port = self._fixed_port or free_port(taken)
        taken.add(self._port)
        self._controller_port = self._fixed_controller_port or free_port(taken)
        if self._port == self._controller_port:
            raise EmbeddedKafkaError(f"broker and controller both asked for port {self._port}")

    def _properties(self) -> dict[str, str]:
        broker = f"127.0.0.1:{self._port}"
        controller = f"127.0.0.1:{self._controller_port}"
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{controller}",
            "listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{broker}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.kraft_dir),
            "auto.create.topics.enable": "true",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            # Claim-check events stay small, but tests push 5 MB bodies through on purpose.
            "message.max.bytes": "10485760",
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "log.retention.check.interval.ms": "300000",
        }
        if self._credentials is not None:
            properties.update(self._credentials.broker_properties(broker, controller))
        properties.update(self._overrides)
        return properties

    def _write_properties(self) -> None:
        # 0600: a secure broker's file holds its private key and the admin's password.
        self.properties_file.touch(mode=0o600)
        self.properties_file.chmod(0o600)
        self.properties_file.write_text(_properties_text(self._properties()), encoding="utf-8")

    def _prepare_credentials(self) -> KafkaCredentials:
        formatted = (self.kraft_dir / "meta.properties").is_file()
        directory = self.data_dir / "secure"
        if formatted and not (directory / "credentials.json").is_file():
            raise EmbeddedKafkaError(
                f"{self.data_dir} was formatted without --secure, so it has no SCRAM users; "
                "start the secure broker on a fresh directory"
            )
        try:
            return prepare_credentials(directory)
        except SecuritySetupError as error:
            raise EmbeddedKafkaError(str(error)) from error

    def _jvm_options(self, log4j_config: Path) -> list[str]:
        return [
            "-cp",
            str(self.jars_dir / "*"),  # expanded by java itself, no shell involved
            f"-Dlog4j2.configurationFile={log4j_config}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-Djava.awt.headless=true",
        ]

    def _format_storage(self, java: str, log4j_config: Path) -> None:
        # A kept data_dir is already formatted. Re-running the tool would still need the old
        # cluster id (--ignore-formatted verifies it) and cost a JVM start; the broker checks
        # meta.properties itself and a mismatch shows up in the startup error's log tail.
        if (self.kraft_dir / "meta.properties").is_file():
            return
        command = [
            java,
            "-Xmx256m",
            *self._jvm_options(log4j_config),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            _new_cluster_id(),
            "--config",
            str(self.properties_file),
            # SCRAM users must exist before the first client logs in: written with the
            # cluster's first metadata, not created through a broker nobody can reach yet.
            *(self._credentials.scram_arguments() if self._credentials else ()),
        ]
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            command, capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode != 0:
            raise EmbeddedKafkaError(
                f"kafka.tools.StorageTool format exited with {result.returncode}:\n"
                f"{_last_lines(result.stdout + result.stderr)}"
            )

    def _broker_command(self, java: str, log4j_config: Path) -> list[str]:
        return [
            java,
            f"-Xmx{self.heap}",
            "-XX:+ExitOnOutOfMemoryError",
            *self._jvm_options(log4j_config),
            "kafka.Kafka",
            str(self.properties_file),
        ]

    def _launch(self, command: list[str]) -> None:
        """Start the JVM (see `ManagedProcess`: own session, dies with this process)."""
        self._broker = ManagedProcess(
            "embedded-kafka",
            command,
            cwd=self.data_dir,
            log_path=None if self._inherit_stdio else self.console_log,
        )
        self._broker.start()

    def _wait_until_ready(self, log_offset: int, deadline: float) -> None:
        """Wait for "Kafka Server started" in this run's part of the log and an open port.

        The log line is written once the broker is unfenced and serving; the connect check
        guards against a stale line from an earlier run sharing the file.
        No asyncio here so ``start()`` works inside and outside a running event loop.
        """
        position = log_offset
        carry = b""
        while time.monotonic() < deadline:
            if not self.is_running:
                raise EmbeddedKafkaError(
                    f"Kafka exited during startup with code {self.wait(0)}\n"
                    f"{self._log_tails(log_offset)}"
                )
            with contextlib.suppress(FileNotFoundError), self.server_log.open("rb") as handle:
                handle.seek(position)
                chunk = handle.read()
                position += len(chunk)
                window = carry + chunk
                if _STARTED_MARKER in window and self._accepts_connections():
                    return
                carry = window[-len(_STARTED_MARKER) :]
            time.sleep(0.1)
        raise EmbeddedKafkaError(
            f"Kafka did not start within {self.startup_timeout:.0f} s\n"
            f"{self._log_tails(log_offset)}"
        )

    def _accepts_connections(self) -> bool:
        assert self._port is not None
        try:
            with socket.create_connection(("127.0.0.1", self._port), timeout=1.0):
                return True
        except OSError:
            return False

    def _run_log(self, log_offset: int) -> str:
        """This run's part of server.log, which is appended to across restarts."""
        try:
            with self.server_log.open("rb") as handle:
                handle.seek(log_offset)
                return handle.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _clashed_on_chosen_port(self, log_offset: int) -> bool:
        fixed = {self._fixed_port, self._fixed_controller_port}
        clashes = {int(port) for port in _BIND_FAILURE.findall(self._run_log(log_offset))}
        return bool(clashes) and not clashes & fixed

    def _log_tails(self, log_offset: int) -> str:
        # The root cause is usually the first ERROR (and the exception line after it);
        # shutdown noise that follows fills the tail.
        lines = self._run_log(log_offset).splitlines()
        first = next((i for i, line in enumerate(lines) if "] ERROR " in line), None)
        first_error = "(none logged)" if first is None else "\n".join(lines[first : first + 2])
        parts = [
            f"first ERROR: {first_error}",
            f"--- {self.server_log} (tail) ---\n{_tail(self.server_log)}",
        ]
        if not self._inherit_stdio:
            parts.append(f"--- {self.console_log} (tail) ---\n{_tail(self.console_log)}")
        return "\n".join(parts)

    def _terminate(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            broker.stop(self.stop_timeout)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """``adaptmesh-kafka``: run the embedded broker in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="adaptmesh-kafka",
        description="Run a single-node Apache Kafka (KRaft) on 127.0.0.1 from local jars.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".mesh/kafka"),
        help="KRaft log dir, server.properties and logs (kept between runs)",
    )
    parser.add_argument("--port", type=int, default=None, help="broker port (default: free)")
    parser.add_argument(
        "--controller-port", type=int, default=None, help="controller port (default: free)"
    )
    parser.add_argument("--heap", default="512m", help="JVM -Xmx")
    parser.add_argument(
        "--jars-dir", type=Path, default=None, help=f"default: ${JARS_DIR_ENV} or fetch with Maven"
    )
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    # SIGTERM takes the same orderly path as Ctrl-C: unwind, stop the broker, exit 0.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    kafka: EmbeddedKafka | None = None
    try:
        jars_dir = args.jars_dir or ensure_kafka_jars()
        kafka = EmbeddedKafka(
            jars_dir,
            args.data_dir,
            heap=args.heap,
            port=args.port,
            controller_port=args.controller_port,
            startup_timeout=args.startup_timeout,
            inherit_stdio=True,
        )
        kafka.start()
        sys.stdout.write(f"bootstrap: {kafka.bootstrap_servers}\n")
        sys.stdout.flush()
        code = kafka.wait()
    except KeyboardInterrupt:
        return 0
    except EmbeddedKafkaError as error:
        _log.error("%s", error)
        return 1
    finally:
        if kafka is not None:
            kafka.stop()
    _log.error("Kafka exited on its own with code %s; see %s", code, kafka.server_log)
    return 1


if __name__ == "__main__":
    sys.exit(main())
