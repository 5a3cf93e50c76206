"""The training service's subscribers: a retrain request is recorded, never trained in hand.

Training happens in the runner (`runner.py`) from the run ledger; the handler only writes the
run down and returns, so the request's offset is committed at once however long the run takes.
"""

from __future__ import annotations

import logging

from opentelemetry import propagate

from adaptmesh_kit import EventContext
from adaptmesh_schemas.events import DatasetVersioned, ModelReady, RetrainRequested
from adaptmesh_training.ledger import TrainingLedger
from adaptmesh_training.lineage import new_run_id
from adaptmesh_training.runner import RunRunner
from adaptmesh_training.runs import RunLedger, RunRecord

log = logging.getLogger(__name__)


class TrainingHandlers:
    """Handlers sharing the run ledger, the runner and what is known of each domain."""

    def __init__(self, runs: RunLedger, knowledge: TrainingLedger, runner: RunRunner) -> None:
        self._runs = runs
        self._knowledge = knowledge
        self._runner = runner

    async def on_retrain_requested(self, event: RetrainRequested, context: EventContext) -> None:
        """Record the run (once per request id) and wake the runner."""
        trace_context: dict[str, str] = {}
        propagate.inject(trace_context)
        record = RunRecord(
            run_id=new_run_id(),
            request_id=context.envelope.id,
            request=event,
            correlation_id=context.envelope.correlationid,
            trace_context=trace_context,
        )
        if self._runs.add(record):
            log.info("run %s recorded for %s", record.run_id, event.domain)
        else:
            log.info("request %s was already recorded", context.envelope.id)
        self._runner.wake()

    async def on_dataset_versioned(self, event: DatasetVersioned, context: EventContext) -> None:
        """Learn dataset ancestry, so a late request for an older version is recognised."""
        self._knowledge.record_dataset(event.domain, event.dataset_version, event.parent_version)
        self._knowledge.record_base(event.base_model)
        self._runner.wake()

    async def on_model_ready(self, event: ModelReady, context: EventContext) -> None:
        """Remember each domain's champion: the parent a retrain starts from."""
        self._knowledge.record_champion(event.domain, event.model_version, event.artifact)
