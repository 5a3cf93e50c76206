"""`adaptmesh up` as an operator runs it (issue 11): a service killed with `kill -9` is restarted
and reported while the broker and the other four keep running, no Ray process outlives the
training service that started it, a killed broker comes back on its port, and a second
`adaptmesh up` on the same work directory serves on the same Kafka and serving ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from adaptmesh_embedded import SERVICES
from adaptmesh_embedded.ports import free_port
from adaptmesh_embedded.processes import session_members
from tests.meshtest import eventually

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
ADAPTMESH = str(Path(sys.executable).with_name("adaptmesh"))
RAY = re.compile(r"\bray\b|raylet|gcs_server|ray::")
MODULES = {spec.module: spec.name for spec in SERVICES}


@dataclass
class Up:
    """One `adaptmesh up` process and what it printed."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def follow(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def printed(self, pattern: str) -> re.Match[str] | None:
        compiled = re.compile(pattern)
        return next((m for line in self.lines if (m := compiled.search(line))), None)

    def services(self) -> dict[str, psutil.Process]:
        """Its service processes, by service name (the newest, if one is being replaced)."""
        found: dict[str, psutil.Process] = {}
        for child in psutil.Process(self.process.pid).children():
            try:
                command = child.cmdline()
            except psutil.NoSuchProcess:
                continue
            for module, name in MODULES.items():
                if command[-2:] == ["-m", module]:
                    found[name] = child
        return found

    def broker(self) -> psutil.Process:
        [jvm] = [
            child
            for child in psutil.Process(self.process.pid).children()
            if "kafka.Kafka" in child.cmdline()
        ]
        return jvm


def start_up(work_dir: Path, *extra: str) -> Up:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "OTEL_"))}
    process = subprocess.Popen(
        [ADAPTMESH, "up", "--work-dir", str(work_dir), *extra],
        cwd=REPO,
        env=env | {"PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    up = Up(process)
    threading.Thread(target=up.follow, daemon=True).start()
    return up


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        if up.process.poll() is None:
            up.process.send_signal(signal.SIGINT)
            try:
                up.process.wait(120)
            except subprocess.TimeoutExpired:
                up.process.kill()
                up.process.wait()


async def until_up(up: Up) -> tuple[str, str]:
    """The Kafka bootstrap and serving URL it printed once every service was healthy."""
    await eventually(
        lambda: up.printed("adaptmesh is up") is not None or up.process.poll() is not None, 300
    )
    assert up.process.poll() is None, "\n".join(up.lines)
    kafka = up.printed(r"Kafka bootstrap:\s+(\S+)")
    serving = up.printed(r"serving:\s+(http://\S+?)/v1")
    assert kafka is not None, "\n".join(up.lines)
    assert serving is not None, "\n".join(up.lines)
    return kafka[1], serving[1]


def alive(pid: int) -> bool:
    """Alive and not a zombie (the process that reaps orphans here may take its time)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def ray_orphans(since: float) -> list[str]:
    """Ray processes started since `since` that init has adopted (their parent died)."""
    orphans = []
    for process in psutil.process_iter(["pid", "ppid", "name", "cmdline", "create_time"]):
        info = process.info
        command = " ".join(info["cmdline"] or [info["name"] or ""])
        if (
            info["ppid"] == 1
            and info["create_time"] >= since
            and RAY.search(command)
            and alive(info["pid"])
        ):
            orphans.append(f"{info['pid']} {command[:120]}")
    return orphans


async def broker_answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        await admin.list_topics()
    except Exception:
        return False
    finally:
        await admin.close()
    return True


async def test_up_restarts_a_killed_service_and_broker_and_keeps_its_ports(
    tmp_path: Path, running: list[Up]
) -> None:
    began = time.time()
    work_dir = tmp_path / "mesh"
    up = start_up(work_dir, "--serving-port", str(free_port()))
    running.append(up)
    bootstrap, serving_url = await until_up(up)
    before = up.services()
    assert set(before) == set(MODULES.values())
    broker = up.broker()

    # Training's local Ray (GCS, raylet, workers) runs in the training process's session.
    training = before["training"]
    await eventually(
        lambda: len(session_members(training.pid)) > 2, 120, "training's Ray never came"
    )
    ray_processes = session_members(training.pid) - {training.pid}

    killed_at = time.monotonic()
    os.kill(training.pid, signal.SIGKILL)  # the service alone, as `kill -9 <pid>` does
    await eventually(
        lambda: up.printed(r"training#1 is back \(restart 1") is not None, 120, "\n".join(up.lines)
    )
    back_after = time.monotonic() - killed_at
    print(f"training back {back_after:.1f} s after kill -9 (health answering)")
    assert up.printed(r"training#1 exited \(code -9\); restarting it") is not None
    after = up.services()
    assert after["training"].pid != training.pid
    for name in set(MODULES.values()) - {"training"}:
        assert after[name].pid == before[name].pid, f"{name} was restarted too"
    assert up.broker().pid == broker.pid, "the broker was restarted"
    assert not [pid for pid in ray_processes if alive(pid)], "Ray outlived training"
    assert not session_members(training.pid)
    assert not ray_orphans(began), ray_orphans(began)

    # The broker, killed: restarted on the same port; the services stay and reconnect.
    broker.kill()
    await eventually(
        lambda: up.printed(r"Kafka broker is back at ") is not None, 180, "\n".join(up.lines)
    )
    assert await broker_answers(bootstrap)
    assert {name: p.pid for name, p in up.services().items()} == {
        name: p.pid for name, p in after.items()
    }

    # Ctrl-C, then `adaptmesh up` again on the same work directory: the same ports.
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(180) == 0, "\n".join(up.lines[-30:])
    assert not ray_orphans(began), ray_orphans(began)
    again = start_up(work_dir)
    running.append(again)
    assert await until_up(again) == (bootstrap, serving_url)
    print("\n".join(line for line in up.lines if re.match(r"\d\d:\d\d:\d\d ", line)))
