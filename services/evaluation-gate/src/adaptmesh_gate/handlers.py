"""The gate's subscribers: remember datasets, follow champions, judge candidates."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from adaptmesh_gate.champions import Champions
from adaptmesh_gate.datasets import DatasetRegistry
from adaptmesh_gate.evaluation import EvalSet, Evaluator
from adaptmesh_gate.policy import Contender, decide
from adaptmesh_gate.settings import GateSettings
from adaptmesh_gate.verdicts import decision_event, gate_report, model_ready
from adaptmesh_kit import (
    ArtifactError,
    ArtifactIntegrityError,
    EventContext,
    MeshApp,
    RejectedEvent,
)
from adaptmesh_schemas import Stream
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.events import DatasetVersioned, ModelReady, ModelTrained
from adaptmesh_schemas.values import ArtifactRef

log = logging.getLogger(__name__)

EndOffsets = Callable[[str], Awaitable[dict[int, int]]]


class ChampionViewBehindError(RuntimeError):
    """The gate has not read `mesh.models.ready.v1` far enough to know the champion."""


class Gate:
    """State and handlers of one gate process."""

    def __init__(
        self,
        app: MeshApp,
        *,
        settings: GateSettings,
        evaluator: Evaluator,
        datasets: DatasetRegistry,
        champions: Champions,
        end_offsets: EndOffsets,
    ) -> None:
        self._app = app
        self._settings = settings
        self._evaluate = evaluator
        self._datasets = datasets
        self._champions = champions
        self._end_offsets = end_offsets
        # Candidates wait on these for the other two subscriptions to catch up.
        self._dataset_learned = asyncio.Condition()
        self._champion_read = asyncio.Condition()

    async def on_dataset_versioned(self, event: DatasetVersioned, context: EventContext) -> None:
        """Remember where the version's snapshot lives, for the candidates trained on it."""
        self._datasets.remember(event.domain, event.dataset_version, event.artifact)
        async with self._dataset_learned:
            self._dataset_learned.notify_all()

    async def on_model_ready(self, event: ModelReady, context: EventContext) -> None:
        """Follow the production model per domain (the whole compacted log, at every start)."""
        self._champions.crown(event)
        self._champions.read(context.partition, context.offset)
        async with self._champion_read:
            self._champion_read.notify_all()

    async def on_model_trained(self, event: ModelTrained, context: EventContext) -> None:
        """Judge a candidate against the champion; promote it if it passes."""
        snapshot = await self._snapshot(event)
        await self._catch_up_with_champions()
        champion = self._champions.current(event.domain)
        if champion is not None and champion.model_version == event.model_version:
            # A redelivery after the promotion went out (e.g. a crash before the commit).
            log.info("%s already serves %s; nothing to judge", event.model_version, event.domain)
            return

        judged_on = EvalSet.of(snapshot, event.lineage.dataset_version)
        started = time.perf_counter()
        # The champion goes first: the evaluator keeps the most recently used models loaded,
        # and this order makes the champion survive whichever way the candidate fares.
        # A champion that cannot be loaded is not the candidate's fault: that fails (retried,
        # then dead-lettered) instead of approving without a comparison.
        defender: Contender | None = None
        if champion is not None:
            defended = await asyncio.to_thread(self._evaluate, champion.artifact, judged_on)
            defender = Contender(defended.evaluation, champion.labels)
        try:
            judged = await asyncio.to_thread(self._evaluate, event.artifact, judged_on)
        except ArtifactIntegrityError as error:
            raise RejectedEvent(f"candidate {event.model_version}: {error}") from None
        candidate = judged.evaluation
        if candidate.model_version != event.model_version:
            raise RejectedEvent(
                f"the artifact {event.artifact.uri} holds model {candidate.model_version}, "
                f"but the event announces {event.model_version}"
            )
        evaluation_seconds = time.perf_counter() - started
        approved, reasons = decide(
            snapshot.recipe.gate, Contender(candidate, event.labels), defender
        )
        report = gate_report(
            event,
            candidate,
            defender.evaluation if defender else None,
            approved=approved,
            reasons=reasons,
        )
        report_ref = await asyncio.to_thread(self._app.artifacts.put_document, report)
        # Written before anything is published: a failed write fails the handler (retried)
        # before any event went out, and no model.ready ever names a missing profile.
        profile_ref: ArtifactRef | None = None
        if approved and judged.profile is not None:
            profile_ref = await asyncio.to_thread(self._app.artifacts.put_document, judged.profile)
        await context.publish(decision_event(report, report_ref))
        log.info(
            "%s %s for %s (%d eval examples, %d cases, %.1fs evaluating): %s",
            "approved" if approved else "rejected",
            event.model_version,
            event.domain,
            len(judged_on.examples),
            len(judged_on.must_pass),
            evaluation_seconds,
            "; ".join(reasons),
        )
        if approved:
            ready = model_ready(event, report_ref, profile_ref)
            await context.publish(ready)
            self._champions.crown(ready)

    async def _snapshot(self, event: ModelTrained) -> DatasetSnapshot:
        """The dataset the candidate was trained on: its eval split and must-pass cases."""
        version = event.lineage.dataset_version
        # Since model.trained 1.1 the event carries the claim check itself; the index of
        # dataset versions is for candidates announced by older trainers.
        ref = event.dataset or await self._dataset_ref(event.domain, version)
        if ref is None:
            raise RejectedEvent(
                f"candidate {event.model_version} of {event.domain} names dataset version "
                f"{version}, which the gate has never seen on "
                f"{self._app.topic(Stream.DATASETS)} (waited "
                f"{self._settings.gate_dataset_wait_seconds:g}s): no eval split or must-pass "
                "cases to judge it on"
            )
        if ref.sha256 != event.lineage.dataset_sha256:
            raise RejectedEvent(
                f"candidate {event.model_version} names dataset {version} with digest "
                f"{event.lineage.dataset_sha256}, but that version's snapshot has {ref.sha256}"
            )
        try:
            snapshot = await asyncio.to_thread(
                self._app.artifacts.get_document, ref, DatasetSnapshot
            )
        except ArtifactError as error:
            raise RejectedEvent(f"dataset {version}: {error}") from None
        if snapshot.domain != event.domain:
            raise RejectedEvent(
                f"dataset {version} belongs to {snapshot.domain}, not to {event.domain}"
            )
        return snapshot

    async def _dataset_ref(self, domain: str, version: str) -> ArtifactRef | None:
        known = self._datasets.lookup(domain, version)
        if known is not None:
            return known
        # The datasets topic is consumed independently of the training topic: after a restart
        # both replay, and the candidate may come first.
        try:
            async with asyncio.timeout(self._settings.gate_dataset_wait_seconds):
                async with self._dataset_learned:
                    await self._dataset_learned.wait_for(
                        lambda: self._datasets.lookup(domain, version) is not None
                    )
        except TimeoutError:
            return None
        return self._datasets.lookup(domain, version)

    async def _catch_up_with_champions(self) -> None:
        """Wait until every `model.ready` written so far has been read.

        After a restart the compacted topic is replayed while candidates may already arrive;
        judging one before the replay reaches the domain's champion would compare it with
        nothing and promote it unchecked.
        """
        budget = self._settings.gate_champion_sync_seconds
        if budget == 0:
            return
        topic = self._app.topic(Stream.MODELS_READY)
        ends = await self._end_offsets(topic)
        try:
            async with asyncio.timeout(budget), self._champion_read:
                await self._champion_read.wait_for(lambda: not self._champions.lag(ends))
        except TimeoutError:
            raise ChampionViewBehindError(
                f"{topic} not read to its end within {budget:g}s "
                f"(unread records per partition: {self._champions.lag(ends)})"
            ) from None
