"""What the mesh knows about each transformer architecture, keyed by `config.model_type`.

Architectures register themselves (as PEFT's methods do) instead of being chosen by an if/elif
chain; today an architecture contributes the modules a LoRA adapter attaches to when a recipe
leaves `lora.target_modules` empty: the attention's query and value projections, whose names
differ from one family to the next (`query`/`value` in BERT, `q_proj`/`v_proj` in Llama, ...).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from adaptmesh_ml.base_models import resolve_base_model
from adaptmesh_schemas.values import BaseModelSpec

CONFIG_FILE = "config.json"


class UnsupportedArchitectureError(ValueError):
    """The base model's architecture is not registered and the recipe names no LoRA targets."""


@dataclass(frozen=True)
class Architecture:
    """One transformers architecture as the mesh adapts it."""

    model_type: str
    lora_targets: tuple[str, ...]


_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(model_type: str, *, lora_targets: Sequence[str]) -> Architecture:
    """Make `model_type` (transformers' `config.model_type`) adaptable with those LoRA targets.

    Registering the same architecture again with the same targets is a no-op; with other
    targets it is a `ValueError`, so two modules cannot silently disagree.
    """
    targets = tuple(lora_targets)
    if not model_type or not targets or not all(targets):
        raise ValueError("an architecture needs a model type and at least one LoRA target")
    architecture = Architecture(model_type, targets)
    registered = _ARCHITECTURES.setdefault(model_type, architecture)
    if registered != architecture:
        raise ValueError(
            f"architecture {model_type!r} is already registered with LoRA targets "
            f"{registered.lora_targets}, not {targets}"
        )
    return registered


def registered_architectures() -> tuple[str, ...]:
    """Every registered model type, sorted."""
    return tuple(sorted(_ARCHITECTURES))


def lora_target_modules(model_type: str, requested: Sequence[str]) -> tuple[str, ...]:
    """The modules a LoRA adapter attaches to: `requested` if any, else the architecture's.

    Raises `UnsupportedArchitectureError` when nothing is requested and `model_type` is not
    registered.
    """
    if requested:
        return tuple(requested)
    architecture = _ARCHITECTURES.get(model_type)
    if architecture is None:
        raise UnsupportedArchitectureError(
            f"no default LoRA target modules for base model architecture {model_type!r} "
            f"(known: {', '.join(registered_architectures())}); set `lora.target_modules` in "
            "the recipe to the names of the modules that should receive adapters"
        )
    return architecture.lora_targets


def model_type_of(directory: Path) -> str:
    """`model_type` from the `config.json` of a resolved base-model directory."""
    try:
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        model_type = config["model_type"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UnsupportedArchitectureError(
            f"cannot read the architecture of the base model in {directory}: {error!r}"
        ) from None
    if not isinstance(model_type, str):
        raise UnsupportedArchitectureError(f"{directory / CONFIG_FILE} has no model_type")
    return model_type


def resolve_lora_targets(base_model: BaseModelSpec, requested: Sequence[str]) -> tuple[str, ...]:
    """The modules a LoRA adapter on `base_model` attaches to: `requested` if any, else the
    registered targets of its architecture (read from its resolved directory's config.json)."""
    if requested:
        return tuple(requested)
    return lora_target_modules(model_type_of(resolve_base_model(base_model)), requested)


# Query and value projections: the LoRA paper's choice, and PEFT's defaults where it has one.
register_architecture("albert", lora_targets=("query", "value"))
register_architecture("bert", lora_targets=("query", "value"))
register_architecture("deberta-v2", lora_targets=("query_proj", "value_proj"))
register_architecture("distilbert", lora_targets=("q_lin", "v_lin"))
register_architecture("electra", lora_targets=("query", "value"))
register_architecture("gemma", lora_targets=("q_proj", "v_proj"))
register_architecture("gemma2", lora_targets=("q_proj", "v_proj"))
register_architecture("gpt2", lora_targets=("c_attn",))  # one fused query/key/value Conv1D
register_architecture("llama", lora_targets=("q_proj", "v_proj"))
register_architecture("mistral", lora_targets=("q_proj", "v_proj"))
register_architecture("mpnet", lora_targets=("q", "v"))
register_architecture("phi3", lora_targets=("qkv_proj",))  # fused query/key/value
register_architecture("qwen2", lora_targets=("q_proj", "v_proj"))
register_architecture("qwen3", lora_targets=("q_proj", "v_proj"))
register_architecture("roberta", lora_targets=("query", "value"))
register_architecture("xlm-roberta", lora_targets=("query", "value"))
