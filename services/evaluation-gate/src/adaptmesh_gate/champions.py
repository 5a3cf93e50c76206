"""The production model per domain, and every model the gate ever approved.

`mesh.models.ready.v1` is the truth about production: every start reads the compacted log from
the beginning (a broadcast subscription), and the record with the highest promotion number per
domain wins. A record with a lower number than the one known is stale (it can only come from a
writer that should have been fenced) and is ignored.

`mesh.gate.v1` is the record of decisions: every `gate.approved` (since 1.1 with the model's
artifact, labels, lineage and profile) and every `gate.rolled_back`, in promotion order per
domain (one partition per domain). From it the gate knows which models it may re-promote on a
rollback, and which one served before the current one.
"""

from __future__ import annotations

import dataclasses
import logging

from adaptmesh_schemas.events import GateApproved, ModelReady, RolledBack
from adaptmesh_schemas.values import ArtifactRef, Label, Lineage

log = logging.getLogger(__name__)


def is_older(record: ModelReady, than: ModelReady) -> bool:
    """Whether `record` is an earlier promotion than `than` (records before model.ready 2.3
    have no number and count as older than any numbered one)."""
    if record.promotion is None:
        return than.promotion is not None
    return than.promotion is not None and record.promotion < than.promotion


class Champions:
    """Current `model.ready` per domain."""

    def __init__(self) -> None:
        self._by_domain: dict[str, ModelReady] = {}

    def current(self, domain: str) -> ModelReady | None:
        return self._by_domain.get(domain)

    def crown(self, ready: ModelReady) -> bool:
        """Take `ready` as the domain's production model unless it is older than the one
        known; returns whether it was taken (replaying the same record is a no-op)."""
        known = self._by_domain.get(ready.domain)
        if known is not None and is_older(ready, known):
            log.warning(
                "ignoring model.ready %s (promotion %s) of %s: %s (promotion %s) is newer",
                ready.model_version,
                ready.promotion,
                ready.domain,
                known.model_version,
                known.promotion,
            )
            return False
        self._by_domain[ready.domain] = ready
        return True

    @staticmethod
    def next_promotion(current: ModelReady | None) -> int:
        return 1 if current is None or current.promotion is None else current.promotion + 1


@dataclasses.dataclass(frozen=True, slots=True)
class ApprovedModel:
    """What a promotion of an approved model needs."""

    model_version: str
    artifact: ArtifactRef
    labels: tuple[Label, ...]
    lineage: Lineage
    gate_report: ArtifactRef | None
    reference_profile: ArtifactRef | None


class ApprovedModels:
    """Per domain: the models the gate approved, and the order they were promoted in."""

    def __init__(self) -> None:
        self._approved: dict[str, dict[str, ApprovedModel | None]] = {}
        self._promoted: dict[str, list[str]] = {}

    def approved(self, event: GateApproved) -> None:
        """A `gate.approved`: the candidate was promoted (1.0 events lack what a re-promotion
        needs; the version is still known as approved)."""
        model = (
            ApprovedModel(
                model_version=event.model_version,
                artifact=event.artifact,
                labels=event.labels,
                lineage=event.lineage,
                gate_report=event.report,
                reference_profile=event.reference_profile,
            )
            if event.artifact is not None and event.lineage is not None and event.labels
            else None
        )
        known = self._approved.setdefault(event.domain, {})
        if model is not None or event.model_version not in known:
            known[event.model_version] = model
        self._promoted_now(event.domain, event.model_version)

    def rolled_back(self, event: RolledBack) -> None:
        self._promoted_now(event.domain, event.model_version)

    def served(self, ready: ModelReady) -> None:
        """A production model read from `mesh.models.ready.v1`: re-promotable too (it may
        predate the gate.approved events that carry artifacts)."""
        self._approved.setdefault(ready.domain, {})[ready.model_version] = ApprovedModel(
            model_version=ready.model_version,
            artifact=ready.artifact,
            labels=ready.labels,
            lineage=ready.lineage,
            gate_report=ready.gate_report,
            reference_profile=ready.reference_profile,
        )

    def lookup(self, domain: str, model_version: str) -> tuple[bool, ApprovedModel | None]:
        """(whether the gate ever approved it, what re-promoting it needs if recorded)."""
        known = self._approved.get(domain, {})
        return model_version in known, known.get(model_version)

    def versions(self, domain: str) -> list[str]:
        return sorted(self._approved.get(domain, {}))

    def previous(self, domain: str, current_version: str) -> str | None:
        """The model promoted before the current one took over (skipping re-promotions of
        the current one)."""
        order = self._promoted.get(domain, [])
        for version in reversed(order):
            if version != current_version:
                return version
        return None

    def _promoted_now(self, domain: str, model_version: str) -> None:
        order = self._promoted.setdefault(domain, [])
        if not order or order[-1] != model_version:
            order.append(model_version)
