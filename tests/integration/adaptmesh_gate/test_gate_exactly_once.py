"""Exactly-once promotion on a real broker: two gate instances, a rebalance mid-judgement.

Both instances share the consumer group; the training topic has one partition, so one of them
owns it. The candidate's first evaluation blocks longer than `max_poll_interval_ms`: the owner
drops out of the group while it is still judging, the other instance takes the partition over
(its transactional producer fences the first), judges the candidate itself and promotes it.
When the first instance finally finishes, it must not publish anything. Serving, reading the
same log, must end on the new model and never go back to an older one — except through an
explicit rollback, asked for with the CLI as a user would; a rollback to a tampered model is
refused and changes nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from adaptmesh_cli.logs import read_topic
from adaptmesh_cli.rollback import EXIT_REFUSED, EXIT_ROLLED_BACK, run_rollback
from adaptmesh_gate.app import build_app
from adaptmesh_gate.evaluation import EvalSet, Evaluated
from adaptmesh_gate.settings import GateSettings
from adaptmesh_kit import ArtifactStore, MeshSettings, create_app
from adaptmesh_schemas import Stream
from adaptmesh_schemas.events import (
    GateApproved,
    GateRejected,
    ModelReady,
    RollbackRefused,
    RollbackRequested,
    RolledBack,
)
from adaptmesh_schemas.values import ArtifactRef
from adaptmesh_serving.app import build_app as build_serving
from adaptmesh_serving.settings import ServingSettings
from tests.component.adaptmesh_gate.gate_events import model_trained, snapshot, store_dataset
from tests.component.adaptmesh_gate.test_gate_in_memory import (
    CASES,
    DOMAIN,
    EXAMPLES,
    PreparedEvaluations,
    PreparedManifests,
)
from tests.meshtest import mesh_settings
from tests.unit.adaptmesh_serving.fakes import FakeClassifier

pytestmark = pytest.mark.kafka

MAX_POLL_INTERVAL_MS = 2000
# Longer than the poll interval by a margin the group needs to notice and rebalance.
SLOW_SECONDS = 8.0


class SlowFirstJudgement:
    """The prepared evaluations, with the first evaluation of one model blocking its worker
    thread for `SLOW_SECONDS` (shared by both gate instances, so only one of them is slow)."""

    def __init__(self, evaluations: PreparedEvaluations) -> None:
        self.evaluations = evaluations
        self.slow_digest: str | None = None
        self.slow_done = threading.Event()
        self.judged: list[str] = []  # digests, in evaluation order
        self._lock = threading.Lock()
        self._slowed = False

    def __call__(self, model: ArtifactRef, on: EvalSet, /) -> Evaluated:
        with self._lock:
            self.judged.append(model.sha256)
            slow = model.sha256 == self.slow_digest and not self._slowed
            self._slowed = self._slowed or slow
        if slow:
            time.sleep(SLOW_SECONDS)
            result = self.evaluations(model, on)
            self.slow_done.set()
            return result
        return self.evaluations(model, on)


async def served_version(client: httpx.AsyncClient) -> tuple[str | None, int | None]:
    body = (await client.get(f"/v1/domains/{DOMAIN}/model")).json()
    return body.get("model_version"), body.get("promotion")


async def wait_for(
    settings: MeshSettings, stream: Stream, predicate: object, seconds: float = 60
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        events = [event for _, event in await read_topic(settings, stream)]
        if callable(predicate) and predicate(events):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{stream} never reached the expected state")


@pytest.mark.timeout(300)
async def test_two_gates_and_a_rebalance_mid_judgement_promote_each_candidate_once(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    base = mesh_settings(
        kafka_bootstrap, unique_name, tmp_path, max_poll_interval_ms=MAX_POLL_INTERVAL_MS
    )
    settings = GateSettings(**base.model_dump(), gate_dataset_wait_seconds=30)
    store = ArtifactStore(settings.artifact_root)
    evaluations = PreparedEvaluations()
    judgement = SlowFirstJudgement(evaluations)
    dataset = store_dataset(store, "ds-1", snapshot(DOMAIN, EXAMPLES, must_pass=CASES))
    first = evaluations.add("m1", {"gold": 0.9, "trade": 0.9})
    second = evaluations.add("m2", {"gold": 0.9, "trade": 0.9})
    judgement.slow_digest = second.sha256
    manifests = PreparedManifests(evaluations)

    def fake_model(_store: ArtifactStore, ref: ArtifactRef) -> FakeClassifier:
        version = evaluations.by_digest[ref.sha256].model_version
        return FakeClassifier(version, labels=("gold", "trade"))

    serving = build_serving(
        ServingSettings(**base.model_dump(exclude={"max_poll_interval_ms"})),
        load_model=fake_model,
    )
    served: list[tuple[str | None, int | None]] = []
    async with AsyncExitStack() as stack:
        probe = await stack.enter_async_context(create_app(settings, "probe-training"))
        for _ in range(2):
            gate = build_app(settings, evaluator=judgement, verify_model=manifests)
            await stack.enter_async_context(gate)
        await stack.enter_async_context(serving.http.router.lifespan_context(serving.http))
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=serving.http), base_url="http://serving"
            )
        )

        async def watch_serving() -> None:
            while True:
                version = await served_version(client)
                if version[0] is not None and (not served or served[-1] != version):
                    served.append(version)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch_serving())
        await probe.publish(dataset)
        await probe.publish(model_trained(dataset, "m1", first))
        await wait_for(settings, Stream.MODELS_READY, lambda events: len(events) == 1)

        await probe.publish(model_trained(dataset, "m2", second))
        # The slow instance finishes its judgement long after it lost the partition...
        assert await asyncio.to_thread(judgement.slow_done.wait, 60), "m2 was never judged"
        # ...and then has had ample time to (wrongly) publish.
        await asyncio.sleep(3.0)
        await wait_for(settings, Stream.MODELS_READY, lambda events: len(events) >= 2)

        # A rollback afterwards, as a user asks for it: one more promotion, also exactly once.
        said: list[str] = []
        rolled = await run_rollback(
            settings,
            RollbackRequested(domain=DOMAIN, reason="m2 misroutes", requested_by="ops"),
            wait=60,
            say=said.append,
        )
        assert rolled == EXIT_ROLLED_BACK, said
        assert said[-1].startswith("rolled back: m1 serves fin-news again (promotion 3"), said
        await wait_for(settings, Stream.MODELS_READY, lambda events: len(events) >= 3)
        # Back to m2, whose files were tampered with since: refused, nothing changes.
        manifests.tampered.add(second.sha256)
        refused = await run_rollback(
            settings,
            RollbackRequested(domain=DOMAIN, to_version="m2", reason="try", requested_by="ops"),
            wait=60,
            say=said.append,
        )
        assert refused == EXIT_REFUSED, said
        assert "m2 fails verification (tampered?)" in said[-2], said
        await asyncio.sleep(1.0)
        watcher.cancel()
        final = await served_version(client)
        model = (await client.get(f"/v1/domains/{DOMAIN}/model")).json()

    # The rebalance really happened mid-judgement: m2 was evaluated by both instances.
    assert judgement.judged.count(second.sha256) == 2, judgement.judged

    decisions = [event for _, event in await read_topic(settings, Stream.GATE)]
    verdicts = [e for e in decisions if isinstance(e, GateApproved | GateRejected)]
    assert [(type(e), e.model_version) for e in verdicts] == [
        (GateApproved, "m1"),
        (GateApproved, "m2"),
    ], "exactly one decision per candidate"
    rollbacks = [e for e in decisions if isinstance(e, RolledBack | RollbackRefused)]
    assert [type(e) for e in rollbacks] == [RolledBack, RollbackRefused]
    promotions = [
        (e.model_version, e.promotion)
        for _, e in await read_topic(settings, Stream.MODELS_READY)
        if isinstance(e, ModelReady)
    ]
    assert promotions == [("m1", 1), ("m2", 2), ("m1", 3)], "exactly one promotion each"

    # Serving followed the promotions in order and never went back on its own.
    assert served == [("m1", 1), ("m2", 2), ("m1", 3)], served
    assert final == ("m1", 3)
    # Serving's view of the model says it is a rollback, of what and who asked.
    assert model["rollback"]["replaced_version"] == "m2"
    assert model["rollback"]["requested_by"] == "ops"
    assert model["rollback"]["reason"] == "m2 misroutes"
