"""Where a recipe's base model lives on this machine.

The mesh never downloads weights: a base model is either shipped inside an installed Python
package (`package:<dist>`), a local directory, or a Hugging Face id already in the local cache.

A GGUF base (`gguf_file` set) is dequantized once into an ordinary transformers directory
(config.json, model.safetensors, tokenizer files) under the model cache — `MESH_MODEL_CACHE`,
else `~/.cache/adaptmesh/base-models` — keyed by the GGUF file's sha256: loading a GGUF costs
tens of seconds of dequantizing on every `from_pretrained`, the converted copy loads in seconds.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

from adaptmesh_schemas.values import BaseModelSpec

PACKAGE_PREFIX = "package:"
MODEL_CACHE_ENV = "MESH_MODEL_CACHE"
DEFAULT_MODEL_CACHE = Path("~/.cache/adaptmesh/base-models")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# Packages that bundle a model conventionally keep it in a `model/` folder next to their code.
_PACKAGED_MODEL_FOLDER = "model"
_CONVERTING_PREFIX = ".converting-"
# A conversion takes well under a minute; a temp dir this old belongs to a process that died.
_ABANDONED_AFTER_SECONDS = 3600.0
_HASH_CHUNK_BYTES = 1 << 20

GgufConverter = Callable[[Path, Path], None]
"""Writes a transformers directory (config, weights, tokenizer) for a GGUF file: (gguf, target)."""


class BaseModelNotFoundError(LookupError):
    """The base model named by a recipe is not available on this machine."""


def resolve_base_model(spec: BaseModelSpec, *, convert_gguf: GgufConverter | None = None) -> Path:
    """The local directory holding `spec`'s config, weights and tokenizer.

    `package:<dist>` names an installed distribution that bundles a model (its `model/` folder,
    or the package folder itself when there is none); an existing directory is used as is;
    anything else is a Hugging Face id that must already be in the local cache. Raises
    `BaseModelNotFoundError` with the reason otherwise.

    With `gguf_file` set, the answer is the converted copy of that file in the model cache,
    made on first use by `convert_gguf` (default: `convert_gguf_with_transformers`).
    """
    directory = _shipped_model_dir(spec)
    if spec.gguf_file is None:
        return directory
    return _converted_gguf(
        directory / spec.gguf_file, convert_gguf or convert_gguf_with_transformers
    )


def from_pretrained_options(spec: BaseModelSpec) -> dict[str, Any]:
    """Keyword arguments every `from_pretrained` call on `resolve_base_model(spec)` needs.

    None today: GGUF bases resolve to an ordinary converted directory. Kept as the one place
    such options would go, so every loader passes the same ones.
    """
    del spec
    return {}


def model_cache_dir() -> Path:
    """Where converted base models are kept: `MESH_MODEL_CACHE`, else the user's cache."""
    configured = os.environ.get(MODEL_CACHE_ENV, "").strip()
    return Path(configured or DEFAULT_MODEL_CACHE).expanduser()


def base_model_sha256(spec: BaseModelSpec) -> str:
    """The sha256 of `spec`'s weights as shipped: the GGUF file, or `model.safetensors`.

    Shards or other layouts with several weight files digest to the sha256 of their sorted
    "name sha256" lines. Each file is hashed once per (path, size, mtime) in a process.
    """
    directory = _shipped_model_dir(spec)
    if spec.gguf_file is not None:
        return file_sha256(directory / spec.gguf_file)
    if (directory / WEIGHTS_FILE).is_file():
        return file_sha256(directory / WEIGHTS_FILE)
    weights = sorted(directory.glob("*.safetensors")) or sorted(
        directory.glob("pytorch_model*.bin")
    )
    if not weights:
        raise BaseModelNotFoundError(
            f"base model {spec.model_id!r} has no weight files in {directory}"
        )
    lines = "".join(f"{path.name} {file_sha256(path)}\n" for path in weights)
    return hashlib.sha256(lines.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (resolved path, size, mtime) for this process."""
    resolved = path.resolve()
    stat = resolved.stat()
    return _sha256_of(str(resolved), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # part of the cache key only: a rewritten file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def convert_gguf_with_transformers(gguf_path: Path, target: Path) -> None:
    """Dequantize a GGUF file into a transformers directory at `target` (float weights).

    transformers keeps GGUF weights packed by default, and a packed model cannot be saved;
    `GgufConfig(dequantize=True)` unpacks them while loading.
    """
    directory, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, quantization_config=GgufConfig(dequantize=True)
    )
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))


def _converted_gguf(gguf_path: Path, convert: GgufConverter) -> Path:
    """The cached converted copy of `gguf_path`, converting it first if there is none.

    The copy is written into a temp dir beside its final place and renamed into it, so a
    reader sees a whole copy or none, and two processes converting at once both end up using
    one complete copy (the loser of the rename discards its own).
    """
    cache = model_cache_dir()
    final = cache / file_sha256(gguf_path)
    if _is_converted(final):
        return final
    cache.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_conversions(cache)
    staging = Path(tempfile.mkdtemp(prefix=_CONVERTING_PREFIX, dir=cache))
    try:
        convert(gguf_path, staging)
        if not _is_converted(staging):
            raise BaseModelNotFoundError(
                f"converting {gguf_path} wrote no {CONFIG_FILE} and {WEIGHTS_FILE}"
            )
        staging.chmod(0o755)  # mkdtemp's 0o700 would hide the copy from other users
        try:
            staging.rename(final)
        except OSError:
            if not _is_converted(final):  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _is_converted(directory: Path) -> bool:
    return (directory / CONFIG_FILE).is_file() and any(directory.glob("*.safetensors"))


def _remove_abandoned_conversions(cache: Path) -> None:
    cutoff = time.time() - _ABANDONED_AFTER_SECONDS
    for leftover in cache.glob(f"{_CONVERTING_PREFIX}*"):
        try:
            abandoned = leftover.stat().st_mtime < cutoff
        except OSError:  # removed by another process meanwhile
            continue
        if abandoned:
            shutil.rmtree(leftover, ignore_errors=True)


def _shipped_model_dir(spec: BaseModelSpec) -> Path:
    """The directory holding `spec` as shipped (for a GGUF base, the directory of the file)."""
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
    expected = spec.gguf_file or CONFIG_FILE
    if not (directory / expected).is_file():
        raise BaseModelNotFoundError(
            f"base model {spec.model_id!r} resolved to {directory}, which has no {expected}"
        )
