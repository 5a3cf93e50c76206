"""What went wrong in a run, in words, and whether asking again could help.

`retryable` tells whoever reads `training.failed` (an operator, a future retry policy) whether
the same request might succeed later. Wrong bytes, a wrong dataset or a missing base model fail
the same way every time; a worker killed by the system, a lost node or a full disk may not.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError
from ray.exceptions import RayActorError, RayError, RayTaskError

from adaptmesh_kit import ArtifactError
from adaptmesh_ml import (
    BaseModelNotFoundError,
    TrainingCancelledError,
    UnsupportedArchitectureError,
)
from adaptmesh_training.ray_cluster import ResidencyUnavailableError

# Events stay small: the full traceback is in the service's log.
MAX_ERROR_CHARS = 2000


class WorkersKeptFailingError(RuntimeError):
    """A run's workers died more often than `MESH_TRAINING_MAX_FAILURES` allows."""


class DatasetMismatchError(ValueError):
    """The snapshot behind a request is not the dataset the request describes."""


@dataclass(frozen=True)
class Failure:
    """A failed run as `training.failed` reports it."""

    error: str
    retryable: bool


def describe_failure(error: BaseException) -> Failure:
    """The message and retry verdict for an exception that ended a run.

    An error raised in a worker arrives wrapped by Ray (with the worker's traceback and
    terminal colours); the event reports the worker's own exception.
    """
    while isinstance(error, RayTaskError) and isinstance(error.cause, BaseException):
        error = error.cause
    text = f"{type(error).__name__}: {error}"
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return Failure(error=text, retryable=_retryable(error))


def _retryable(error: BaseException) -> bool:
    if isinstance(error, RayActorError | WorkersKeptFailingError):
        return True  # workers died: the machine's doing, not the request's
    if isinstance(
        error,
        ArtifactError
        | BaseModelNotFoundError
        | DatasetMismatchError
        | ValidationError
        | UnsupportedArchitectureError
        | TrainingCancelledError
        | ResidencyUnavailableError
        | ValueError,
    ):
        # Damaged or mismatched inputs (a checkpoint or champion failing its digest among
        # them), an architecture without known LoRA targets, a superseded run, bad data; a
        # residency no node offers (until the cluster's nodes change, asking again fails too).
        return False
    # Ray's own failures (a dead actor, a lost object, a killed worker) and the machine's
    # (disk, network) are about circumstances, not about the request.
    return isinstance(error, RayError | OSError)
