"""What this training instance knows per domain: dataset ancestry, what it trained, the champion.

Dataset versions are content digests, so they do not sort; "older" means "an ancestor", learnt
from the parent each snapshot and each `dataset.versioned` event names. A request for a strict
ancestor of a version this instance already trained for the domain is stale: its model could
only be worse informed than one that exists. The same version again is not stale (drift can
legitimately ask to retrain on unchanged data).
"""

from __future__ import annotations

from collections import defaultdict

from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec


class TrainingLedger:
    """In-memory, per process; rebuilt from the log (datasets, models ready) at each start.
    Runs themselves are in the durable `RunLedger`."""

    def __init__(self) -> None:
        self._parents: dict[str, dict[str, str]] = defaultdict(dict)
        self._trained: dict[str, set[str]] = defaultdict(set)
        self._bases: dict[BaseModelSpec, None] = {}
        self._champions: dict[str, tuple[str, ArtifactRef | None]] = {}

    def record_dataset(self, domain: str, version: str, parent: str | None) -> None:
        """Learn that `version` was derived from `parent`."""
        if parent is not None and parent != version:
            self._parents[domain][version] = parent

    def record_base(self, spec: BaseModelSpec) -> None:
        """A dataset uses `spec`: a base model the workers will likely need."""
        self._bases.pop(spec, None)
        self._bases[spec] = None

    def base_models(self) -> list[BaseModelSpec]:
        """Base models seen in datasets, least recently seen first."""
        return list(self._bases)

    def record_trained(self, domain: str, version: str) -> None:
        """This instance published a model trained on `version`."""
        self._trained[domain].add(version)

    def record_champion(
        self, domain: str, model_version: str, artifact: ArtifactRef | None = None
    ) -> None:
        """`model_version` (its manifest at `artifact`) is now the domain's production model."""
        self._champions[domain] = (model_version, artifact)

    def champion(self, domain: str) -> str | None:
        """The domain's production model, if this instance has heard of one."""
        found = self._champions.get(domain)
        return found[0] if found else None

    def champion_artifact(self, domain: str) -> ArtifactRef | None:
        """The manifest of the domain's production model: what a retrain warm-starts from."""
        found = self._champions.get(domain)
        return found[1] if found else None

    def trained_versions(self, domain: str) -> frozenset[str]:
        """Dataset versions this instance trained models on for `domain`."""
        return frozenset(self._trained.get(domain, ()))

    def trained_domains(self) -> frozenset[str]:
        """Domains this instance trained at least one model for."""
        return frozenset(domain for domain, versions in self._trained.items() if versions)

    def is_stale(self, domain: str, version: str) -> bool:
        """Whether `version` is a strict ancestor of a version already trained for `domain`."""
        return any(version in self.ancestors(domain, trained) for trained in self._trained[domain])

    def ancestors(self, domain: str, version: str) -> set[str]:
        """Every known strict ancestor of `version` (cycles in bad data cannot loop forever)."""
        parents = self._parents.get(domain, {})
        found: set[str] = set()
        current = parents.get(version)
        while current is not None and current not in found and current != version:
            found.add(current)
            current = parents.get(current)
        return found
