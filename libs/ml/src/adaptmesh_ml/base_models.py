"""Where a recipe's base model lives on this machine, and whether the mesh may load it.

The mesh never downloads weights, and it loads a base model only from places an operator chose:

* `package:<distribution>` — an installed Python distribution that bundles a model (its
  `model/` folder, or its package folder);
* an absolute path to a directory under one of the roots in `MESH_BASE_MODEL_ROOTS`
  (`os.pathsep`-separated absolute directories; none by default), after symlinks and `..` are
  resolved;
* a Hugging Face id whose snapshot is already in the local cache, when that cache lies under
  such a root.

Anything else is refused with the reason (`BaseModelRefusedError`): a URI (`file://`,
`http://`, any `scheme:`), a relative path, a path outside the roots, a distribution that is
not installed, a directory without `*.safetensors` weights (pickled `.bin`/`.pt` weights are
never loaded) or a weight file that is a symlink out of its root. `locate_base_model` is the one
decision: ingestion refuses a change naming a base model it refuses, and every loader
(`resolve_base_model`) goes through it too, so what ingestion accepted is what training and
serving load, and nothing else.

A GGUF base (`gguf_file` set: a file name in the model's directory) is dequantized once into an
ordinary transformers directory (config.json, model.safetensors, tokenizer files) under the
model cache — `MESH_MODEL_CACHE`, else `~/.cache/adaptmesh/base-models` — keyed by the GGUF
file's sha256: loading a GGUF costs tens of seconds of dequantizing on every `from_pretrained`,
the converted copy loads in seconds. GGUF is a plain tensor format (no pickle), and what is
loaded afterwards is the safetensors copy.

Nothing here imports torch or transformers until a GGUF file is converted (nor huggingface_hub
until a Hugging Face id is looked up), so deciding costs a process (ingestion) no model
libraries.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adaptmesh_schemas.values import BaseModelSpec

PACKAGE_PREFIX = "package:"
ROOTS_ENV = "MESH_BASE_MODEL_ROOTS"
MODEL_CACHE_ENV = "MESH_MODEL_CACHE"
DEFAULT_MODEL_CACHE = Path("~/.cache/adaptmesh/base-models")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SAFE_WEIGHTS_PATTERN = "*.safetensors"
GGUF_SUFFIX = ".gguf"
# Weight formats that unpickle (run code) when loaded: named in a refusal, never loaded.
_PICKLED_WEIGHTS_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# `scheme:` at the start: file://, http://, s3://, hf:, ... (`package:` is checked first).
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):")
# A distribution name as PEP 508 spells it.
_DISTRIBUTION_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
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


class BaseModelRefusedError(BaseModelNotFoundError):
    """The base model is named in a form, or lives in a place, the mesh does not load from."""


def base_model_roots() -> tuple[Path, ...]:
    """The directories local base models may be loaded from: `MESH_BASE_MODEL_ROOTS`, a list
    of absolute directories separated by `os.pathsep` (":"), symlinks resolved; none when unset.

    Raises `BaseModelRefusedError` for an entry that is not an absolute path (a relative root
    would mean something else in every process's working directory).
    """
    roots: list[Path] = []
    for listed in os.environ.get(ROOTS_ENV, "").split(os.pathsep):
        entry = listed.strip()
        if not entry:
            continue
        if not Path(entry).is_absolute():
            raise BaseModelRefusedError(f"{ROOTS_ENV} entry {entry!r} is not an absolute path")
        roots.append(Path(os.path.realpath(entry)))
    return tuple(roots)


def locate_base_model(spec: BaseModelSpec, *, roots: Sequence[Path] | None = None) -> Path:
    """The directory holding `spec` as shipped (for a GGUF base, the directory of its file),
    if the mesh may load it; raises `BaseModelRefusedError` or `BaseModelNotFoundError` saying
    why not. Reads files' names and metadata only, never their contents.

    `roots`: where local models may come from (default: `base_model_roots()`).
    """
    allowed_roots = base_model_roots() if roots is None else tuple(_real(r) for r in roots)
    model_id = spec.model_id.strip()
    if not model_id:
        raise BaseModelRefusedError("base model refused: model_id is empty")
    scheme = _SCHEME.match(model_id)
    if model_id.startswith(PACKAGE_PREFIX):
        directory = _packaged_model_dir(model_id, model_id.removeprefix(PACKAGE_PREFIX).strip())
        # A package's model is what the package ships: its files stay inside its folder.
        allowed: tuple[Path, ...] = (_real(directory),)
    elif scheme is not None:
        raise BaseModelRefusedError(
            f"base model {model_id!r} refused: a URI ({scheme['scheme']}:) is never loaded; "
            f"{_WHERE_FROM}"
        )
    elif _looks_like_a_path(model_id):
        directory = _local_model_dir(model_id, allowed_roots)
        allowed = allowed_roots
    else:
        directory = _cached_hub_snapshot(model_id, spec.revision, allowed_roots)
        allowed = allowed_roots
    _check_model_files(model_id, directory, spec, allowed)
    return directory


def resolve_base_model(
    spec: BaseModelSpec,
    *,
    convert_gguf: GgufConverter | None = None,
    roots: Sequence[Path] | None = None,
) -> Path:
    """The local directory holding `spec`'s config, safetensors weights and tokenizer, once
    `locate_base_model` admits it (which raises with the reason otherwise).

    With `gguf_file` set, the answer is the converted copy of that file in the model cache,
    made on first use by `convert_gguf` (default: `convert_gguf_with_transformers`).
    """
    directory = locate_base_model(spec, roots=roots)
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

    Shards or other layouts with several safetensors files digest to the sha256 of their sorted
    "name sha256" lines. Each file is hashed once per (path, size, mtime) in a process.
    """
    directory = locate_base_model(spec)
    if spec.gguf_file is not None:
        return file_sha256(directory / spec.gguf_file)
    if (directory / WEIGHTS_FILE).is_file():
        return file_sha256(directory / WEIGHTS_FILE)
    weights = sorted(directory.glob(SAFE_WEIGHTS_PATTERN))  # not empty: located
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
    # Here, not at the top: deciding whether a base model may load must not import torch.
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig  # noqa: PLC0415

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


_WHERE_FROM = (
    "base models load only from `package:<distribution>` or a directory under "
    f"{ROOTS_ENV}, as safetensors"
)


def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(path))


