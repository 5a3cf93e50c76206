"""The gate's subscribers: remember datasets, follow champions and decisions, judge
candidates, carry out rollbacks.

Candidates (`mesh.training.v1`) and rollbacks (`mesh.changes.v1`) are consumed exactly once
(`create_app(..., exactly_once=...)`): the decision, the promotion and the record's offset are
committed in one Kafka transaction, and an instance that lost the partition meanwhile is fenced,
so each candidate is promoted at most once even across rebalances and crashes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from adaptmesh_gate.champions import ApprovedModel, ApprovedModels, Champions
from adaptmesh_gate.datasets import DatasetRegistry
from adaptmesh_gate.evaluation import EvalSet, Evaluator
from adaptmesh_gate.policy import Contender, decide
from adaptmesh_gate.report_html import render_report
from adaptmesh_gate.settings import GateSettings
from adaptmesh_gate.statistics import decision_seed
from adaptmesh_gate.verdicts import (
    decision_event,
    derived_event_id,
    gate_report,
    model_ready,
    rollback_promotion,
    rollback_refused,
)
from adaptmesh_kit import (
    ArtifactError,
    ArtifactIntegrityError,
    EventContext,
    MeshApp,
    RejectedEvent,
)
from adaptmesh_kit.faults import fault_point
from adaptmesh_schemas import MeshEvent, Stream
from adaptmesh_schemas.documents import DatasetSnapshot, ModelManifest
from adaptmesh_schemas.events import (
    DatasetVersioned,
    GateApproved,
    ModelReady,
    ModelTrained,
    RollbackRequested,
    RolledBack,
)
from adaptmesh_schemas.values import ArtifactRef, Rollback

log = logging.getLogger(__name__)

ModelVerifier = Callable[[ArtifactRef], ModelManifest]
"""Reads a model's manifest and checks every file it lists against its digest (blocking);
raises `ArtifactIntegrityError` / `ArtifactError`."""


class Gate:
    """State and handlers of one gate process."""

    def __init__(
        self,
        app: MeshApp,
        *,
        settings: GateSettings,
        evaluator: Evaluator,
        verify_model: ModelVerifier,
        datasets: DatasetRegistry,
    ) -> None:
        self._app = app
        self._settings = settings
        self._evaluate = evaluator
        self._verify_model = verify_model
        self._datasets = datasets
        self._champions = Champions()
        self._approved = ApprovedModels()
        # Candidates wait on this for the datasets subscription to catch up.
        self._dataset_learned = asyncio.Condition()

    async def on_dataset_versioned(self, event: DatasetVersioned, context: EventContext) -> None:
        """Remember where the version's snapshot lives, for the candidates trained on it."""
        self._datasets.remember(event.domain, event.dataset_version, event.artifact)
        async with self._dataset_learned:
            self._dataset_learned.notify_all()

    async def on_model_ready(self, event: ModelReady, context: EventContext) -> None:
        """Follow the production model per domain (the whole compacted log, at every start)."""
        self._champions.crown(event)
        self._approved.served(event)

    async def on_decision(self, event: MeshEvent, context: EventContext) -> None:
        """Follow every approval and rollback (the whole `mesh.gate.v1` log, at every start)."""
        if isinstance(event, GateApproved):
            self._approved.approved(event)
        elif isinstance(event, RolledBack):
            self._approved.rolled_back(event)

    async def on_model_trained(self, event: ModelTrained, context: EventContext) -> None:
        """Judge a candidate against the champion; promote it if it passes."""
        snapshot = await self._snapshot(event)
        await self._catch_up(Stream.MODELS_READY)
        champion = self._champions.current(event.domain)
        if champion is not None and champion.model_version == event.model_version:
            # A redelivery after the promotion went out (e.g. a crash before the commit).
            log.info("%s already serves %s; nothing to judge", event.model_version, event.domain)
            return

        judged_on = EvalSet.of(snapshot, event.lineage.dataset_version)
        started = time.perf_counter()
        # The champion goes first: the evaluator keeps the most recently used models loaded,
        # and the champion is the one worth keeping (see LoadedModels).
        defender: Contender | None = None
        if champion is not None:
            defended = await asyncio.to_thread(self._evaluate, champion.artifact, judged_on)
            defender = Contender(defended.evaluation, champion.labels, defended.predictions)
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
        policy = snapshot.recipe.gate
        decision = decide(
            policy,
            Contender(candidate, event.labels, judged.predictions),
            defender,
            judged_on.examples,
            seed=decision_seed(
                judged_on.dataset_version,
                event.model_version,
                champion.model_version if champion else None,
            ),
        )
        report = gate_report(
            event,
            candidate,
            defender.evaluation if defender else None,
            decision=decision,
            policy=policy,
            champion_ready=champion,
        )
        # The domain's reports and profiles lie under its residency's root, as its data does.
        store = self._app.artifacts.for_residency(snapshot.recipe.residency)
        # Written before anything is published: a failed write fails the handler (retried)
        # before any event went out, and no event ever names a document that is not there.
        report_ref = await asyncio.to_thread(store.put_document, report)
        # Rendering a report of many labels takes a while (~0.1 s for 52): off the event loop.
        html = await asyncio.to_thread(render_report, report)
        html_ref = await asyncio.to_thread(store.put_bytes, html.encode())
        profile_ref: ArtifactRef | None = None
        if decision.approved and judged.profile is not None:
            profile_ref = await asyncio.to_thread(store.put_document, judged.profile)
        cause = context.envelope.id
        verdict = decision_event(event, report, report_ref, html_ref, profile_ref)
        fault_point("gate.decided")  # decided and reported, nothing published yet
        await context.publish(verdict, event_id=derived_event_id(cause, verdict.ce_type()))
        log.info(
            "%s %s for %s (%d eval examples, %d cases, %.1fs evaluating): %s",
            "approved" if decision.approved else "rejected",
            event.model_version,
            event.domain,
            len(judged_on.examples),
            len(judged_on.must_pass),
            evaluation_seconds,
            "; ".join(decision.reasons),
        )
        if decision.approved:
            ready = model_ready(
                event,
                report_ref,
                profile_ref,
                promotion=self._champions.next_promotion(champion),
            )
            await context.publish(ready, event_id=derived_event_id(cause, ready.ce_type()))

    async def on_rollback(self, event: RollbackRequested, context: EventContext) -> None:
        """Put an earlier approved model back into production, after verifying its files."""
        await self._catch_up(Stream.MODELS_READY)
        await self._catch_up(Stream.GATE)
        cause = context.envelope.id
        requested_by = event.requested_by or context.envelope.source
        current = self._champions.current(event.domain)
        target, refusal = self._rollback_target(event, current)
        if target is not None:
            refusal = await self._unverifiable(target, event.domain)
        if refusal is not None or target is None:
            reasons = (refusal or "no target",)
            refused = rollback_refused(event, cause, requested_by, current, reasons)
            await context.publish(refused, event_id=derived_event_id(cause, refused.ce_type()))
            raise RejectedEvent(f"rollback of {event.domain} refused: {reasons[0]}")
        assert current is not None  # a target exists only when something serves
        done, ready = rollback_promotion(
            target,
            Rollback(
                replaced_version=current.model_version,
                requested_by=requested_by,
                reason=event.reason,
                request_id=cause,
            ),
            domain=event.domain,
            promotion=self._champions.next_promotion(current),
        )
        await context.publish(done, event_id=derived_event_id(cause, done.ce_type()))
        await context.publish(ready, event_id=derived_event_id(cause, ready.ce_type()))
        log.info(
            "rolled %s back from %s to %s (asked by %s: %s)",
            event.domain,
            current.model_version,
            target.model_version,
            requested_by,
            event.reason,
        )

    def _rollback_target(
        self, event: RollbackRequested, current: ModelReady | None
    ) -> tuple[ApprovedModel | None, str | None]:
        """The approved model the rollback asks for, or why there is none."""
        domain = event.domain
        if current is None:
            return None, f"{domain} has no production model to roll back"
        wanted = event.to_version or self._approved.previous(domain, current.model_version)
        if wanted is None:
            return None, (
                f"{domain} has had no production model before {current.model_version}: name "
                "the version to roll back to"
            )
        if wanted == current.model_version:
            return None, f"{wanted} already serves {domain}"
        ever_approved, target = self._approved.lookup(domain, wanted)
        if not ever_approved:
            known = ", ".join(self._approved.versions(domain)) or "none"
            return None, (f"{wanted} was never approved for {domain} (approved models: {known})")
        if target is None:
            return None, (
                f"{wanted} was approved before the gate recorded approved models' artifacts "
                "(gate.approved 1.0): it cannot be re-promoted"
            )
        return target, None

    async def _unverifiable(self, target: ApprovedModel, domain: str) -> str | None:
        """Why `target`'s files cannot be trusted, or None when every digest matches."""
        try:
            manifest = await asyncio.to_thread(self._verify_model, target.artifact)
        except ArtifactIntegrityError as error:
            return f"{target.model_version} fails verification (tampered?): {error}"
        except ArtifactError as error:
            return f"{target.model_version} cannot be read: {error}"
        if manifest.model_version != target.model_version or manifest.domain != domain:
            return (
                f"{target.artifact.uri} holds {manifest.domain}/{manifest.model_version}, "
                f"not {domain}/{target.model_version}"
            )
        return None

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

    async def _catch_up(self, stream: Stream) -> None:
        """Wait until every record written so far to `stream` (a broadcast subscription) has
        been read.

        After a restart the logs are replayed while candidates may already arrive; judging one
        before the replay reaches the domain's champion would compare it with nothing and
        promote it unchecked. A timeout fails the handler (retried, then dead-lettered): the
        gate does not guess.
        """
        budget = self._settings.gate_champion_sync_seconds
        if budget > 0:
            await self._app.caught_up(stream, within_seconds=budget)
