"""The embedded mesh's rules for ports, restarts and leftovers, without a broker (issue 11)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adaptmesh_embedded.mesh import SERVICES, EmbeddedMesh, Recovery, restart_delay
from adaptmesh_embedded.ports import (
    PORTS_FILE,
    MeshPorts,
    free_port,
    port_is_free,
    remember_ports,
    remembered_ports,
    settle_kafka_port,
    settle_serving_port,
)
from adaptmesh_embedded.processes import ManagedProcess, session_members
from adaptmesh_kit.faults import FAULT_DIR_ENV, arm, fault_point, reached_by


def test_ports_are_remembered_per_work_directory(tmp_path: Path) -> None:
    assert remembered_ports(tmp_path) is None
    remember_ports(tmp_path, MeshPorts(serving=8123, kafka=19092))
    assert remembered_ports(tmp_path) == MeshPorts(serving=8123, kafka=19092)
    remember_ports(tmp_path, MeshPorts(serving=8124))
    assert remembered_ports(tmp_path) == MeshPorts(serving=8124, kafka=None)
    (tmp_path / PORTS_FILE).write_text("{not json")
    assert remembered_ports(tmp_path) is None


def test_a_given_port_wins_then_the_remembered_one_then_the_preferred_if_free() -> None:
    last = MeshPorts(serving=8123, kafka=19092)
    assert settle_serving_port(9000, last, 8080) == 9000
    assert settle_serving_port(None, last, 8080) == 8123
    assert settle_kafka_port(29092, last) == 29092
    assert settle_kafka_port(None, last) == 19092
    assert settle_kafka_port(None, None) is None  # the broker picks one at its first start
    free = free_port()
    assert settle_serving_port(None, None, free) == free
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        assert not port_is_free(taken)
        chosen = settle_serving_port(None, None, taken)
        assert chosen != taken
        assert port_is_free(chosen)


def test_restarts_back_off_and_a_stable_run_resets_the_count() -> None:
    backoff = (0.5, 1.0, 5.0)
    assert [restart_delay(n, backoff) for n in (1, 2, 3, 4, 9)] == [0.5, 1.0, 5.0, 5.0, 5.0]
    recovery = Recovery(started_at=0.0)
    assert recovery.crashed(1.0, backoff) == 0.5
    recovery.restarted(2.0)
    assert recovery.crashed(3.0, backoff) == 1.0  # crashed again soon after: a longer wait
    recovery.restarted(4.0)
    assert recovery.restarts == 2
    assert recovery.crashed(4.0 + 3600, backoff) == 0.5  # up for an hour: first crash again


def test_what_a_child_left_in_its_session_is_killed_when_it_exits(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    child = ManagedProcess(
        "leaver",
        ["sh", "-c", f"sleep 300 & echo $! >> {pids}; sleep 300 & echo $! >> {pids}; sleep 0.5"],
    )
    child.start()
    leader = child.pid
    assert leader is not None
    assert child.wait(30) == 0
    left = [int(line) for line in pids.read_text().split()]
    assert len(left) == 2
    assert not session_members(leader)
    assert not [pid for pid in left if _running(pid)]


def _running(pid: int) -> bool:
    """Alive and not a zombie (the process that reaps orphans here may take its time)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in "ZX"


def _reach(directory: Path, name: str) -> subprocess.Popen[bytes]:
    code = f"from adaptmesh_kit.faults import fault_point; fault_point({name!r}); print('passed')"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=os.environ | {FAULT_DIR_ENV: str(directory)},
        stdout=subprocess.PIPE,
    )


def test_an_armed_fault_point_freezes_the_first_process_to_reach_it_once(tmp_path: Path) -> None:
    marker = arm(tmp_path, "step.done")
    first = _reach(tmp_path, "step.done")
    try:
        deadline = time.monotonic() + 30
        while reached_by(marker) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reached_by(marker) == first.pid
        time.sleep(0.2)
        with open(f"/proc/{first.pid}/stat") as stat:
            assert stat.read().rsplit(")", 1)[1].split()[0] == "T"  # stopped, not gone
        # Fired once: the next process (a restart) passes.
        second = _reach(tmp_path, "step.done")
        assert second.communicate(timeout=30)[0].strip() == b"passed"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL
    unarmed = _reach(tmp_path, "other.step")
    assert unarmed.communicate(timeout=30)[0].strip() == b"passed"


def test_fault_points_do_nothing_unless_a_directory_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(FAULT_DIR_ENV, raising=False)
    fault_point("anything")  # returns: this test would hang otherwise


def test_services_get_the_operators_settings_but_never_over_the_meshs_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stray setting in the caller's own environment never reaches a service...
    monkeypatch.setenv("MESH_SERVING_MAX_BATCH_SIZE", "3")
    operator = {
        "MESH_ARTIFACT_ROOTS": "eu=file:///data/eu",
        "MESH_TRAINING_RESIDENCIES": "eu",
        "MESH_KAFKA_BOOTSTRAP_SERVERS": "elsewhere:9092",
        "MESH_STATE_DIR": "/elsewhere",
        "MESH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PATH_LIKE_NOT_MESH": "x",
    }
    mesh = EmbeddedMesh(
        tmp_path, bootstrap_servers="127.0.0.1:1", operator_settings=operator, supervise=False
    )
    env = mesh.environment(SERVICES[2], 0, 9999)
    # ...an operator's are passed on (`adaptmesh up` passes its environment)...
    assert env["MESH_ARTIFACT_ROOTS"] == "eu=file:///data/eu"
    assert env["MESH_TRAINING_RESIDENCIES"] == "eu"
    assert "MESH_SERVING_MAX_BATCH_SIZE" not in env
    # ...but what the mesh chose stays the mesh's.
    assert env["MESH_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:1"
    assert "MESH_KAFKA_SECURITY_PROTOCOL" not in env
    assert env["MESH_STATE_DIR"] == str(tmp_path.resolve() / "state" / "training-0")
    assert "PATH_LIKE_NOT_MESH" not in env  # only MESH_* settings are the operator's to pass
