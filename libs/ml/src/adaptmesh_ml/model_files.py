"""The files that make a trained classifier, and how a base model plus those files is built.

A model directory is a standard PEFT adapter directory (so `PeftModel.from_pretrained` can read
it outside the mesh) plus the label map:

- `adapter_model.safetensors`: the LoRA weights and the classifier head (PEFT saves the head
  because sequence classification puts it in `modules_to_save`);
- `adapter_config.json`: the `LoraConfig`;
- `labels.json`: the head's label order.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from peft import PeftModel
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from adaptmesh_ml.base_models import from_pretrained_options, resolve_base_model
from adaptmesh_schemas.values import BaseModelSpec

ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
LABELS_FILE = "labels.json"
MODEL_FILES = (ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE, LABELS_FILE)


class ModelFilesError(ValueError):
    """A model directory's files are missing or do not fit together."""


def configure_torch_threads() -> int:
    """Use every core this process may run on, unless the environment already decided.

    Ray sets OMP_NUM_THREADS for each worker from its CPU share, and torch honours it; outside
    Ray torch counts physical cores, which undercounts on small VMs with hyper-threads.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    if hasattr(os, "sched_getaffinity"):
        threads = max(1, len(os.sched_getaffinity(0)))
    else:  # macOS and Windows cannot pin a process to cores
        threads = max(1, os.cpu_count() or 1)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def labels_document(labels: Sequence[str]) -> bytes:
    """`labels.json`: the head's label order as index -> label and label -> index."""
    return json.dumps(
        {
            "id2label": {str(index): label for index, label in enumerate(labels)},
            "label2id": {label: index for index, label in enumerate(labels)},
        },
        indent=1,
        sort_keys=True,
    ).encode()


def labels_from_document(data: bytes) -> tuple[str, ...]:
    """The label order stored by `labels_document`."""
    try:
        id2label = json.loads(data)["id2label"]
        return tuple(str(id2label[str(index)]) for index in range(len(id2label)))
    except (ValueError, KeyError, TypeError) as error:
        raise ModelFilesError(f"{LABELS_FILE} is not a label map: {error!r}") from None


def load_tokenizer(base_model: BaseModelSpec, directory: Path) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, with a padding token (causal LMs often lack one)."""
    tokenizer = cast(
        PreTrainedTokenizerBase,
        AutoTokenizer.from_pretrained(str(directory), **from_pretrained_options(base_model)),
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_classifier(
    base_model: BaseModelSpec, directory: Path, labels: Sequence[str], pad_token_id: int | None
) -> PreTrainedModel:
    """The base transformer with a (freshly initialised) head over `labels`."""
    model = AutoModelForSequenceClassification.from_pretrained(
        str(directory),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        # Never a pickle, even if one lies beside the safetensors: unpickling runs code.
        use_safetensors=True,
        **from_pretrained_options(base_model),
    )
    if model.config.pad_token_id is None:
        # Sequence classification finds each row's last real token through pad_token_id.
        model.config.pad_token_id = pad_token_id
    return cast(PreTrainedModel, model)


def load_peft_classifier(
    base_model: BaseModelSpec, files: Mapping[str, bytes]
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, tuple[str, ...]]:
    """Base model + adapter + head from a model directory's files, in eval mode."""
    missing = [name for name in MODEL_FILES if name not in files]
    if missing:
        raise ModelFilesError(f"model files lack {', '.join(missing)}")
    labels = labels_from_document(files[LABELS_FILE])
    directory = resolve_base_model(base_model)
    tokenizer = load_tokenizer(base_model, directory)
    with quiet_about_the_head():
        base = load_base_classifier(base_model, directory, labels, tokenizer.pad_token_id)
    with tempfile.TemporaryDirectory(prefix="adaptmesh-adapter-") as adapter_dir:
        # PEFT reads adapters from a directory; it is the canonical, version-tolerant reader.
        for name in (ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE):
            (Path(adapter_dir) / name).write_bytes(files[name])
        model: Any = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False)
    model.eval()
    return cast(torch.nn.Module, model), tokenizer, labels


@contextmanager
def quiet_about_the_head() -> Iterator[None]:
    """Silence transformers' "classifier weights newly initialised" report for one load.

    When a trained model is loaded the head comes from the adapter a moment later, so that
    warning would be false in every serving and gate log.
    """
    logger = logging.getLogger("transformers.modeling_utils")

    def errors_only(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    # A filter, not setLevel: transformers runs extra checks when that logger's level is set.
    logger.addFilter(errors_only)
    try:
        yield
    finally:
        logger.removeFilter(errors_only)
