"""The local Ray the training service starts listens on loopback only (issue 11).

Ray is started exactly as the service starts it (`RayCluster`), made to run an actor (so a worker
process has its gRPC server up too), and then every TCP socket in LISTEN state that belongs to
this process or to any process below it (GCS, raylet, agents, workers) is listed: each must be
bound to 127.0.0.1 or ::1 (or the IPv4-mapped ::ffff:127.0.0.1), none to 0.0.0.0, :: or the
host's own address.
"""

from __future__ import annotations

import ipaddress
import time

import psutil  # type: ignore[import-untyped]
import pytest
import ray

from adaptmesh_training.ray_cluster import RayCluster

Listener = tuple[str, int, int, str]  # address, port, pid, process name


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def listeners(pids: set[int]) -> set[Listener]:
    """TCP sockets listening in any of these processes."""
    found: set[Listener] = set()
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status != psutil.CONN_LISTEN or connection.pid not in pids:
            continue
        try:
            name = psutil.Process(connection.pid).name()
        except psutil.NoSuchProcess:
            continue
        found.add((connection.laddr.ip, connection.laddr.port, connection.pid, name))
    return found


def process_tree() -> set[int]:
    me = psutil.Process()
    return {me.pid} | {child.pid for child in me.children(recursive=True)}


@ray.remote(num_cpus=0)
class Probe:
    def ping(self) -> str:
        return "pong"


@pytest.mark.timeout(180)
def test_the_local_ray_listens_on_loopback_only() -> None:
    assert not ray.is_initialized(), "another Ray is up in this process; this test needs its own"
    before = listeners({psutil.Process().pid})  # the test process's own, if any, are not Ray's
    cluster = RayCluster(num_cpus=1)
    try:
        assert cluster.warm_up().result(timeout=150), "RayCluster did not start the Ray itself"
        probe = Probe.remote()  # type: ignore[attr-defined]
        assert ray.get(probe.ping.remote(), timeout=120) == "pong"
        time.sleep(2)  # agents that open their servers a moment after they start
        ray_sockets = sorted(listeners(process_tree()) - before)
    finally:
        cluster.shutdown()

    print("Ray's listening sockets:")
    for address, port, pid, name in ray_sockets:
        print(f"  {address}:{port}  pid {pid}  {name}")
    names = {name for *_, name in ray_sockets}
    assert {"gcs_server", "raylet"} <= names, f"Ray's own servers were not found: {names}"
    exposed = [socket for socket in ray_sockets if not is_loopback(socket[0])]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"
    assert not ray.is_initialized()
