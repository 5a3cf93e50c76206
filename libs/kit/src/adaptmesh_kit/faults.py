"""Fault points: named moments at which a test can freeze a service and `kill -9` it.

A crash between two steps (a decision recorded and not yet published, a model loaded and not
yet switched in) is what exactly-once and at-least-once designs must survive, and a `kill -9`
from outside rarely lands there by chance. Services mark such moments with `fault_point(name)`.

Off by default, and then a dictionary lookup: only when `MESH_FAULT_DIR` names a directory is
anything done. A point is armed by creating `<dir>/<name>.armed`; the first process to reach it
renames that file to `<name>.reached` (atomic, so it fires once, also across restarts and
instances), writes its PID into it and stops itself with SIGSTOP — frozen exactly there, every
thread with it, until the test kills it. The test arms points at the moment it chooses.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

FAULT_DIR_ENV = "MESH_FAULT_DIR"


def fault_point(name: str) -> None:
    """Freeze this process here if a test armed `name` (see the module's docstring)."""
    directory = os.environ.get(FAULT_DIR_ENV)
    if not directory:
        return
    armed = Path(directory) / f"{name}.armed"
    reached = armed.with_suffix(".reached")
    try:
        armed.rename(reached)
    except FileNotFoundError:  # not armed, or another process got there first
        return
    reached.write_text(f"{os.getpid()}\n", encoding="utf-8")
    os.kill(os.getpid(), signal.SIGSTOP)


def arm(directory: Path, name: str) -> Path:
    """Arm `name` under `directory`; the path that appears once a process reached it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.armed").touch()
    return directory / f"{name}.reached"


def reached_by(marker: Path) -> int | None:
    """PID of the process frozen at the point `marker` stands for, once it wrote it."""
    try:
        text = marker.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return int(text) if text.endswith("\n") else None
