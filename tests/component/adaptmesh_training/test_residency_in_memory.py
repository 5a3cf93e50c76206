"""Data residency in training (FastStream's in-memory broker): a domain whose residency has no
artifact root, or that no Ray node offers, fails with `training.failed` and the reason before
any run is scheduled — never waiting for a node that does not exist."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import ray

from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.events import TrainingFailed
from adaptmesh_training.app import build_app
from adaptmesh_training.ray_cluster import RayCluster
from adaptmesh_training.settings import TrainingSettings
from tests.component.adaptmesh_training.test_training_in_memory import (
    DOMAIN,
    Observed,
    request,
    running,
    settled,
)
from tests.unit.adaptmesh_training.snapshots import tiny_snapshot


def resident_settings(tmp_path: Path) -> TrainingSettings:
    return TrainingSettings(
        artifact_root=f"file://{tmp_path}/default",
        artifact_roots={"eu": f"file://{tmp_path}/eu", "us": f"file://{tmp_path}/us"},
        provision_topics=False,
        training_catch_up_seconds=0,
    )


def resident_snapshot(residency: str) -> DatasetSnapshot:
    snapshot = tiny_snapshot(DOMAIN)
    return snapshot.model_copy(
        update={"recipe": snapshot.recipe.model_copy(update={"residency": residency})}
    )


async def test_a_residency_without_an_artifact_root_fails_without_ray(tmp_path: Path) -> None:
    app = build_app(resident_settings(tmp_path))
    observed = Observed(app)
    ref = app.artifacts.put_document(resident_snapshot("ch"))
    async with running(app):
        sent = await app.publish(request(ref))
        await settled(app, 1)
    [failed] = observed.caused_by(sent)
    assert isinstance(failed, TrainingFailed)
    assert failed.error.startswith(
        "ResidencyError: no artifact root is configured for residency 'ch'"
    )
    assert failed.retryable is False
    assert not ray.is_initialized()


@pytest.mark.timeout(180)
async def test_a_run_no_ray_node_offers_the_residency_of_fails_with_the_reason(
    tmp_path: Path,
) -> None:
    assert not ray.is_initialized(), "another Ray is up in this process; this test needs its own"
    # The local node offers `us` only; the domain's data must stay in the `eu`.
    cluster = RayCluster(num_cpus=1, residencies=("us",))
    app = build_app(resident_settings(tmp_path), cluster=cluster)
    observed = Observed(app)
    ref = app.artifacts.for_residency("eu").put_document(resident_snapshot("eu"))
    try:
        async with running(app):
            sent = await app.publish(request(ref))
            began = time.monotonic()
            await settled(app, 1)
            took = time.monotonic() - began
    finally:
        cluster.shutdown()
    [failed] = observed.caused_by(sent)  # no training.started before it
    assert isinstance(failed, TrainingFailed)
    assert failed.error == (
        "ResidencyUnavailableError: no Ray node offers residency 'eu' (custom resource "
        "'residency:eu'; the cluster's nodes offer residencies: us); the run was not "
        "scheduled. Start a node with it (local Ray: MESH_TRAINING_RESIDENCIES=eu; a cluster "
        """node: ray start --resources='{"residency:eu": 1}') and send the request again"""
    )
    assert failed.retryable is False
    assert not app.workers.started, "workers were placed for a residency no node offers"
    print(f"failed {took:.1f} s after the request (Ray's start included)")
