"""The ledger of dataset versions: applies a change, writes the version, records the head.

No broker here: `record` returns the `DatasetVersioned` to announce, and the handler publishes
it. The order is snapshot, then head, then announcement, so an announced version is always
recorded; a crash between recording and announcing redelivers the change (its offset was not
committed), and `record` then returns the announcement of the version already made instead of
applying the change twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from adaptmesh_ingestion.domain import (
    Change,
    ChangeRejected,
    DomainState,
    apply_change,
    change_kind,
)
from adaptmesh_ingestion.persistence import HeadRecord, HeadStore
from adaptmesh_ingestion.snapshot import (
    canonical_json,
    counts_of,
    dataset_version_id,
    snapshot_of,
    state_of,
)
from adaptmesh_kit import ArtifactStore, ResidencyError
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.events import DatasetVersioned
from adaptmesh_schemas.values import ArtifactRef


@dataclass(frozen=True, slots=True)
class DatasetHead:
    """A domain's latest dataset version and the state it was made from."""

    state: DomainState
    dataset_version: str
    artifact: ArtifactRef
    parent_version: str | None
    cause_event_ids: tuple[str, ...]

    def snapshot(self) -> DatasetSnapshot:
        return snapshot_of(
            self.state, parent_version=self.parent_version, cause_event_ids=self.cause_event_ids
        )


Admission = Callable[[Change, DomainState | None], None]
"""A check a change must pass before it applies (given the domain's current state); raises
`ChangeRejected`. For what depends on this machine rather than on the domain (base models)."""


class DatasetLedger:
    """Each domain's chain of dataset versions. Not thread-safe: callers serialise.

    `admit`: checks a new change must pass first (the live service checks base models; a
    replay of past versions does not).
    """

    def __init__(
        self, artifacts: ArtifactStore, heads: HeadStore, *, admit: Admission | None = None
    ) -> None:
        self._artifacts = artifacts
        self._heads = heads
        self._admit = admit
        self._cache: dict[str, DatasetHead] = {}

    def head(self, domain: str) -> DatasetHead | None:
        """The domain's latest version, from memory or else from the recorded head."""
        cached = self._cache.get(domain)
        if cached is not None:
            return cached
        record = self._heads.load(domain)
        if record is None:
            return None
        snapshot = self._artifacts.get_document(record.artifact, DatasetSnapshot)
        head = DatasetHead(
            state=state_of(snapshot, record.recency),
            dataset_version=record.dataset_version,
            artifact=record.artifact,
            parent_version=snapshot.parent_version,
            cause_event_ids=snapshot.cause_event_ids,
        )
        self._cache[domain] = head
        return head

    def record(self, change: Change, event_id: str) -> DatasetVersioned:
        """Apply `change` (envelope id `event_id`), write and record the new version, and
        return its announcement. Raises `ChangeRejected` and leaves everything as it was."""
        head = self.head(change.domain)
        if head is not None and head.cause_event_ids == (event_id,):
            return _announcement(head, head.snapshot(), change_kind(change))
        if self._admit is not None:
            self._admit(change, head.state if head else None)
        state = apply_change(head.state if head else None, change, event_id)
        snapshot = snapshot_of(
            state,
            parent_version=head.dataset_version if head else None,
            cause_event_ids=(event_id,),
        )
        try:
            # The domain's residency decides the root; one without a root is refused whole.
            store = self._artifacts.for_residency(state.recipe.residency)
        except ResidencyError as error:
            raise ChangeRejected(f"domain {change.domain!r}: {error}") from None
        artifact = store.put_bytes(canonical_json(snapshot))
        new_head = DatasetHead(
            state=state,
            dataset_version=dataset_version_id(artifact.sha256),
            artifact=artifact,
            parent_version=snapshot.parent_version,
            cause_event_ids=snapshot.cause_event_ids,
        )
        self._heads.save(
            change.domain,
            HeadRecord(
                dataset_version=new_head.dataset_version,
                artifact=artifact,
                recency=tuple(example.example_id for example in state.examples),
            ),
        )
        self._cache[change.domain] = new_head
        return _announcement(new_head, snapshot, change_kind(change))


def _announcement(head: DatasetHead, snapshot: DatasetSnapshot, kind: str) -> DatasetVersioned:
    state = head.state
    return DatasetVersioned(
        domain=state.domain,
        dataset_version=head.dataset_version,
        artifact=head.artifact,
        parent_version=head.parent_version,
        labels=state.labels,
        taxonomy_version=state.taxonomy_version,
        recipe_version=state.recipe.recipe_version,
        base_model=state.base_model,
        counts=counts_of(snapshot),
        change_kind=kind,
        cause_event_ids=head.cause_event_ids,
        residency=state.recipe.residency,
    )
