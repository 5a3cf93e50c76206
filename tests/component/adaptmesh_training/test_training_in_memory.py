"""The training service's decisions that need no Ray, on FastStream's in-memory broker.

Requests are recorded in the run ledger and carried out by the runner in the background; bad
references, foreign or unresolvable datasets and stale or superseded requests are settled
before Ray is touched, and these tests check that Ray was indeed never started for them. Real
training is in tests/integration/adaptmesh_training/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import ray
from faststream.kafka import TestKafkaBroker

from adaptmesh_kit import ArtifactStore, EventContext, MeshApp
from adaptmesh_schemas import Envelope, MeshEvent, Stream
from adaptmesh_schemas.events import (
    ModelReady,
    ModelTrained,
    RetrainReason,
    RetrainRequested,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, Lineage
from adaptmesh_training.app import TrainingApp, build_app
from adaptmesh_training.runs import RunStatus
from adaptmesh_training.settings import TrainingSettings
from tests.meshtest import eventually
from tests.unit.adaptmesh_training.snapshots import BASE_MODEL, dataset_versioned, tiny_snapshot

DOMAIN = "fin-news"


def settings(tmp_path: Path) -> TrainingSettings:
    return TrainingSettings(
        artifact_root=f"file://{tmp_path}/artifacts",
        provision_topics=False,
        # The in-memory broker has no log to catch up with.
        training_catch_up_seconds=0,
    )


@asynccontextmanager
async def running(app: TrainingApp) -> AsyncIterator[None]:
    async with TestKafkaBroker(app.broker):
        # The in-memory broker replaces `app.start()`; the runner starts as it would there.
        await app.runner.start()
        try:
            yield
        finally:
            await app.runner.stop()


async def settled(app: TrainingApp, count: int) -> None:
    """Wait until `count` runs are recorded and none is open any more."""
    await eventually(
        lambda: len(app.runs.all()) == count and app.runs.next_open() is None,
        30,
        f"runs did not settle: {app.runs.all()}",
    )


class Observed:
    """Training events the service published, with their envelopes."""

    def __init__(self, app: MeshApp) -> None:
        self.events: list[tuple[MeshEvent, Envelope]] = []

        @app.handles(
            Stream.TRAINING, TrainingStarted, TrainingProgress, ModelTrained, TrainingFailed
        )
        async def record(event: MeshEvent, context: EventContext) -> None:
            self.events.append((event, context.envelope))

    def caused_by(self, envelope: Envelope) -> list[MeshEvent]:
        return [event for event, seen in self.events if seen.causationid == envelope.id]


def request(ref: ArtifactRef, version: str = "v1") -> RetrainRequested:
    return RetrainRequested(
        domain=DOMAIN, reason=RetrainReason.DATA, dataset_version=version, dataset=ref
    )


async def test_a_dataset_whose_digest_does_not_match_fails_the_run_without_ray(
    tmp_path: Path,
) -> None:
    app = build_app(settings(tmp_path))
    observed = Observed(app)
    ref = app.artifacts.put_document(tiny_snapshot(DOMAIN))
    tampered = ref.model_copy(update={"sha256": "0" * 64})
    async with running(app):
        sent = await app.publish(request(tampered))
        await settled(app, 1)
    [failed] = observed.caused_by(sent)
    assert isinstance(failed, TrainingFailed)
    assert failed.retryable is False
    assert "ArtifactIntegrityError" in failed.error
    assert "expected " + "0" * 64 in failed.error
    assert not ray.is_initialized()


async def test_a_dataset_of_another_domain_is_refused(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    observed = Observed(app)
    ref = app.artifacts.put_document(tiny_snapshot("other-domain"))
    async with running(app):
        sent = await app.publish(request(ref))
        await settled(app, 1)
    [failed] = observed.caused_by(sent)
    assert isinstance(failed, TrainingFailed)
    assert "belongs to 'other-domain'" in failed.error
    assert failed.retryable is False


async def test_an_unresolvable_base_model_fails_before_training_starts(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    observed = Observed(app)
    missing = BaseModelSpec(model_id="package:adaptmesh-no-such-model")
    ref = app.artifacts.put_document(tiny_snapshot(DOMAIN, base_model=missing))
    async with running(app):
        sent = await app.publish(request(ref))
        await settled(app, 1)
    [failed] = observed.caused_by(sent)  # no training.started before it
    assert isinstance(failed, TrainingFailed)
    assert "BaseModelNotFoundError" in failed.error
    assert "not installed" in failed.error
    assert not ray.is_initialized()


async def test_a_request_for_an_ancestor_of_a_trained_version_is_skipped(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    app.knowledge.record_trained(DOMAIN, "v3")
    observed = Observed(app)
    store = ArtifactStore(settings(tmp_path).artifact_root)
    v2 = store.put_document(tiny_snapshot(DOMAIN, parent_version="v1"))
    v1_snapshot = tiny_snapshot(DOMAIN, recipe_version="r0")
    v1 = store.put_document(v1_snapshot)
    async with running(app):
        # Ingestion announced v3 (parent v2); v2's snapshot names v1 as its parent.
        await app.publish(dataset_versioned(DOMAIN, "v3", parent="v2", ref=v2))
        await app.publish(dataset_versioned(DOMAIN, "v2", parent="v1", ref=v2))
        stale = await app.publish(request(v1, version="v1"))
        after = await app.publish(request(v1.model_copy(update={"sha256": "1" * 64}), "v4"))
        await settled(app, 2)
        runs = app.runs.all()
    assert app.knowledge.ancestors(DOMAIN, "v3") == {"v2", "v1"}
    assert observed.caused_by(stale) == []
    assert [run.status for run in runs] == [RunStatus.SKIPPED, RunStatus.FAILED]
    assert "newer dataset" in runs[0].note
    assert [type(event) for event in observed.caused_by(after)] == [TrainingFailed]
    assert not ray.is_initialized()


async def test_a_request_superseded_by_a_newer_one_of_its_domain_is_skipped(
    tmp_path: Path,
) -> None:
    app = build_app(settings(tmp_path))
    observed = Observed(app)
    missing = BaseModelSpec(model_id="package:adaptmesh-no-such-model")
    v1 = app.artifacts.put_document(tiny_snapshot(DOMAIN))
    v2 = app.artifacts.put_document(tiny_snapshot(DOMAIN, parent_version="v1", base_model=missing))
    async with TestKafkaBroker(app.broker):
        # Both are recorded before the runner looks: the older one is superseded.
        await app.publish(dataset_versioned(DOMAIN, "v2", parent="v1", ref=v2))
        older = await app.publish(request(v1, version="v1"))
        newer = await app.publish(request(v2, version="v2"))
        await app.runner.start()
        try:
            await settled(app, 2)
            runs = app.runs.all()
        finally:
            await app.runner.stop()
    assert observed.caused_by(older) == []
    assert runs[0].status is RunStatus.SKIPPED
    assert "newer request (dataset v2)" in runs[0].note
    # The newer one is carried out (here it fails early: its base model is not installed).
    assert [type(event) for event in observed.caused_by(newer)] == [TrainingFailed]
    assert not ray.is_initialized()


async def test_a_redelivered_request_is_recorded_once(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    ref = app.artifacts.put_document(tiny_snapshot(DOMAIN)).model_copy(update={"sha256": "0" * 64})
    async with running(app):
        sent = await app.publish(request(ref))
        await settled(app, 1)
        # The same record again (a redelivery the kit's dedupe did not catch: another group).
        app_record = app.runs.all()[0]
        assert app_record.request_id == sent.id
        assert not app.runs.add(app_record.model_copy(update={"run_id": "f" * 32}))


async def test_the_champion_is_learnt_from_model_ready(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    ref = ArtifactRef(uri="file:///models/x/manifest.json", sha256="ef" * 32)
    ready = ModelReady(
        domain=DOMAIN,
        model_version="m-20260101000000-abcdef",
        artifact=ref,
        labels=("crude", "grain"),
        lineage=Lineage(
            dataset_version="v1",
            dataset_sha256="ab" * 32,
            recipe_version="r1",
            base_model=BASE_MODEL,
            code_version="0.1.0",
            seed=1,
            correlation_id="c",
        ),
    )
    async with TestKafkaBroker(app.broker):
        await app.publish(ready)
    assert app.knowledge.champion(DOMAIN) == "m-20260101000000-abcdef"
    assert app.knowledge.champion_artifact(DOMAIN) == ref
