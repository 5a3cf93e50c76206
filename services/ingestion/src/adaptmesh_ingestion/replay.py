"""Rebuild every dataset version from the changes that made it, and check the digests.

The log is the source of truth: `mesh.changes.v1` and `mesh.feedback.v1` hold every change, and
each `dataset.versioned` on `mesh.datasets.v1` names the change that caused it and the version it
was made from. Replaying a domain walks that chain from its first version and feeds each cause,
in chain order, to a fresh `DatasetLedger` — the very code ingestion runs, so no rule is
implemented twice — writing into the artifact store given. A rebuilt version matches when its
snapshot has the announced sha256 (hence the announced version id).

Changes no version names were rejected when they arrived; they are skipped and counted. No
broker here: callers decode the topics (the CLI's `adaptmesh replay` does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from adaptmesh_ingestion.domain import Change, ChangeRejected
from adaptmesh_ingestion.ledger import DatasetLedger
from adaptmesh_ingestion.persistence import HeadStore
from adaptmesh_kit import ArtifactStore
from adaptmesh_schemas.events import DatasetVersioned
from adaptmesh_schemas.values import ArtifactRef


@dataclass(frozen=True, slots=True)
class VersionCheck:
    """One announced version and what replaying its cause made."""

    announced: DatasetVersioned
    rebuilt_version: str | None
    rebuilt: ArtifactRef | None
    """The rebuilt snapshot in the replay's artifact store."""
    problem: str | None = None
    """Why it could not be rebuilt (no cause in the log, the cause was rejected, ...)."""

    @property
    def matched(self) -> bool:
        return (
            self.rebuilt is not None
            and self.rebuilt.sha256 == self.announced.artifact.sha256
            and self.rebuilt_version == self.announced.dataset_version
        )

    def describe(self) -> str:
        """A line saying what differs (for a mismatch)."""
        if self.problem is not None:
            return f"{self.announced.dataset_version}: {self.problem}"
        rebuilt = self.rebuilt.sha256 if self.rebuilt else ""
        return (
            f"{self.announced.dataset_version} (sha256 {self.announced.artifact.sha256[:12]}…) "
            f"rebuilt as {self.rebuilt_version} (sha256 {rebuilt[:12]}…)"
        )


@dataclass(frozen=True, slots=True)
class DomainReplay:
    """A domain's versions, rebuilt in chain order, and the changes skipped as rejected."""

    domain: str
    checks: tuple[VersionCheck, ...]
    skipped: tuple[str, ...]
    """ce_ids of the domain's changes that no version names."""

    @property
    def matched(self) -> int:
        return sum(check.matched for check in self.checks)

    @property
    def mismatched(self) -> int:
        return len(self.checks) - self.matched

    def summary(self) -> str:
        return (
            f"{self.domain}: {len(self.checks)} versions rebuilt, {self.matched} matched, "
            f"{self.mismatched} mismatched, {len(self.skipped)} skipped"
        )


def replay(
    changes: Iterable[tuple[str, Change]],
    versions: Iterable[DatasetVersioned],
    artifacts: ArtifactStore,
    *,
    domain: str | None = None,
) -> list[DomainReplay]:
    """Rebuild the announced `versions` from `changes` (ce_id, event) into `artifacts`, per
    domain in name order; only `domain` when given."""
    by_id: dict[str, Change] = {}
    for event_id, change in changes:
        by_id.setdefault(event_id, change)  # a producer's redelivery carries the same ce_id
    announced: dict[str, dict[str, DatasetVersioned]] = {}
    for version in versions:
        # An announcement repeated after a crash names the same version: keep the first.
        announced.setdefault(version.domain, {}).setdefault(version.dataset_version, version)
    domains = sorted(announced.keys() | {change.domain for change in by_id.values()})
    heads = HeadStore(None)
    try:
        ledger = DatasetLedger(artifacts, heads)
        return [
            _replay_domain(name, announced.get(name, {}), by_id, ledger)
            for name in domains
            if domain is None or name == domain
        ]
    finally:
        heads.close()


def _replay_domain(
    domain: str,
    versions: Mapping[str, DatasetVersioned],
    changes: Mapping[str, Change],
    ledger: DatasetLedger,
) -> DomainReplay:
    checks = [_rebuild(version, changes, ledger) for version in _chain(versions)]
    # Versions off the chain (a parent never announced) cannot be rebuilt from their parent.
    on_chain = {check.announced.dataset_version for check in checks}
    checks += [
        VersionCheck(version, None, None, f"its parent {version.parent_version} is not announced")
        for version in versions.values()
        if version.dataset_version not in on_chain
    ]
    caused = {cause for version in versions.values() for cause in version.cause_event_ids}
    skipped = tuple(
        event_id
        for event_id, change in changes.items()
        if change.domain == domain and event_id not in caused
    )
    return DomainReplay(domain, tuple(checks), skipped)


def _chain(versions: Mapping[str, DatasetVersioned]) -> list[DatasetVersioned]:
    """The versions from the first (no parent) along the parent links, in announcement order
    where (unexpectedly) two versions share a parent."""
    children: dict[str | None, list[DatasetVersioned]] = {}
    for version in versions.values():
        children.setdefault(version.parent_version, []).append(version)
    chain: list[DatasetVersioned] = []
    pending = list(children.get(None, ()))
    while pending:
        version = pending.pop(0)
        chain.append(version)
        pending[:0] = children.get(version.dataset_version, ())
    return chain


def _rebuild(
    version: DatasetVersioned, changes: Mapping[str, Change], ledger: DatasetLedger
) -> VersionCheck:
    if len(version.cause_event_ids) != 1:
        return VersionCheck(version, None, None, f"names {len(version.cause_event_ids)} causes")
    [cause_id] = version.cause_event_ids
    cause = changes.get(cause_id)
    if cause is None:
        return VersionCheck(version, None, None, f"its cause {cause_id} is not in the log")
    try:
        rebuilt = ledger.record(cause, cause_id)
    except ChangeRejected as rejection:
        return VersionCheck(version, None, None, f"its cause is rejected on replay: {rejection}")
    return VersionCheck(version, rebuilt.dataset_version, rebuilt.artifact)


def total(results: Sequence[DomainReplay]) -> str:
    """The final line: versions, matched, mismatched over every domain."""
    versions = sum(len(result.checks) for result in results)
    matched = sum(result.matched for result in results)
    return f"replay: {versions} versions, {matched} matched, {versions - matched} mismatched"
