"""The durable outbox of retrain requests not yet published.

A handler writes the request here and returns, so the consumed record's offset can be committed
while the request waits out its settle window and cool-down; the relay publishes it later and
only then removes it. SQLite under the service's state dir makes a pending request survive a
restart (memory when there is no state dir). One row per domain: a newer request for a domain
replaces the pending one (see `schedule.py` for how they merge).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from adaptmesh_schemas.events import RetrainRequested


class PendingRequest(BaseModel):
    """A retrain request waiting in the outbox, with what publishing it needs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str = Field(
        description="ce_id it will be published with; stable across retries so a publish "
        "repeated after a crash is deduplicated by training."
    )
    request: RetrainRequested = Field(description="The event to publish.")
    correlation_id: str = Field(description="Correlation id of the event that shaped it.")
    causation_id: str | None = Field(description="ce_id of that event.")
    trace_context: dict[str, str] = Field(
        default_factory=dict,
        description="W3C trace context of that event's processing, to publish under.",
    )
    not_before: float = Field(description="Earliest publish time (epoch seconds): the settle.")

    @property
    def domain(self) -> str:
        return self.request.domain


class Outbox:
    """Pending requests and the time of each domain's last published request."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.durable = path is not None
        self._db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Once the handler returns, this row is the only record of the request (the dataset
        # event's offset gets committed), so every write is synced; they are rare.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pending ("
            " domain TEXT PRIMARY KEY, request_id TEXT NOT NULL, body TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS last_request ("
            " domain TEXT PRIMARY KEY, published_at REAL NOT NULL)"
        )
        # Which version the last request named: a drift alarm does not ask again for a
        # version whose retrain is still under way (a separate table: older files lack it).
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS last_version ("
            " domain TEXT PRIMARY KEY, dataset_version TEXT NOT NULL, published_at REAL NOT NULL)"
        )

    def get(self, domain: str) -> PendingRequest | None:
        row = self._db.execute("SELECT body FROM pending WHERE domain = ?", (domain,)).fetchone()
        return PendingRequest.model_validate_json(row[0]) if row else None

    def put(self, pending: PendingRequest) -> None:
        """Store `pending` as the domain's pending request, replacing any other."""
        self._db.execute(
            "INSERT OR REPLACE INTO pending VALUES (?, ?, ?)",
            (pending.domain, pending.request_id, pending.model_dump_json()),
        )

    def discard(self, domain: str) -> PendingRequest | None:
        """Drop the domain's pending request; returns what was dropped."""
        dropped = self.get(domain)
        self._db.execute("DELETE FROM pending WHERE domain = ?", (domain,))
        return dropped

    def pending(self) -> list[PendingRequest]:
        rows = self._db.execute("SELECT body FROM pending ORDER BY domain").fetchall()
        return [PendingRequest.model_validate_json(body) for (body,) in rows]

    def last_request_at(self, domain: str) -> float | None:
        row = self._db.execute(
            "SELECT published_at FROM last_request WHERE domain = ?", (domain,)
        ).fetchone()
        return float(row[0]) if row else None

    def last_requested(self, domain: str) -> tuple[str, float] | None:
        """The dataset version of the domain's last published request, and when."""
        row = self._db.execute(
            "SELECT dataset_version, published_at FROM last_version WHERE domain = ?", (domain,)
        ).fetchone()
        return (str(row[0]), float(row[1])) if row else None

    def published(self, pending: PendingRequest, at: float) -> bool:
        """Record that `pending` was published at `at`; removes it unless it was replaced
        meanwhile (a newer request then stays, to be published after the cool-down).
        Returns whether it was removed."""
        with self._db:
            self._db.execute("BEGIN")
            removed = self._db.execute(
                "DELETE FROM pending WHERE domain = ? AND request_id = ?",
                (pending.domain, pending.request_id),
            ).rowcount
            self._db.execute(
                "INSERT OR REPLACE INTO last_request VALUES (?, ?)", (pending.domain, at)
            )
            self._db.execute(
                "INSERT OR REPLACE INTO last_version VALUES (?, ?, ?)",
                (pending.domain, pending.request.dataset_version, at),
            )
        return bool(removed)

    def close(self) -> None:
        self._db.close()
