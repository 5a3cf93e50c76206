"""Child processes that never outlive the Python process that started them.

Used for the Kafka JVM and for the mesh's service processes. Each child gets its own session
(so a terminal's Ctrl-C reaches only the supervisor, which then stops children in order, and a
stop can signal the child's whole process group) and a kernel-enforced parent-death signal.
Whatever the child started in its session (local Ray's daemons and workers, for training) is
killed once the child is gone, however it went: nothing is re-parented to init and left running.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

_log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def parent_death_signal(parent_pid: int) -> Callable[[], None] | None:
    """Build a ``preexec_fn`` that makes the kernel SIGKILL the child when its parent dies.

    Why this and not the alternatives: ``atexit`` and ``stop()`` cover every orderly exit, but
    nothing in Python runs when Python is SIGKILLed or crashes, and a watchdog thread dies with
    it. A shell wrapper polling the parent PID races with PID reuse and must forward signals.
    ``PR_SET_PDEATHSIG`` is enforced by the kernel, costs nothing and needs no extra process.
    Its catch is that the "parent" is the *thread* that forked the child, so children are always
    forked from a dedicated thread that lives exactly as long as the child (see ``start``).
    SIGKILL rather than SIGTERM because this path only runs after an abrupt death, where a hung
    shutdown would leave an orphan. The prctl symbol is resolved before the fork so the child
    only makes two syscalls.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    option = ctypes.c_int(_PR_SET_PDEATHSIG)
    signal_number = ctypes.c_ulong(signal.SIGKILL)

    def arm() -> None:
        if prctl(option, signal_number) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # The parent may have died between fork and prctl; then no signal would ever come.
        if os.getppid() != parent_pid:
            os._exit(1)

    return arm


def session_members(session_id: int) -> set[int]:
    """PIDs of the live processes in session (or group) `session_id`, read from /proc.

    A child started with its own session leads it: its descendants stay in that session (and,
    unless they move, in its process group) after the child dies and they are re-parented.
    """
    members: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        # Fields after the command name, which is in parentheses and may hold anything.
        fields = stat[stat.rfind(")") + 2 :].split()
        # A zombie is dead already; its new parent (init here) reaps it when it will.
        if fields[0] not in "ZX" and session_id in (int(fields[2]), int(fields[3])):
            members.add(int(entry.name))
    return members


def kill_session(session_id: int, *, rounds: int = 20) -> int:
    """SIGKILL every process left in the session the child `session_id` led; how many.

    Called only after the leader was reaped: the kernel does not hand out a PID that is still
    some live process's session or group id, so nothing outside the session can be hit.
    Repeated a few times because a dying parent may still have forked a child.
    """
    killed: set[int] = set()
    if not sys.platform.startswith("linux"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(session_id, signal.SIGKILL)
        return 0
    for _ in range(rounds):
        members = session_members(session_id) - {os.getpid()}
        if not members:
            break
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed |= members
        time.sleep(0.05)
    return len(killed)


class ManagedProcess:
    """One child process: started from a reaper thread, stopped by process group."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        """`log_path` receives stdout and stderr (appended); None inherits this process's."""
        self.name = name
        self.command = list(command)
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._exited: threading.Event | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def is_running(self) -> bool:
        return self._exited is not None and not self._exited.is_set()

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError(f"{self.name} already started (pid {self._process.pid})")
        launched = threading.Event()
        exited = threading.Event()
        failure: list[BaseException] = []
        preexec = parent_death_signal(os.getpid())
        output: IO[bytes] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output = self.log_path.open("ab")

        def run() -> None:
            try:
                process = subprocess.Popen(  # noqa: S603 - argv built by the caller, no shell
                    self.command,
                    cwd=self.cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT if output is not None else None,
                    start_new_session=True,
                    preexec_fn=preexec,  # noqa: PLW1509 - only prctl+getppid, see above
                )
            except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                failure.append(error)
                launched.set()
                return
            finally:
                if output is not None:
                    output.close()
            self._process = process
            launched.set()
            try:
                process.wait()
                leftovers = kill_session(process.pid)
                if leftovers:
                    _log.warning(
                        "%s (pid %d) exited with code %s and left %d process(es) of its "
                        "session running; killed them",
                        self.name,
                        process.pid,
                        process.returncode,
                        leftovers,
                    )
            finally:
                exited.set()

        reaper = threading.Thread(target=run, name=f"{self.name}-reaper", daemon=True)
        reaper.start()
        launched.wait()
        if failure:
            raise RuntimeError(f"could not launch {self.name}: {self.command[0]}") from failure[0]
        self._exited = exited

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the child exits (or `timeout`); its exit code, None while running."""
        exited = self._exited
        if exited is not None:
            exited.wait(timeout)
        process = self._process
        return None if process is None else process.returncode

    def signal(self, signum: signal.Signals) -> None:
        process = self._process
        if process is not None:
            # The reaper may have just collected the child; a vanished group is the goal anyway.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)

    def signal_stop(self) -> None:
        """Ask the child to stop (SIGTERM) without waiting: lets many children drain at once."""
        if self.is_running:
            self.signal(signal.SIGTERM)

    def stop(self, timeout: float) -> int | None:
        """SIGTERM the child's process group, SIGKILL it after `timeout`; idempotent."""
        process, exited = self._process, self._exited
        if process is None or exited is None:
            return None
        if not exited.is_set():
            self.signal(signal.SIGTERM)
            if not exited.wait(timeout):
                _log.warning("%s (pid %d) ignored SIGTERM, killing it", self.name, process.pid)
                self.signal(signal.SIGKILL)
                exited.wait()
        self._process = None
        self._exited = None
        return process.returncode
