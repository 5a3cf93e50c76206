from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from adaptmesh_ml import TrainedModel
from adaptmesh_schemas.events import RetrainReason, RetrainRequested
from adaptmesh_schemas.values import ArtifactRef
from adaptmesh_training.lineage import build_lineage, code_version, model_version_for, new_run_id
from tests.unit.adaptmesh_training.snapshots import BASE_MODEL, tiny_snapshot

DATASET = ArtifactRef(uri="file:///store/sha256/ab/abc", sha256="ab" * 32)


def trained(seed: int = 7) -> TrainedModel:
    return TrainedModel(
        labels=("crude", "grain", "money-fx"),
        files={"labels.json": b"[]"},
        metrics={"train_loss": 0.5},
        hyperparameters={"epochs": 1, "lora_r": 8},
        seed=seed,
    )


def test_model_version_is_utc_time_and_run_id_prefix() -> None:
    eastern = timezone(timedelta(hours=-5))
    started = datetime(2026, 3, 4, 1, 2, 3, tzinfo=eastern)
    assert model_version_for("0a1b2c3d4e5f", started) == "m-20260304060203-0a1b2c"


def test_model_versions_of_distinct_runs_differ_in_the_same_second() -> None:
    now = datetime.now(UTC)
    versions = {model_version_for(new_run_id(), now) for _ in range(50)}
    assert len(versions) == 50
    assert all(re.fullmatch(r"m-\d{14}-[0-9a-f]{6}", version) for version in versions)


def test_model_version_needs_an_aware_time_and_a_hex_run_id() -> None:
    with pytest.raises(ValueError, match="timezone"):
        model_version_for("abcdef", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="hex"):
        model_version_for("run-1", datetime.now(UTC))


def test_lineage_names_dataset_recipe_base_model_parent_code_and_chain() -> None:
    snapshot = tiny_snapshot("fin-news", recipe_version="r9")
    request = RetrainRequested(
        domain="fin-news", reason=RetrainReason.DATA, dataset_version="ds-42", dataset=DATASET
    )
    lineage = build_lineage(
        request=request,
        snapshot=snapshot,
        trained=trained(),
        parent_version="m-20260101000000-aaaaaa",
        parent_artifact=None,
        base_sha256="ee" * 32,
        correlation_id="change-1",
        code="0.1.0+git.abc",
    )
    assert lineage.dataset_version == "ds-42"
    assert lineage.dataset_sha256 == DATASET.sha256
    assert lineage.recipe_version == "r9"
    assert lineage.base_model == BASE_MODEL
    assert lineage.parent_model_version == "m-20260101000000-aaaaaa"
    assert lineage.code_version == "0.1.0+git.abc"
    assert lineage.seed == 7
    assert lineage.hyperparameters == {"epochs": 1, "lora_r": 8}
    assert lineage.correlation_id == "change-1"
    assert lineage.base_model_sha256 == "ee" * 32
    assert lineage.library_versions["adaptmesh"] == "0.1.0+git.abc"
    assert lineage.init == "base"
    assert lineage.parent_artifact is None
    assert lineage.residency is None
    resident = snapshot.model_copy(
        update={"recipe": snapshot.recipe.model_copy(update={"residency": "eu"})}
    )
    assert (
        build_lineage(
            request=request,
            snapshot=resident,
            trained=trained(),
            parent_version=None,
            parent_artifact=None,
            base_sha256="ee" * 32,
            correlation_id="change-1",
            code="0.1.0+git.abc",
        ).residency
        == "eu"
    )


def test_code_version_is_the_installed_version_with_the_commit_of_this_checkout() -> None:
    # The tests run from the repository, so the commit is known here.
    assert re.fullmatch(r"\d+\.\d+\.\d+\+git\.[0-9a-f]{12}", code_version())
