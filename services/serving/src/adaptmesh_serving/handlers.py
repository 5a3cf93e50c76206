"""Serving's subscriber: `model.ready` records load and swap models."""

from __future__ import annotations

from opentelemetry import propagate

from adaptmesh_kit import EventContext, RejectedEvent
from adaptmesh_schemas.events import ModelReady
from adaptmesh_serving.loading import ModelLoader, load_and_swap
from adaptmesh_serving.registry import ModelOrigin, ModelRegistry


class ModelReadyHandler:
    """Loads the model each `model.ready` names and makes it serve its domain.

    Subscribed with `broadcast=True`: every replica reads the whole compacted topic from its
    beginning, so replaying a record must be harmless (the registry's rules make it so).
    """

    def __init__(self, registry: ModelRegistry, load: ModelLoader) -> None:
        self._registry = registry
        self._load = load

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
        outcome = await load_and_swap(self._registry, self._load, event, origin)
        if outcome.failure is not None:
            # Dead-lettered with the reason, so operators see it next to the original record.
            raise RejectedEvent(outcome.failure.reason)
