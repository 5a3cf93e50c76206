"""Where a recipe's base model lives on this machine.

The mesh never downloads weights: a base model is either shipped inside an installed Python
package (`package:<dist>`), a local directory, or a Hugging Face id already in the local cache.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

from adaptmesh_schemas.values import BaseModelSpec

PACKAGE_PREFIX = "package:"
# Packages that bundle a model conventionally keep it in a `model/` folder next to their code.
_PACKAGED_MODEL_FOLDER = "model"


class BaseModelNotFoundError(LookupError):
    """The base model named by a recipe is not available on this machine."""


def resolve_base_model(spec: BaseModelSpec) -> Path:
    """The local directory holding `spec`'s config, weights and tokenizer.

    `package:<dist>` names an installed distribution that bundles a model (its `model/` folder,
    or the package folder itself when there is none); an existing directory is used as is;
    anything else is a Hugging Face id that must already be in the local cache. Raises
    `BaseModelNotFoundError` with the reason otherwise.
    """
    model_id = spec.model_id.strip()
    if model_id.startswith(PACKAGE_PREFIX):
        directory = _packaged_model_dir(model_id.removeprefix(PACKAGE_PREFIX).strip())
    elif Path(model_id).expanduser().is_dir():
        directory = Path(model_id).expanduser().resolve()
    elif _looks_like_a_path(model_id):
        raise BaseModelNotFoundError(f"base model directory {model_id!r} does not exist")
    else:
        directory = _cached_hub_snapshot(model_id, spec.revision)
    _check_model_files(directory, spec)
    return directory


def from_pretrained_options(spec: BaseModelSpec) -> dict[str, Any]:
    """Keyword arguments every `from_pretrained` call for `spec` needs (the GGUF file, if any)."""
    return {} if spec.gguf_file is None else {"gguf_file": spec.gguf_file}


def _packaged_model_dir(distribution_name: str) -> Path:
    try:
        distribution = importlib.metadata.distribution(distribution_name)
    except importlib.metadata.PackageNotFoundError:
        raise BaseModelNotFoundError(
            f"base model package {distribution_name!r} is not installed"
        ) from None
    for import_name in _import_names(distribution):
        module_spec = importlib.util.find_spec(import_name)
        if module_spec is None or not module_spec.submodule_search_locations:
            continue
        package_dir = Path(next(iter(module_spec.submodule_search_locations)))
        bundled = package_dir / _PACKAGED_MODEL_FOLDER
        return bundled if bundled.is_dir() else package_dir
    raise BaseModelNotFoundError(
        f"installed distribution {distribution_name!r} has no importable package holding a model"
    )


def _import_names(distribution: importlib.metadata.Distribution) -> list[str]:
    """Top-level packages of a distribution: the normalised name first, then what it installs."""
    normalised = re.sub(r"[-.]+", "_", distribution.metadata["Name"]).lower()
    names = [normalised]
    for file in distribution.files or ():
        if len(file.parts) == 2 and file.parts[1] == "__init__.py" and file.parts[0] not in names:
            names.append(file.parts[0])
    return names


def _looks_like_a_path(model_id: str) -> bool:
    return model_id.startswith(("/", ".", "~")) or model_id.count("/") > 1


def _cached_hub_snapshot(model_id: str, revision: str | None) -> Path:
    try:
        snapshot = snapshot_download(model_id, revision=revision, local_files_only=True)
    except HFValidationError as error:
        raise BaseModelNotFoundError(
            f"base model {model_id!r} is neither `package:<dist>`, an existing directory, nor a "
            f"valid Hugging Face id ({error})"
        ) from None
    except LocalEntryNotFoundError:
        raise BaseModelNotFoundError(
            f"base model {model_id!r} (revision {revision or 'main'}) is not in the local "
            "Hugging Face cache, and the mesh never downloads models: install it as a package, "
            "point model_id at a directory, or pre-fill the cache (HF_HUB_CACHE)"
        ) from None
    if not isinstance(snapshot, str):  # only a dry run returns file infos
        raise BaseModelNotFoundError(f"no snapshot directory for {model_id!r}")
    return Path(snapshot)


def _check_model_files(directory: Path, spec: BaseModelSpec) -> None:
    expected = spec.gguf_file or "config.json"
    if not (directory / expected).is_file():
        raise BaseModelNotFoundError(
            f"base model {spec.model_id!r} resolved to {directory}, which has no {expected}"
        )
