"""`serving.replica_status`: this replica says, every so often, that it is alive and what it
serves, so a watcher of a rollout knows which replicas to wait for (`adaptmesh watch rollout`).

Events are keyed by domain, so a replica reports once per domain it serves (each report names
that domain and its version). It reports every `interval_seconds`, and soon after its models
change (a swap, the start-up loads), so a rollout is seen complete without waiting an interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from adaptmesh_schemas import MeshEvent
from adaptmesh_schemas.events import ReplicaStatus
from adaptmesh_serving.registry import ModelRegistry

log = logging.getLogger(__name__)

SETTLE_SECONDS = 0.5
"""After a change, how long to wait for more (the start-up read loads domains in a row)."""


class ReplicaHeartbeat:
    """Publishes this replica's `serving.replica_status` while the service runs."""

    def __init__(
        self,
        registry: ModelRegistry,
        publish: Callable[[MeshEvent], Awaitable[object]],
        *,
        replica_id: str,
        interval_seconds: float,
    ) -> None:
        self._registry = registry
        self._publish = publish
        self._replica_id = replica_id
        self._interval = interval_seconds
        self._started_at = datetime.now(UTC)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def models_changed(self) -> None:
        """What this replica serves changed: report soon."""
        self._changed.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._beat(), name="replica heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def report(self) -> None:
        """Publish one status per domain this replica serves now."""
        for served in self._registry.served():
            await self._publish(
                ReplicaStatus(
                    domain=served.domain,
                    replica_id=self._replica_id,
                    started_at=self._started_at,
                    interval_seconds=self._interval,
                    serving={served.domain: served.model_version},
                )
            )

    async def _beat(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._changed.wait()
                    await asyncio.sleep(SETTLE_SECONDS)
            self._changed.clear()
            try:
                await self.report()
            except Exception:
                # The next beat tries again; a watcher sees the replica late, not wrong.
                log.exception("replica status not published")
