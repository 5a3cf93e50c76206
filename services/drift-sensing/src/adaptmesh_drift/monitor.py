"""What drift-sensing knows of each domain: its dataset versions, its production model, and
the watch on that model.

`DatasetBook` follows every dataset version (read by broadcast: a domain's inference partition
may belong to another instance than its dataset partition), so an alarm can tell whether there
is labelled data the champion has not seen. `DriftMonitor` follows the production model per
domain and arms its detectors lazily — on the first record that needs them — because at every
start the compacted `mesh.models.ready.v1` is read from its beginning and older promotions of a
domain may still be there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from adaptmesh_drift.decisions import untrainable_because
from adaptmesh_drift.reference import ReferenceData
from adaptmesh_drift.state import DriftState
from adaptmesh_drift.watch import DomainWatch, arm
from adaptmesh_schemas.documents import ReferenceProfile
from adaptmesh_schemas.events import DatasetVersioned, ModelReady
from adaptmesh_schemas.values import ArtifactRef

log = logging.getLogger(__name__)

NEW_LABELLED_DATA_KINDS = frozenset({"data", "feedback"})
"""Change kinds that add labelled examples (the others reshape what is there)."""


@dataclass(frozen=True, slots=True)
class DatasetReference:
    """What drift-sensing keeps of one dataset version."""

    domain: str
    dataset_version: str
    parent_version: str | None
    change_kind: str
    dataset: ArtifactRef
    examples: int
    untrainable_because: str | None
    residency: str | None = None

    @classmethod
    def of(cls, event: DatasetVersioned) -> DatasetReference:
        return cls(
            domain=event.domain,
            dataset_version=event.dataset_version,
            parent_version=event.parent_version,
            change_kind=event.change_kind,
            dataset=event.artifact,
            examples=event.counts.train + event.counts.eval,
            untrainable_because=untrainable_because(event),
            residency=event.residency,
        )


@dataclass(frozen=True, slots=True)
class NewData:
    """The version to retrain on, and what it adds to the champion's."""

    latest: DatasetReference
    description: str


class DatasetBook:
    """Every domain's dataset versions, in log order."""

    def __init__(self) -> None:
        self._versions: dict[str, dict[str, DatasetReference]] = {}
        self._latest: dict[str, DatasetReference] = {}

    def record(self, event: DatasetVersioned) -> None:
        reference = DatasetReference.of(event)
        self._versions.setdefault(event.domain, {})[event.dataset_version] = reference
        self._latest[event.domain] = reference

    def latest(self, domain: str) -> DatasetReference | None:
        return self._latest.get(domain)

    def __len__(self) -> int:
        return len(self._latest)

    def unseen_labelled_data(self, domain: str, champion_version: str) -> NewData | str:
        """The latest version when it holds labelled data that `champion_version` lacks;
        otherwise why there is nothing new to retrain on."""
        latest = self._latest.get(domain)
        if latest is None:
            return f"no dataset version of {domain} has been seen"
        if latest.dataset_version == champion_version:
            return f"the champion was trained on the latest dataset version {champion_version}"
        if latest.untrainable_because is not None:
            return (
                f"the latest dataset version {latest.dataset_version} is not trainable: "
                f"{latest.untrainable_because}"
            )
        versions = self._versions[domain]
        kinds: list[str] = []
        cursor: DatasetReference | None = latest
        while cursor is not None and cursor.dataset_version != champion_version:
            kinds.append(cursor.change_kind)
            cursor = versions.get(cursor.parent_version) if cursor.parent_version else None
        if cursor is None:
            return (
                f"the champion's dataset version {champion_version} is not an ancestor of the "
                f"latest {latest.dataset_version}: what is new cannot be told"
            )
        added = [kind for kind in kinds if kind in NEW_LABELLED_DATA_KINDS]
        if not added:
            return (
                f"the {len(kinds)} version(s) since the champion's {champion_version} "
                f"({', '.join(reversed(kinds))}) add no labelled examples"
            )
        grown = latest.examples - cursor.examples
        return NewData(
            latest,
            f"{len(added)} {'/'.join(sorted(set(added)))} change(s) since the champion's "
            f"dataset {champion_version} ({grown:+d} examples)",
        )


@dataclass(frozen=True, slots=True)
class Champion:
    """A domain's production model as announced on `mesh.models.ready.v1`."""

    domain: str
    model_version: str
    dataset_version: str
    profile: ArtifactRef | None

    @classmethod
    def of(cls, ready: ModelReady) -> Champion:
        return cls(
            ready.domain,
            ready.model_version,
            ready.lineage.dataset_version,
            ready.reference_profile,
        )


