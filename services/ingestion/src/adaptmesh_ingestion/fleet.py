"""Which base model every domain is on, and how a base-model release fans out. Pure.

Ingestion instances each own only some partitions of `mesh.changes.v1`, but a release (keyed by
the fleet key) concerns every domain, so each instance keeps this index of the whole fleet from
a broadcast read of `mesh.datasets.v1`: the newest `dataset.versioned` of a domain names the base
model it is on.

A release becomes one `change.base_model` per domain on the old base that its selector admits,
with a `ce_id` derived from the release's and the domain: a redelivered release republishes the
same ids, which ingestion drops as already handled. A domain that the release already moved (its
base-model version names that id as cause) still counts as matched, so a redelivery after the
moves were applied is not mistaken for a release that matches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from adaptmesh_schemas import FLEET_DOMAIN
from adaptmesh_schemas.events import (
    BaseModelChanged,
    BaseModelReleased,
    DatasetVersioned,
    RetrainReason,
)
from adaptmesh_schemas.values import BaseModelSpec


class ReleaseRejected(ValueError):  # noqa: N818  (it names the outcome, as RejectedEvent does)
    """A release that moves no domain."""


@dataclass(frozen=True, slots=True)
class Move:
    """One domain's share of a release: the change to publish and its `ce_id`."""

    event_id: str
    change: BaseModelChanged


@dataclass(frozen=True, slots=True)
class FanOut:
    """What a release does: the domains it moves, and the selected ones it leaves (with why)."""

    moves: tuple[Move, ...]
    passed_over: tuple[tuple[str, str], ...]


def same_base(a: BaseModelSpec, b: BaseModelSpec) -> bool:
    """Whether two specs name the same base model (id, revision and GGUF file)."""
    return (a.model_id, a.revision, a.gguf_file) == (b.model_id, b.revision, b.gguf_file)


def move_event_id(release_id: str, domain: str) -> str:
    """The `ce_id` of the `change.base_model` a release publishes for `domain`."""
    return f"{release_id}/{domain}"


def describe(base: BaseModelSpec) -> str:
    extras = [
        f"{name}={value}"
        for name, value in (("revision", base.revision), ("gguf_file", base.gguf_file))
        if value
    ]
    return base.model_id + (f" ({', '.join(extras)})" if extras else "")


class FleetIndex:
    """Every domain's current base model, as `mesh.datasets.v1` says (newest version wins)."""

    def __init__(self) -> None:
        self._bases: dict[str, BaseModelSpec] = {}
        self._base_model_causes: set[str] = set()

    def learn(self, version: DatasetVersioned) -> None:
        """`version` is the domain's newest dataset version (replaying one is a no-op)."""
        self._bases[version.domain] = version.base_model
        if version.change_kind == RetrainReason.BASE_MODEL.value:
            self._base_model_causes.update(version.cause_event_ids)

    def base_of(self, domain: str) -> BaseModelSpec | None:
        return self._bases.get(domain)

    def plan(self, release: BaseModelReleased, release_id: str) -> FanOut:
        """The moves `release` (envelope id `release_id`) makes; raises `ReleaseRejected` when
        it would move no domain."""
        old, new = describe(release.old_base), describe(release.new_base)
        if same_base(release.old_base, release.new_base):
            raise ReleaseRejected(
                f"base model release {release_id} rejected: old and new base are both {old}"
            )
        selected = release.domains or tuple(sorted(self._bases))
        moves: list[Move] = []
        passed_over: list[tuple[str, str]] = []
        for domain in dict.fromkeys(selected):
            current = self._bases.get(domain)
            event_id = move_event_id(release_id, domain)
            if domain == FLEET_DOMAIN or current is None:
                passed_over.append((domain, "no such domain"))
            elif same_base(current, release.old_base) or event_id in self._base_model_causes:
                moves.append(Move(event_id, self._move(release, release_id, domain)))
            else:
                passed_over.append((domain, f"on {describe(current)}, not {old}"))
        if not moves:
            which = (
                f"the selected domains {', '.join(release.domains)}"
                if release.domains
                else (f"any of the {len(self._bases)} known domains")
            )
            why = "; ".join(f"{domain}: {reason}" for domain, reason in passed_over)
            raise ReleaseRejected(
                f"base model release {release_id} ({old} -> {new}) rejected: it matches no "
                f"domain: {old} is not the base model of {which}"
                + (f" ({why})" if release.domains else "")
            )
        return FanOut(tuple(moves), tuple(passed_over if release.domains else ()))

    @staticmethod
    def _move(release: BaseModelReleased, release_id: str, domain: str) -> BaseModelChanged:
        reason = f"base model release {release_id}"
        if release.reason:
            reason += f": {release.reason}"
        return BaseModelChanged(domain=domain, base_model=release.new_base, reason=reason)
