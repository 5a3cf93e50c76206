"""`adaptmesh watch rollout`'s view: production model per domain against what replicas serve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adaptmesh_cli.rollout import RolloutView
from adaptmesh_schemas.events import ModelLoaded, ModelLoadFailed, ModelReady, ReplicaStatus
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, Lineage

DOMAIN = "fin-news"
T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def ready(version: str, promotion: int) -> ModelReady:
    return ModelReady(
        domain=DOMAIN,
        model_version=version,
        artifact=ArtifactRef(uri=f"file:///m/{version}", sha256="a" * 64),
        labels=("a", "b"),
        lineage=Lineage(
            dataset_version="ds",
            dataset_sha256="b" * 64,
            recipe_version="r1",
            base_model=BaseModelSpec(model_id="package:x"),
            code_version="t",
            seed=1,
            correlation_id="c",
        ),
        promotion=promotion,
    )


def status(replica: str, serving: dict[str, str]) -> ReplicaStatus:
    return ReplicaStatus(
        domain=DOMAIN, replica_id=replica, started_at=T0, interval_seconds=10, serving=serving
    )


def loaded(replica: str, version: str) -> ModelLoaded:
    return ModelLoaded(
        domain=DOMAIN,
        replica_id=replica,
        model_version=version,
        artifact=ArtifactRef(uri=f"file:///m/{version}", sha256="a" * 64),
        ready_event_id="e",
        load_seconds=1.5,
        switch_ms=3.0,
    )


def test_a_rollout_is_complete_when_every_live_replica_serves_the_new_model() -> None:
    view = RolloutView()
    view.apply(ready("m1", 1), T0)
    view.apply(status("r-a", {DOMAIN: "m1"}), T0)
    view.apply(status("r-b", {DOMAIN: "m1"}), T0)
    assert view.complete(DOMAIN, T0)
    view.apply(ready("m2", 2), T0 + timedelta(seconds=1))
    assert not view.complete(DOMAIN, T0 + timedelta(seconds=1))
    view.apply(loaded("r-a", "m2"), T0 + timedelta(seconds=2))
    now = T0 + timedelta(seconds=2)
    assert view.line(DOMAIN, now) == (
        "fin-news  m2 (promotion 2): 1/2 replicas serve it; r-b serves m1"
    )
    view.apply(loaded("r-b", "m2"), T0 + timedelta(seconds=3))
    now = T0 + timedelta(seconds=3)
    assert view.complete(DOMAIN, now)
    assert view.line(DOMAIN, now).endswith("2/2 replicas serve it — rollout complete")


def test_a_failed_load_is_named_with_what_the_replica_keeps_serving() -> None:
    view = RolloutView()
    view.apply(ready("m2", 2), T0)
    view.apply(status("r-a", {DOMAIN: "m1"}), T0)
    view.apply(
        ModelLoadFailed(
            domain=DOMAIN,
            replica_id="r-a",
            model_version="m2",
            artifact=ArtifactRef(uri="file:///m/m2", sha256="a" * 64),
            ready_event_id="e",
            reason="adapter digest mismatch",
            still_serving="m1",
        ),
        T0 + timedelta(seconds=1),
    )
    line = view.line(DOMAIN, T0 + timedelta(seconds=1))
    assert "0/1" in line
    assert "r-a failed (m2: adapter digest mismatch), serves m1" in line


def test_a_silent_replica_no_longer_counts_and_an_older_promotion_never_wins() -> None:
    view = RolloutView()
    view.apply(ready("m2", 2), T0)
    view.apply(ready("m1", 1), T0)  # stale: promotion 1 after 2
    view.apply(status("r-a", {DOMAIN: "m2"}), T0)
    view.apply(status("r-gone", {DOMAIN: "m1"}), T0 - timedelta(minutes=5))
    assert view.live_replicas(T0) == ["r-a"]
    assert view.complete(DOMAIN, T0)
    assert view.targets[DOMAIN].model_version == "m2"