ProfileLoader = Callable[[ArtifactRef], ReferenceProfile]


class DriftMonitor:
    """Production models per domain and the watches on them."""

    def __init__(
        self,
        detectors: Sequence[str],
        state: DriftState,
        load_profile: ProfileLoader,
        *,
        sample_size: int = 20,
    ) -> None:
        self.detectors = tuple(detectors)
        self.state = state
        self._load_profile = load_profile
        self._sample_size = sample_size
        self._champions: dict[str, Champion] = {}
        self._watches: dict[str, DomainWatch] = {}
        self._unwatched: dict[str, str] = {}
        # The inference and the feedback handlers may both arm a domain at once, each in a
        # worker thread: one arms it, the other waits and takes that watch. (Two watches of
        # one domain would each get part of the records and only one would be kept: the
        # other's records were lost, though remembered as handled.)
        self._arming: dict[str, threading.Lock] = {}
        self._arming_guard = threading.Lock()

    def crown(self, ready: ModelReady) -> None:
        """`ready` now serves its domain; its watch is armed when first needed."""
        champion = Champion.of(ready)
        if self._champions.get(ready.domain) == champion:
            return
        self._champions[ready.domain] = champion
        self._watches.pop(ready.domain, None)
        self._unwatched.pop(ready.domain, None)

    def champion(self, domain: str) -> Champion | None:
        return self._champions.get(domain)

    def why_unwatched(self, domain: str) -> str | None:
        return self._unwatched.get(domain)

    def armed(self, domain: str) -> DomainWatch | Literal[False] | None:
        """Without blocking: the domain's watch, None when it has none to arm, or False when
        `watch()` must be called to arm it."""
        watch = self._watches.get(domain)
        if watch is not None or domain in self._unwatched or domain not in self._champions:
            return watch
        return False

    def watch(self, domain: str) -> DomainWatch | None:
        """The armed watch of the domain's production model (arming it now if needed), or
        None when there is nothing to watch (no champion, no profile, no detector armed).

        Blocking (profile load, calibration): call it off the event loop."""
        with self._arming_guard:
            arming = self._arming.setdefault(domain, threading.Lock())
        with arming:
            return self._watch(domain)

    def _watch(self, domain: str) -> DomainWatch | None:
        watch = self._watches.get(domain)
        if watch is not None or domain in self._unwatched:
            return watch
        champion = self._champions.get(domain)
        if champion is None:
            return None
        armed = self._arm(champion)
        if isinstance(armed, str):
            self._unwatched[domain] = armed
            log.warning("%s: model %s is not watched: %s", domain, champion.model_version, armed)
            return None
        saved = self.state.load_watch(domain)
        if saved is not None and armed.restore(saved):
            log.info("%s: the watch of %s carries on from saved state", domain, armed.model_version)
        log.info(
            "%s: watching %s with %s",
            domain,
            armed.model_version,
            ", ".join(
                f"{name} (ERT {d.budget.ert:g}, window {d.budget.window})"
                for name, d in armed.detectors.items()
            ),
        )
        if self._champions.get(domain) != champion:
            # Promoted again while this one was being armed: its records are the new
            # model's, so this watch would only skip them; the next batch arms the new one.
            return None
        self._watches[domain] = armed
        return armed

    def _arm(self, champion: Champion) -> DomainWatch | str:
        """The champion's armed watch, or why it cannot have one (until its next promotion)."""
        if champion.profile is None:
            return (
                "its model.ready carries no reference profile (promoted before the gate wrote "
                "profiles); the next promotion will have one"
            )
        if not self.detectors:
            return "no detectors are configured"
        try:
            profile = self._load_profile(champion.profile)
        except Exception as error:  # noqa: BLE001  (any unreadable profile has the same fate)
            return f"its reference profile cannot be read: {error}"
        if profile.model_version != champion.model_version or profile.domain != champion.domain:
            return f"its reference profile belongs to {profile.domain}/{profile.model_version}"
        reference = ReferenceData.of(profile, champion.profile.sha256)
        watch = arm(reference, self.detectors, cache=self.state, sample_size=self._sample_size)
        if not watch.detectors:
            return "no detector could be armed: " + "; ".join(
                f"{name}: {why}" for name, why in watch.unarmed.items()
            )
        return watch

    def states(self, domains: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The watch states of `domains`, to save after a batch that touched them.

        Taken on the event loop, where records are fed to the watches (a worker thread
        copying a window while a handler appends to it would fail); only the write to the
        state file goes off the loop."""
        return {
            domain: self._watches[domain].state() for domain in domains if domain in self._watches
        }
