"""Serving's subscriber: `model.ready` records load and swap models, and each load is reported
on `mesh.rollout.v1` (`model.loaded` / `model.load_failed`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from opentelemetry import propagate

from adaptmesh_kit import EventContext, RejectedEvent
from adaptmesh_schemas import MeshEvent
from adaptmesh_schemas.events import ModelLoaded, ModelLoadFailed, ModelReady
from adaptmesh_serving.loading import ModelSource, SwapOutcome, load_and_swap, retire
from adaptmesh_serving.registry import ModelOrigin, ModelRegistry

log = logging.getLogger(__name__)


class ModelReadyHandler:
    """Loads the model each `model.ready` names and makes it serve its domain.

    Subscribed with `broadcast=True`: every replica reads the whole compacted topic from its
    beginning, so replaying a record must be harmless (the registry's rules make it so). Each
    record that loads (or fails to load) a model is answered with this replica's
    `model.loaded` or `model.load_failed`, so a rollout can be watched across replicas; a record
    that changes nothing (stale, already serving) is not.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        source: ModelSource,
        *,
        replica_id: str,
        on_swap: Callable[[], None] = lambda: None,
    ) -> None:
        self._registry = registry
        self._source = source
        self._replica_id = replica_id
        self._on_swap = on_swap
        self._retiring: set[asyncio.Task[None]] = set()

    async def __call__(self, event: ModelReady, context: EventContext) -> None:
        # Inside the kit's handler the current span is this record's consume span, which
        # continues the producer's trace: the model's first prediction will join it.
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        origin = ModelOrigin(
            partition=context.partition,
            offset=context.offset,
            event_id=context.envelope.id,
            correlation_id=context.envelope.correlationid,
            trace_carrier=carrier,
        )
        outcome = await load_and_swap(self._registry, self._source, event, origin)
        if outcome.served is not None:
            self._on_swap()
        if outcome.retired is not None:
            task = asyncio.create_task(retire(self._source, outcome.retired))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        report = self._report(event, context, outcome)
        if report is not None:
            # In the chain of the model.ready it answers. A report that cannot be sent must
            # not undo the swap (nor dead-letter a record whose model serves).
            try:
                await context.publish(report)
            except Exception:
                log.exception("%s: rollout report not published", event.domain)
        if outcome.failure is not None:
            # Dead-lettered with the reason, so operators see it next to the original record.
            raise RejectedEvent(outcome.failure.reason)

    async def close(self) -> None:
        """Stop waiting to release replaced models (the process is ending)."""
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)

    def _report(
        self, ready: ModelReady, context: EventContext, outcome: SwapOutcome
    ) -> MeshEvent | None:
        if outcome.served is not None:
            return ModelLoaded(
                domain=ready.domain,
                replica_id=self._replica_id,
                model_version=ready.model_version,
                artifact=ready.artifact,
                promotion=ready.promotion,
                ready_event_id=context.envelope.id,
                load_seconds=outcome.load_seconds,
                switch_ms=outcome.switch_ms,
                replaced_version=outcome.replaced,
            )
        if outcome.failure is not None:
            return ModelLoadFailed(
                domain=ready.domain,
                replica_id=self._replica_id,
                model_version=ready.model_version,
                artifact=ready.artifact,
                promotion=ready.promotion,
                ready_event_id=context.envelope.id,
                reason=outcome.failure.reason,
                still_serving=outcome.replaced,
            )
        return None
