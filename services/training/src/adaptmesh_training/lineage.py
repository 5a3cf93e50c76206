"""Names and provenance of a trained model: run id, model version, code version, lineage."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import re
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

from adaptmesh_ml import TrainedModel
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.events import RetrainRequested
from adaptmesh_schemas.values import ArtifactRef, Lineage

log = logging.getLogger(__name__)

DISTRIBUTION = "adaptmesh-training"
_RUN_ID = re.compile(r"^[0-9a-f]{6,}$")


def new_run_id() -> str:
    """A fresh run id: 32 hex digits."""
    return uuid.uuid4().hex


def model_version_for(run_id: str, started_at: datetime) -> str:
    """`m-<UTC yyyymmddHHMMSS>-<first 6 hex of the run id>`: sorts by time, unique by run."""
    if not _RUN_ID.match(run_id):
        raise ValueError(f"run id {run_id!r} does not start with 6 hex digits")
    if started_at.tzinfo is None:
        raise ValueError("started_at must be timezone-aware")
    return f"m-{started_at.astimezone(UTC):%Y%m%d%H%M%S}-{run_id[:6]}"


@functools.cache
def code_version() -> str:
    """The installed adaptmesh version, plus the git commit when the code sits in a checkout
    (e.g. `0.1.0+git.1fa8f1e7ddd7`)."""
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    commit = _git_commit(Path(__file__).resolve().parent)
    return f"{version}+git.{commit[:12]}" if commit else version


def _git_commit(directory: Path) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        completed = subprocess.run(  # noqa: S603  (fixed arguments, no shell)
            [git, "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None  # an installed wheel, not a checkout
    commit = completed.stdout.strip()
    return commit if re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def build_lineage(
    *,
    request: RetrainRequested,
    snapshot: DatasetSnapshot,
    trained: TrainedModel,
    parent_version: str | None,
    parent_artifact: ArtifactRef | None,
    base_sha256: str,
    correlation_id: str,
    code: str,
) -> Lineage:
    """Where a model trained for `request` on `snapshot` came from, and how to rebuild it.

    `parent_version` is the champion the run knew of (the candidate's parent even when
    training started from a fresh adapter); `parent_artifact` is set only for a warm start.
    """
    history = snapshot.taxonomy_history
    return Lineage(
        dataset_version=request.dataset_version,
        dataset_sha256=request.dataset.sha256,
        recipe_version=snapshot.recipe.recipe_version,
        base_model=snapshot.base_model,
        parent_model_version=parent_version,
        code_version=code,
        seed=trained.seed,
        hyperparameters=trained.hyperparameters,
        correlation_id=correlation_id,
        base_model_sha256=base_sha256,
        library_versions={**trained.library_versions, "adaptmesh": code},
        determinism=trained.determinism,
        init=trained.init,
        parent_artifact=parent_artifact,
        parent_adapter_sha256=trained.parent_adapter_sha256,
        head_mapping=trained.head_mapping,
        taxonomy_step_id=history[-1].step_id if history else None,
        residency=snapshot.recipe.residency,
    )
