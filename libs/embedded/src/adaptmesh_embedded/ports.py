"""The mesh's client-facing ports, kept in its work directory from one `adaptmesh up` to the next.

Every client of a mesh is configured with its Kafka bootstrap address and serving URL; ports
chosen afresh at each start meant reconfiguring them all after every restart. The first start
on a work directory settles the ports (given, or free ones) and writes them to `ports.json`;
later starts use them again unless told otherwise, and say so plainly when one is taken.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

PORTS_FILE = "ports.json"


@dataclass(frozen=True, slots=True)
class MeshPorts:
    """What clients connect to. `kafka` is None for a mesh on someone else's broker."""

    serving: int
    kafka: int | None = None


def remembered_ports(work_dir: Path) -> MeshPorts | None:
    """The ports of the last start on `work_dir`, if there was one (and its file is sound)."""
    try:
        values = json.loads((work_dir / PORTS_FILE).read_text(encoding="utf-8"))
        kafka = values.get("kafka")
        return MeshPorts(
            serving=int(values["serving"]), kafka=None if kafka is None else int(kafka)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_ports(work_dir: Path, ports: MeshPorts) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / PORTS_FILE
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps(asdict(ports), indent=2) + "\n", encoding="utf-8")
    staged.replace(path)


def port_is_free(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:`port` now (as the broker and serving do)."""
    with socket.socket() as probe:
        # As servers bind: a port whose last connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(exclude: Collection[int] = ()) -> int:
    """A port free on 127.0.0.1 now, none of `exclude` (ports chosen but not yet bound)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in exclude:
            return port


def settle_serving_port(
    requested: int | None, remembered: MeshPorts | None, preferred: int | None
) -> int:
    """Given, else last start's, else `preferred` when free, else any free port."""
    if requested is not None:
        return requested
    if remembered is not None:
        return remembered.serving
    if preferred is not None and port_is_free(preferred):
        return preferred
    return free_port()


def settle_kafka_port(requested: int | None, remembered: MeshPorts | None) -> int | None:
    """Given, else last start's; None lets the broker pick a free one at its first start."""
    if requested is not None:
        return requested
    return remembered.kafka if remembered is not None else None
