"""When a retrain request goes out: settle windows, cool-downs, and merging bursts.

Changes come in bursts (a taxonomy and a regulation change published together make two dataset
versions ~100 ms apart), and each retraining costs minutes, so:

* a request is due `settle` after the latest event that shaped it, and never earlier than
  `cooldown` after the domain's previous request;
* a newer event for a domain whose request is still pending merges into it, so one request
  covers the burst: an explicit change takes over the request (its reason, detail, dataset
  version, correlation and trace: training gets the newest version), a drift detection adds
  its evidence to what is pending; cause ids accumulate either way.

The clock is injected (epoch seconds, since due times must survive a restart), so all of this
is tested without sleeping.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from adaptmesh_drift.outbox import Outbox, PendingRequest
from adaptmesh_schemas.events import RetrainReason, RetrainRequested

Clock = Callable[[], float]
MAX_DETAIL_CHARS = 2000  # merged details nest; a long burst must not grow the event unbounded


@dataclass(frozen=True, slots=True)
class Timing:
    settle_seconds: float
    cooldown_seconds: float


@dataclass(frozen=True, slots=True)
class Origin:
    """The consumed event a request stems from: its chain, its cause, its trace."""

    correlation_id: str
    event_id: str
    trace_context: dict[str, str]


def merge(pending: PendingRequest | None, incoming: PendingRequest) -> PendingRequest:
    """The one request that covers both `pending` (if any) and `incoming`."""
    if pending is None:
        return incoming
    causes = tuple(
        dict.fromkeys((*pending.request.cause_event_ids, *incoming.request.cause_event_ids))
    )
    not_before = max(pending.not_before, incoming.not_before)
    if incoming.request.reason is RetrainReason.DRIFT:
        # The pending request already names a dataset version and a chain; the detection
        # only adds why else the domain needs it.
        request = pending.request.model_copy(
            update={
                "evidence": incoming.request.evidence,
                "detail": _joined(pending.request.detail, incoming.request.detail),
                "cause_event_ids": causes,
            }
        )
        return pending.model_copy(
            update={"request_id": incoming.request_id, "request": request, "not_before": not_before}
        )
    request = incoming.request.model_copy(
        update={
            "evidence": incoming.request.evidence or pending.request.evidence,
            "detail": _joined(incoming.request.detail, f"supersedes: {pending.request.detail}"),
            "cause_event_ids": causes,
        }
    )
    return incoming.model_copy(update={"request": request, "not_before": not_before})


def _joined(first: str, second: str) -> str:
    text = f"{first}; {second}" if first and second else first or second
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"


class RetrainScheduler:
    """Puts requests in the outbox with their due times and says which are due."""

    def __init__(self, outbox: Outbox, timing: Timing, clock: Clock = time.time) -> None:
        self.outbox = outbox
        self.timing = timing
        self.clock = clock

    def request(self, request: RetrainRequested, origin: Origin) -> PendingRequest:
        """Queue `request` (merged with the domain's pending one); returns what is pending."""
        incoming = PendingRequest(
            request_id=str(uuid.uuid4()),
            request=request,
            correlation_id=origin.correlation_id,
            causation_id=origin.event_id,
            trace_context=origin.trace_context,
            not_before=self.clock() + self.timing.settle_seconds,
        )
        merged = merge(self.outbox.get(request.domain), incoming)
        self.outbox.put(merged)
        return merged

    def cancel(self, domain: str) -> PendingRequest | None:
        """Drop the domain's pending request (its dataset version is no longer the latest)."""
        return self.outbox.discard(domain)

    def due_at(self, pending: PendingRequest) -> float:
        last = self.outbox.last_request_at(pending.domain)
        cooled = last + self.timing.cooldown_seconds if last is not None else pending.not_before
        return max(pending.not_before, cooled)

    def due(self) -> list[PendingRequest]:
        """Requests that may be published now, oldest due first."""
        now = self.clock()
        timed = [(self.due_at(p), p) for p in self.outbox.pending()]
        return [p for at, p in sorted(timed, key=lambda item: item[0]) if at <= now]

    def next_due_at(self) -> float | None:
        """When the next pending request falls due (None when nothing is pending)."""
        return min((self.due_at(p) for p in self.outbox.pending()), default=None)

    def published(self, pending: PendingRequest) -> bool:
        """Note that `pending` went out now; see `Outbox.published`."""
        return self.outbox.published(pending, self.clock())
