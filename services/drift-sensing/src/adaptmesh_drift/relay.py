"""The background task that publishes due requests from the outbox.

It sleeps until the next request falls due or until a handler says something new is pending,
publishes what is due, and removes a request only after its publish returned; a failed publish
stays pending and is retried. It knows nothing of Kafka: it is given a `publish` coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from adaptmesh_drift.outbox import PendingRequest
from adaptmesh_drift.schedule import RetrainScheduler

log = logging.getLogger(__name__)

Publish = Callable[[PendingRequest], Awaitable[object]]
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)  # after consecutive failed publishes
STOP_TIMEOUT_SECONDS = 30.0


class OutboxRelay:
    """Runs between `start()` and `stop()`; `wake()` after writing to the outbox."""

    def __init__(
        self, scheduler: RetrainScheduler, publish: Publish, *, flush_on_stop: bool = False
    ) -> None:
        self.scheduler = scheduler
        self._publish = publish
        self._flush_on_stop = flush_on_stop
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published_count = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            return
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Let the publish in hand finish, then stop; with `flush_on_stop` (an outbox that
        does not survive the process) publish everything pending first, due or not."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait_for(task, STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("outbox relay did not stop within %.0f s", STOP_TIMEOUT_SECONDS)
        if self._flush_on_stop:
            await self._flush()

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                for pending in self.scheduler.due():
                    if self._stopping.is_set():
                        return
                    await self._send(pending)
                failures = 0
            except Exception:
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.exception("publishing a retrain request failed; retrying in %.1f s", delay)
                await self._sleep(delay)
                continue
            next_due = self.scheduler.next_due_at()
            await self._sleep(None if next_due is None else next_due - self.scheduler.clock())

    async def _sleep(self, seconds: float | None) -> None:
        """Until `seconds` pass or `wake()` is called."""
        if seconds is not None and seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _send(self, pending: PendingRequest) -> None:
        await self._publish(pending)
        replaced = not self.scheduler.published(pending)
        self.published_count += 1
        log.info(
            "published retrain request %s for %s (%s, dataset %s, %d causes)%s",
            pending.request_id,
            pending.domain,
            pending.request.reason.value,
            pending.request.dataset_version,
            len(pending.request.cause_event_ids),
            "; a newer request waits for the cool-down" if replaced else "",
        )

    async def _flush(self) -> None:
        for pending in self.scheduler.outbox.pending():
            try:
                await self._send(pending)
            except Exception:
                log.exception("could not publish %s before stopping: lost", pending.request_id)
