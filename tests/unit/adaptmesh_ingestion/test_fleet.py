"""The fleet index and how a base-model release fans out over it (pure)."""

from __future__ import annotations

import pytest

from adaptmesh_ingestion.fleet import FleetIndex, ReleaseRejected, move_event_id, same_base
from adaptmesh_schemas import FLEET_DOMAIN
from adaptmesh_schemas.events import BaseModelReleased, DatasetCounts, DatasetVersioned
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec

A = BaseModelSpec(model_id="org/base-a")
B = BaseModelSpec(model_id="org/base-b")
C = BaseModelSpec(model_id="org/base-c")


def version(
    domain: str, base: BaseModelSpec, *, kind: str = "recipe", cause: str = "c1"
) -> DatasetVersioned:
    return DatasetVersioned(
        domain=domain,
        dataset_version=f"ds-{domain}-{cause}",
        artifact=ArtifactRef(uri="file:///x", sha256="0" * 64),
        labels=("a", "b"),
        taxonomy_version="t1",
        recipe_version="r1",
        base_model=base,
        counts=DatasetCounts(train=0, eval=0),
        change_kind=kind,
        cause_event_ids=(cause,),
    )


def fleet(*versions: DatasetVersioned) -> FleetIndex:
    index = FleetIndex()
    for v in versions:
        index.learn(v)
    return index


def release(*domains: str, old: BaseModelSpec = A, new: BaseModelSpec = C) -> BaseModelReleased:
    return BaseModelReleased(old_base=old, new_base=new, domains=domains, reason="faster")


def test_every_domain_on_the_old_base_moves_with_a_derived_id() -> None:
    index = fleet(version("d2", A), version("d1", A), version("d3", B))
    fan_out = index.plan(release(), "rel-1")
    assert [m.change.domain for m in fan_out.moves] == ["d1", "d2"]
    assert [m.event_id for m in fan_out.moves] == ["rel-1/d1", "rel-1/d2"]
    assert all(m.change.base_model == C for m in fan_out.moves)
    assert fan_out.moves[0].change.reason == "base model release rel-1: faster"
    assert fan_out.passed_over == ()


def test_the_newest_version_says_which_base_a_domain_is_on() -> None:
    index = fleet(version("d1", A), version("d1", B, kind="base-model", cause="x"))
    with pytest.raises(ReleaseRejected, match="matches no domain"):
        index.plan(release(), "rel-1")
    assert index.base_of("d1") == B


def test_revision_and_gguf_file_are_part_of_the_base() -> None:
    pinned = A.model_copy(update={"revision": "v2"})
    assert not same_base(A, pinned)
    assert not same_base(A, A.model_copy(update={"gguf_file": "m.gguf"}))
    index = fleet(version("d1", A), version("d2", pinned))
    assert [m.change.domain for m in index.plan(release(old=pinned), "r").moves] == ["d2"]


def test_a_selector_moves_only_named_domains_on_the_old_base() -> None:
    index = fleet(version("d1", A), version("d2", A), version("d3", B))
    fan_out = index.plan(release("d1", "d3", "nope", FLEET_DOMAIN), "rel-1")
    assert [m.change.domain for m in fan_out.moves] == ["d1"]
    passed = dict(fan_out.passed_over)
    assert passed["d3"] == "on org/base-b, not org/base-a"
    assert passed["nope"] == "no such domain"
    assert passed[FLEET_DOMAIN] == "no such domain"


def test_a_release_that_matches_nothing_is_rejected_with_the_reason() -> None:
    index = fleet(version("d3", B))
    with pytest.raises(ReleaseRejected, match=r"org/base-a is not the base model of any of the 1"):
        index.plan(release(), "rel-1")
    with pytest.raises(ReleaseRejected, match=r"d3: on org/base-b, not org/base-a"):
        index.plan(release("d3"), "rel-1")
    with pytest.raises(ReleaseRejected, match="old and new base are both"):
        fleet(version("d1", A)).plan(release(new=A), "rel-1")


def test_a_redelivered_release_republishes_the_same_ids_after_the_moves_applied() -> None:
    index = fleet(version("d1", A), version("d2", A))
    first = index.plan(release(), "rel-1")
    # d1's move has been applied; d2's not yet (e.g. a crash between the two publishes).
    index.learn(version("d1", C, kind="base-model", cause=move_event_id("rel-1", "d1")))
    again = index.plan(release(), "rel-1")
    assert again == first
    # Another release from A does not count d1's move as its own.
    assert [m.change.domain for m in index.plan(release(), "rel-2").moves] == ["d2"]
