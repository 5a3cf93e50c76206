"""Readiness: whether the start-up read of `mesh.models.ready.v1` has caught up.

A replica is ready once it has read every record the topic held when it started: then it
serves what production was as of its start. The signal is the kit's (`MeshApp.caught_up`: the
broadcast subscription has read up to the last readable record of every partition, counting
records the handler never sees, such as dead-lettered ones); this module only waits for it in
the background and keeps asking when an attempt times out or Kafka cannot be asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

ATTEMPT_SECONDS = 300.0
"""How long one attempt waits for the read to catch up (loading every domain's model is part
of it) before it is logged and tried again."""
RETRY_PAUSE_SECONDS = 1.0


class StartupRead:
    """Becomes `ready` once `caught_up()` has returned; `start`/`stop` run it in the background
    (with the broker: `MeshApp.while_running`)."""

    def __init__(
        self,
        caught_up: Callable[[float], Awaitable[None]],
        what: str,
        *,
        attempt_seconds: float = ATTEMPT_SECONDS,
        retry_pause_seconds: float = RETRY_PAUSE_SECONDS,
    ) -> None:
        self._caught_up = caught_up
        self._what = what
        self._attempt_seconds = attempt_seconds
        self._retry_pause_seconds = retry_pause_seconds
        self._task: asyncio.Task[None] | None = None
        self.ready = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._wait(), name=f"start-up read of {self._what}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _wait(self) -> None:
        while True:
            try:
                await self._caught_up(self._attempt_seconds)
            except TimeoutError as error:
                log.warning("start-up read not caught up yet: %s; still waiting", error)
            except Exception as error:  # noqa: BLE001  (Kafka may not answer yet; ask again)
                log.warning(
                    "cannot tell whether the start-up read of %s caught up (%s: %s); asking again",
                    self._what,
                    type(error).__name__,
                    error,
                )
            else:
                self.ready = True
                log.info("start-up read of %s caught up: ready", self._what)
                return
            await asyncio.sleep(self._retry_pause_seconds)