def _roots_text(roots: Sequence[Path]) -> str:
    if not roots:
        return f"{ROOTS_ENV} is not set, so only `package:<distribution>` bases load"
    return f"{ROOTS_ENV}: {', '.join(str(root) for root in roots)}"


def _within(path: Path, roots: Sequence[Path]) -> bool:
    """Whether `path`, symlinks and `..` resolved, lies inside one of `roots` (resolved)."""
    real = _real(path)
    return any(real.is_relative_to(root) for root in roots)


def _local_model_dir(model_id: str, roots: Sequence[Path]) -> Path:
    path = Path(model_id)
    if not path.is_absolute():
        raise BaseModelRefusedError(
            f"base model {model_id!r} refused: not an absolute path; name a directory under "
            f"{ROOTS_ENV} by its absolute path ({_roots_text(roots)})"
        )
    if not _within(path, roots):
        raise BaseModelRefusedError(
            f"base model {model_id!r} refused: {_real(path)} is outside the allowed roots "
            f"({_roots_text(roots)})"
        )
    if not path.is_dir():
        raise BaseModelNotFoundError(f"base model directory {model_id!r} does not exist")
    return _real(path)


def _packaged_model_dir(model_id: str, distribution_name: str) -> Path:
    if not _DISTRIBUTION_NAME.match(distribution_name):
        raise BaseModelRefusedError(
            f"base model {model_id!r} refused: {distribution_name!r} is not a distribution name"
        )
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
    """A path rather than a Hugging Face id (`name` or `org/name`, neither with `..`)."""
    return (
        model_id.startswith(("/", ".", "~"))
        or "\\" in model_id
        or model_id.count("/") > 1
        or ".." in model_id.split("/")
    )


def _cached_hub_snapshot(model_id: str, revision: str | None, roots: Sequence[Path]) -> Path:
    if not roots:
        raise BaseModelRefusedError(
            f"base model {model_id!r} refused: a Hugging Face id loads only from a cache under "
            f"{ROOTS_ENV}, which is not set; use `package:<distribution>`"
        )
    # Here, not at the top: half a second of imports that only Hugging Face ids need.
    from huggingface_hub import snapshot_download  # noqa: PLC0415
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError  # noqa: PLC0415

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
    if not _within(Path(snapshot), roots):
        raise BaseModelRefusedError(
            f"base model {model_id!r} refused: its cached snapshot {_real(snapshot)} is outside "
            f"the allowed roots ({_roots_text(roots)})"
        )
    return Path(snapshot)


def _check_model_files(
    model_id: str, directory: Path, spec: BaseModelSpec, allowed: Sequence[Path]
) -> None:
    """The files a loader reads exist, are safetensors (or one GGUF file) and, symlinks
    resolved, lie inside `allowed`."""
    gguf_file = spec.gguf_file
    if gguf_file is not None:
        if Path(gguf_file).name != gguf_file or not gguf_file.endswith(GGUF_SUFFIX):
            raise BaseModelRefusedError(
                f"base model {model_id!r} refused: gguf_file {gguf_file!r} must be the name of "
                f"a {GGUF_SUFFIX} file in the model's directory"
            )
        expected = [directory / gguf_file]
    else:
        expected = [directory / CONFIG_FILE]
    missing = [path.name for path in expected if not path.is_file()]
    if missing:
        raise BaseModelNotFoundError(
            f"base model {model_id!r} resolved to {directory}, which has no {missing[0]}"
        )
    if gguf_file is None:
        weights = sorted(directory.glob(SAFE_WEIGHTS_PATTERN))
        if not weights:
            pickled = sorted(
                path.name
                for pattern in _PICKLED_WEIGHTS_PATTERNS
                for path in directory.glob(pattern)
            )
            found = (
                f" (found {', '.join(pickled)}: pickled weights are never loaded)"
                if pickled
                else ""
            )
            raise BaseModelRefusedError(
                f"base model {model_id!r} refused: {directory} has no {SAFE_WEIGHTS_PATTERN} "
                f"weights{found}"
            )
        expected += weights
    escaping = [path.name for path in expected if not _within(path, allowed)]
    if escaping:
        raise BaseModelRefusedError(
            f"base model {model_id!r} refused: {', '.join(escaping)} in {directory} "
            "resolve(s) to outside the allowed roots (a symlink out of the model's directory)"
        )
