"""The run ledger: every requested run, durably, from the moment its request is consumed.

The handler of `retrain.requested` only writes a row here and returns, so the record's offset
is committed at once and the consumer keeps polling however long the run takes: a run of hours
never holds a Kafka record, never exceeds the poll interval, and a rebalance cannot hand the
request to another instance that would start a second copy. The runner (`runner.py`) takes
rows from here one at a time and moves them along:

    queued -> running -> saved -> done
          \\-> skipped (stale)   running -> failed | cancelled

`running` rows carry the run's latest checkpoint, so a restarted service resumes them under the
same run id; `saved` rows carry the stored model, so a crash between saving and announcing
announces (once: the event id is fixed by the run id) instead of training again. SQLite under
the service's state dir (memory when there is none), synced on every write; writes are rare.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from adaptmesh_kit.state import open_state_file
from adaptmesh_schemas.events import RetrainRequested
from adaptmesh_schemas.values import ArtifactRef


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SAVED = "saved"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


OPEN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SAVED)


class RunRecord(BaseModel):
    """One run and everything needed to carry it on after a restart."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(description="The run's id, fixed when its request was recorded.")
    request_id: str = Field(description="ce_id of the retrain request (unique per run).")
    request: RetrainRequested = Field(description="The request.")
    correlation_id: str = Field(description="Correlation id of the request.")
    trace_context: dict[str, str] = Field(
        default_factory=dict, description="W3C trace context of the request's consumption."
    )
    status: RunStatus = Field(default=RunStatus.QUEUED, description="Where the run is.")
    started_at: datetime | None = Field(default=None, description="When it first started.")
    attempts: int = Field(default=0, ge=0, description="Times it was started or resumed.")
    parent: ArtifactRef | None = Field(
        default=None, description="The champion it warm-starts from, fixed at its first start."
    )
    parent_version: str | None = Field(
        default=None, description="That champion's model version (the candidate's parent)."
    )
    checkpoint: ArtifactRef | None = Field(default=None, description="Its latest checkpoint.")
    checkpoint_step: int = Field(default=0, ge=0, description="Step of that checkpoint.")
    model: ArtifactRef | None = Field(default=None, description="The stored model (saved).")
    model_version: str | None = Field(default=None, description="Its model version.")
    note: str = Field(default="", description="Why it was skipped, cancelled or failed.")

    @property
    def domain(self) -> str:
        return self.request.domain


class RunLedger:
    """Rows of runs in the order their requests arrived. Not thread-safe: one event loop."""

    def __init__(self, path: Path | None) -> None:
        self.durable = path is not None
        # Once the handler returns, this row is the only record of the request.
        self._db = open_state_file(path, synchronous="FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS runs ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " run_id TEXT UNIQUE NOT NULL,"
            " request_id TEXT UNIQUE NOT NULL,"
            " domain TEXT NOT NULL,"
            " status TEXT NOT NULL,"
            " body TEXT NOT NULL)"
        )

    def add(self, record: RunRecord) -> bool:
        """Record a newly requested run; False when its request was recorded before."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO runs (run_id, request_id, domain, status, body) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                record.run_id,
                record.request_id,
                record.domain,
                record.status.value,
                record.model_dump_json(),
            ),
        )
        return cursor.rowcount == 1

    def update(self, record: RunRecord) -> RunRecord:
        self._db.execute(
            "UPDATE runs SET status = ?, body = ? WHERE run_id = ?",
            (record.status.value, record.model_dump_json(), record.run_id),
        )
        return record

    def get(self, run_id: str) -> RunRecord | None:
        row = self._db.execute("SELECT body FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return RunRecord.model_validate_json(row[0]) if row else None

    def next_open(self) -> RunRecord | None:
        """The run to work on next: one already under way (saved, then running) before any
        queued one, each in arrival order."""
        row = self._db.execute(
            "SELECT body FROM runs WHERE status IN (?, ?, ?) "
            "ORDER BY CASE status WHEN ? THEN 0 WHEN ? THEN 1 ELSE 2 END, seq LIMIT 1",
            (*OPEN_STATUSES, RunStatus.SAVED, RunStatus.RUNNING),
        ).fetchone()
        return RunRecord.model_validate_json(row[0]) if row else None

    def open_after(self, record: RunRecord) -> list[RunRecord]:
        """Open runs of the same domain requested after `record`."""
        rows = self._db.execute(
            "SELECT body FROM runs WHERE domain = ? AND status IN (?, ?, ?) AND seq > "
            "(SELECT seq FROM runs WHERE run_id = ?) ORDER BY seq",
            (record.domain, *OPEN_STATUSES, record.run_id),
        ).fetchall()
        return [RunRecord.model_validate_json(body) for (body,) in rows]

    def all(self) -> list[RunRecord]:
        rows = self._db.execute("SELECT body FROM runs ORDER BY seq").fetchall()
        return [RunRecord.model_validate_json(body) for (body,) in rows]

    def close(self) -> None:
        self._db.close()
