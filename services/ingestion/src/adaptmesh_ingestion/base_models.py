"""Which base models a change may name: those `adaptmesh_ml.locate_base_model` admits.

A change that names a base model the mesh would not load — a URI (`file://`, `http://`, ...), a
path that is relative or outside `MESH_BASE_MODEL_ROOTS` (symlinks and `..` resolved), a
distribution that is not installed, a directory without `*.safetensors` weights — is rejected
whole on arrival, so the domain keeps its base model and its next data batch trains on it.
Training and serving ask the same function again when they load, so nothing ingestion refused
is ever loaded, and nothing it accepted is refused there (on the same machine setup).

Not part of the pure rules in `domain.py`: the answer depends on this machine (installed
packages, files), so `adaptmesh replay`, which rebuilds the versions announced in the past, does
not ask again.
"""

from __future__ import annotations

from adaptmesh_ingestion.domain import Change, ChangeRejected, DomainState
from adaptmesh_ingestion.fleet import ReleaseRejected, describe
from adaptmesh_ml.base_models import BaseModelNotFoundError, locate_base_model
from adaptmesh_schemas.events import BaseModelChanged, BaseModelReleased, RecipeChanged
from adaptmesh_schemas.values import BaseModelSpec


def admit_base_model(change: Change, state: DomainState | None) -> None:
    """Raise `ChangeRejected` when `change` names a base model the mesh will not load; `state`
    is the domain's current state, whose base model it keeps."""
    match change:
        case RecipeChanged():
            what = f"recipe version {change.recipe_version!r}"
        case BaseModelChanged():
            what = f"to {change.base_model.model_id!r}"
        case _:
            return  # names no base model
    refused = _refusal(change.base_model)
    if refused is None:
        return
    keeps = (
        f"the domain keeps base model {describe(state.base_model)}"
        if state is not None
        else "nothing was ingested"
    )
    raise ChangeRejected(
        f"{change.event_name} {what} of domain {change.domain!r} rejected: {refused}; {keeps}"
    )


def admit_release(release: BaseModelReleased, release_id: str) -> None:
    """Raise `ReleaseRejected` when the base model a release moves domains to would not load.

    The old base is not checked: it only selects domains, and a domain on a base that no longer
    loads is exactly what a release should be able to move."""
    refused = _refusal(release.new_base)
    if refused is not None:
        raise ReleaseRejected(
            f"base model release {release_id} ({describe(release.old_base)} -> "
            f"{describe(release.new_base)}) rejected: {refused}; no domain was moved"
        )


def _refusal(base: BaseModelSpec) -> str | None:
    try:
        locate_base_model(base)
    except BaseModelNotFoundError as error:
        return str(error)
    return None
