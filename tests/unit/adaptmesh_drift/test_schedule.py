"""Settle windows, cool-downs, merging and the durable outbox, on an injected clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adaptmesh_drift.decisions import drift_request, explicit_request
from adaptmesh_drift.outbox import Outbox, PendingRequest
from adaptmesh_drift.relay import OutboxRelay
from adaptmesh_drift.schedule import Origin, RetrainScheduler, Timing
from adaptmesh_schemas.events import RetrainReason, RetrainRequested
from adaptmesh_schemas.values import DriftEvidence
from tests.meshtest import eventually
from tests.unit.adaptmesh_drift.builders import dataset

TIMING = Timing(settle_seconds=1.5, cooldown_seconds=30.0)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def origin(event_id: str) -> Origin:
    return Origin(
        correlation_id=f"corr-{event_id}",
        event_id=event_id,
        trace_context={"traceparent": f"00-{'a' * 32}-{'b' * 16}-01"},
    )


def change(version: str, event_id: str, kind: str = "data") -> RetrainRequested:
    return explicit_request(
        dataset("fin", version, change_kind=kind, causes=(f"chg-{event_id}",)), event_id
    )


def detection(event_id: str = "inf-1") -> RetrainRequested:
    return drift_request(
        domain="fin",
        dataset_version="ds-1",
        dataset=dataset("fin", "ds-1").artifact,
        evidence=DriftEvidence(
            detector="label-chi2", statistic=80.0, threshold=20.0, window_size=20, drifted=True
        ),
        detail="model m-1 drifted",
        drift_event_id=event_id,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def scheduler(clock: Clock) -> RetrainScheduler:
    return RetrainScheduler(Outbox(None), TIMING, clock)


def test_a_request_is_due_after_the_settle_window(
    scheduler: RetrainScheduler, clock: Clock
) -> None:
    scheduler.request(change("ds-1", "e1"), origin("e1"))
    clock.advance(1.4)
    assert scheduler.due() == []
    assert scheduler.next_due_at() == pytest.approx(clock.now + 0.1)
    clock.advance(0.1)
    [due] = scheduler.due()
    assert due.request.dataset_version == "ds-1"
    assert due.correlation_id == "corr-e1"
    assert due.causation_id == "e1"
    assert due.trace_context["traceparent"].startswith("00-aaaa")


def test_a_burst_becomes_one_request_for_the_newest_version_with_every_cause(
    scheduler: RetrainScheduler, clock: Clock
) -> None:
    scheduler.request(change("ds-1", "e1", "taxonomy"), origin("e1"))
    clock.advance(0.1)
    scheduler.request(change("ds-2", "e2", "regulation"), origin("e2"))
    clock.advance(1.45)
    assert scheduler.due() == [], "the settle restarts with each version"
    clock.advance(0.1)
    [due] = scheduler.due()
    request = due.request
    assert request.dataset_version == "ds-2"
    assert request.reason is RetrainReason.REGULATION
    assert request.cause_event_ids == ("chg-e1", "e1", "chg-e2", "e2")
    assert "supersedes: taxonomy change" in request.detail
    assert (due.correlation_id, due.causation_id) == ("corr-e2", "e2")


def test_the_cool_down_holds_the_next_request_back(
    scheduler: RetrainScheduler, clock: Clock
) -> None:
    scheduler.request(change("ds-1", "e1"), origin("e1"))
    clock.advance(2)
    [first] = scheduler.due()
    assert scheduler.published(first)
    assert scheduler.outbox.pending() == []

    clock.advance(5)
    scheduler.request(change("ds-2", "e2"), origin("e2"))
    clock.advance(2)
    assert scheduler.due() == []
    published_at = clock.now - 7
    assert scheduler.next_due_at() == pytest.approx(published_at + 30)
    clock.advance(22.9)
    assert scheduler.due() == []
    clock.advance(0.1)
    [second] = scheduler.due()
    assert second.request.dataset_version == "ds-2"
    assert second.request.cause_event_ids == ("chg-e2", "e2"), "published causes do not repeat"


def test_a_request_replaced_while_being_published_stays_pending(
    scheduler: RetrainScheduler, clock: Clock
) -> None:
    scheduler.request(change("ds-1", "e1"), origin("e1"))
    clock.advance(2)
    [in_flight] = scheduler.due()
    scheduler.request(change("ds-2", "e2"), origin("e2"))  # arrives during the publish
    assert not scheduler.published(in_flight)
    [waiting] = scheduler.outbox.pending()
    assert waiting.request.dataset_version == "ds-2"
    assert scheduler.due_at(waiting) == pytest.approx(clock.now + 30)


def test_a_detection_joins_a_pending_change_without_taking_it_over(
    scheduler: RetrainScheduler, clock: Clock
) -> None:
    first = scheduler.request(change("ds-2", "e1", "taxonomy"), origin("e1"))
    clock.advance(1)
    merged = scheduler.request(detection("inf-9"), origin("inf-9"))
    assert merged.request.reason is RetrainReason.TAXONOMY
    assert merged.request.dataset_version == "ds-2"
    assert merged.request.evidence is not None
    assert merged.request.evidence.detector == "label-chi2"
    assert merged.request.cause_event_ids == ("chg-e1", "e1", "inf-9")
    assert merged.correlation_id == "corr-e1", "the change's chain and trace are kept"
    assert merged.request_id != first.request_id
    assert merged.not_before == pytest.approx(clock.now + 1.5)

    # And a change arriving on a pending detection takes over but keeps the evidence.
    scheduler.cancel("fin")
    scheduler.request(detection("inf-10"), origin("inf-10"))
    taken = scheduler.request(change("ds-3", "e3"), origin("e3"))
    assert taken.request.reason is RetrainReason.DATA
    assert taken.request.evidence is not None
    assert taken.correlation_id == "corr-e3"


def test_cancel_drops_the_pending_request(scheduler: RetrainScheduler) -> None:
    scheduler.request(change("ds-1", "e1"), origin("e1"))
    dropped = scheduler.cancel("fin")
    assert dropped is not None
    assert dropped.request.dataset_version == "ds-1"
    assert scheduler.outbox.pending() == []
    assert scheduler.cancel("fin") is None


def test_the_outbox_survives_a_reopen(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "state" / "outbox.sqlite3"
    scheduler = RetrainScheduler(Outbox(path), TIMING, clock)
    scheduler.request(change("ds-1", "e1"), origin("e1"))
    clock.advance(2)
    [published] = scheduler.due()
    scheduler.published(published)
    clock.advance(1)
    scheduler.request(change("ds-2", "e2"), origin("e2"))
    before = scheduler.outbox.pending()
    scheduler.outbox.close()

    reopened = RetrainScheduler(Outbox(path), TIMING, clock)
    assert reopened.outbox.durable
    assert reopened.outbox.pending() == before
    assert reopened.outbox.last_request_at("fin") == pytest.approx(clock.now - 1)
    clock.advance(28.9)
    assert reopened.due() == [], "the cool-down survives the restart too"
    clock.advance(0.2)
    [due] = reopened.due()
    assert due == before[0]
    reopened.outbox.close()


async def test_the_relay_publishes_when_due_and_retries_failures(tmp_path: Path) -> None:
    scheduler = RetrainScheduler(Outbox(tmp_path / "outbox.sqlite3"), Timing(0.05, 0.0))
    sent: list[PendingRequest] = []
    failures = [RuntimeError("broker away")]

    async def publish(pending: PendingRequest) -> None:
        if failures:
            raise failures.pop()
        sent.append(pending)

    relay = OutboxRelay(scheduler, publish)
    relay.start()
    try:
        scheduler.request(change("ds-1", "e1"), origin("e1"))
        relay.wake()
        await eventually(lambda: len(sent) == 1, 10, "not published after a failure")
        assert failures == []
        assert scheduler.outbox.pending() == []
        scheduler.request(change("ds-2", "e2"), origin("e2"))
        relay.wake()
        await eventually(lambda: len(sent) == 2, 10)
    finally:
        await relay.stop()
    assert [p.request.dataset_version for p in sent] == ["ds-1", "ds-2"]
    assert not relay.running


async def test_a_stopped_relay_leaves_requests_pending_unless_told_to_flush() -> None:
    sent: list[PendingRequest] = []

    async def publish(pending: PendingRequest) -> None:
        sent.append(pending)

    durable = RetrainScheduler(Outbox(None), Timing(60.0, 0.0))
    relay = OutboxRelay(durable, publish)
    relay.start()
    durable.request(change("ds-1", "e1"), origin("e1"))
    relay.wake()
    await asyncio.sleep(0.05)
    await relay.stop()
    assert sent == []
    assert len(durable.outbox.pending()) == 1

    in_memory = RetrainScheduler(Outbox(None), Timing(60.0, 0.0))
    flushing = OutboxRelay(in_memory, publish, flush_on_stop=True)
    flushing.start()
    in_memory.request(change("ds-1", "e1"), origin("e1"))
    await flushing.stop()
    assert [p.request.dataset_version for p in sent] == ["ds-1"]
    assert in_memory.outbox.pending() == []
