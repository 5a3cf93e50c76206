"""Base models on disk for the ingestion tests, which check every base model a change names
(`adaptmesh_ml.locate_base_model`): tiny stand-ins, never loaded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import huggingface_hub.constants
import pytest

from adaptmesh_schemas.values import BaseModelSpec


def allow_root(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make `root` the one directory local base models may come from."""
    root.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("MESH_BASE_MODEL_ROOTS", str(root))
    return root


def local_model(directory: Path, *, weights: str = "model.safetensors") -> BaseModelSpec:
    """A model directory with a config and one weights file, named by its absolute path."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "bert"}')
    (directory / weights).write_bytes(b"weights")
    return BaseModelSpec(model_id=str(directory))


def cached_hub_models(root: Path, monkeypatch: pytest.MonkeyPatch, *specs: BaseModelSpec) -> None:
    """Make each `org/name` spec resolve: a snapshot in a Hugging Face cache under `root`,
    which becomes the allowed root."""
    cache = allow_root(root, monkeypatch) / "hub"
    for spec in specs:
        org, name = spec.model_id.split("/")
        revision = spec.revision or "main"
        commit = hashlib.sha1(f"{spec.model_id}@{revision}".encode()).hexdigest()
        repo = cache / f"models--{org}--{name}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / revision).write_text(commit)
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text('{"model_type": "bert"}')
        (snapshot / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
