"""A trained model ready to answer: base model + LoRA adapter + head, in eval mode."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from adaptmesh_kit import ArtifactStore
from adaptmesh_ml.artifacts import load_model_files
from adaptmesh_ml.model_files import configure_torch_threads, load_peft_classifier
from adaptmesh_ml.training import TrainedModel
from adaptmesh_schemas.documents import ModelManifest
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, TrainingSettings

SKETCH_DIMENSIONS = 16
# Fixed so that every model over the same base projects into the same sketch space, which is
# what lets drift-sensing compare sketches across model versions.
_SKETCH_SEED = 20_240_601
_SKETCH_DECIMALS = 4


@dataclass(frozen=True)
class Prediction:
    """One text's answer: the top label, its probability, all probabilities and a sketch."""

    label: str
    confidence: float
    probabilities: dict[str, float]
    embedding_sketch: tuple[float, ...]

    @property
    def margin(self) -> float:
        """Probability of the predicted label minus the runner-up's (1.0 with one label)."""
        top = sorted(self.probabilities.values(), reverse=True)
        return min(1.0, max(0.0, top[0] - (top[1] if len(top) > 1 else 0.0)))


class Classifier:
    """Predicts labels for texts. One caller at a time (calls are serialised by a lock)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        labels: tuple[str, ...],
        *,
        model_version: str,
        max_length: int,
        manifest: ModelManifest | None = None,
    ) -> None:
        self.model_version = model_version
        self.labels = labels
        self._model = model
        self._tokenizer = tokenizer
        self._max_length = max_length
        self._manifest = manifest
        self._lock = threading.Lock()
        self._sketch = EmbeddingSketcher()

    @property
    def manifest(self) -> ModelManifest:
        """The manifest this classifier was loaded from (only for `Classifier.load`)."""
        if self._manifest is None:
            raise LookupError(
                f"model {self.model_version} was built in-process (from_trained): no manifest"
            )
        return self._manifest

    @classmethod
    def load(cls, store: ArtifactStore, ref: ArtifactRef) -> Classifier:
        """Load the model whose manifest `ref` names, verifying every file's digest."""
        manifest, files = load_model_files(store, ref)
        return cls._build(
            manifest.lineage.base_model,
            files,
            model_version=manifest.model_version,
            hyperparameters=manifest.lineage.hyperparameters,
            manifest=manifest,
        )

    @classmethod
    def from_trained(
        cls, trained: TrainedModel, base_model: BaseModelSpec, model_version: str
    ) -> Classifier:
        """A classifier straight from `train_classifier`'s result, without the artifact store."""
        return cls._build(
            base_model,
            trained.files,
            model_version=model_version,
            hyperparameters=trained.hyperparameters,
            manifest=None,
        )

    @classmethod
    def _build(
        cls,
        base_model: BaseModelSpec,
        files: Mapping[str, bytes],
        *,
        model_version: str,
        hyperparameters: Mapping[str, float | int | str | bool],
        manifest: ModelManifest | None,
    ) -> Classifier:
        configure_torch_threads()
        model, tokenizer, labels = load_peft_classifier(base_model, files)
        if manifest is not None and tuple(manifest.labels) != labels:
            raise ValueError(
                f"manifest labels {manifest.labels} differ from the model's label map {labels}"
            )
        max_length = hyperparameters.get("max_length", TrainingSettings().max_length)
        return cls(
            model,
            tokenizer,
            labels,
            model_version=model_version,
            max_length=int(max_length),
            manifest=manifest,
        )

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[Prediction]:
        """Predictions for `texts`, in order."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not texts:
            return []
        with self._lock, torch.inference_mode():
            token_ids: list[list[int]] = self._tokenizer(
                list(texts), truncation=True, max_length=self._max_length
            )["input_ids"]
            # Batching texts of similar length keeps dynamic padding short.
            order = sorted(range(len(texts)), key=lambda index: len(token_ids[index]))
            results: list[Prediction | None] = [None] * len(texts)
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                for index, prediction in zip(
                    indices, self._predict_batch([texts[i] for i in indices]), strict=True
                ):
                    results[index] = prediction
        return [prediction for prediction in results if prediction is not None]

    def _predict_batch(self, texts: Sequence[str]) -> list[Prediction]:
        encoded = self._tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=self._max_length,
            return_tensors="pt",
        )
        outputs = self._model(**encoded, output_hidden_states=True)
        probabilities = torch.softmax(outputs.logits.float(), dim=-1)
        sketches = self._sketch(outputs.hidden_states[-1], encoded["attention_mask"])
        return [
            prediction_of(self.labels, row, sketch)
            for row, sketch in zip(probabilities.tolist(), sketches.tolist(), strict=True)
        ]


def prediction_of(
    labels: Sequence[str], probabilities: Sequence[float], sketch: Sequence[float]
) -> Prediction:
    """One text's answer from its head's probabilities (in `labels` order) and its sketch."""
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return Prediction(
        label=labels[best],
        confidence=probabilities[best],
        probabilities=dict(zip(labels, probabilities, strict=True)),
        embedding_sketch=tuple(round(value, _SKETCH_DECIMALS) for value in sketch),
    )


class EmbeddingSketcher:
    """Mean-pooled, L2-normalised last hidden state through a fixed Gaussian projection.

    Entries drawn from N(0, 1/k) keep a unit vector's length about 1 in k dimensions
    (Johnson-Lindenstrauss), so sketch coordinates sit around +-0.25 whatever the base.
    """

    def __init__(self) -> None:
        self._projection: torch.Tensor | None = None

    def __call__(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
        if self._projection is None or self._projection.shape[0] != pooled.shape[-1]:
            self._projection = sketch_projection(pooled.shape[-1])
        sketches: torch.Tensor = pooled @ self._projection
        return sketches


def sketch_projection(hidden_size: int) -> torch.Tensor:
    """The fixed `hidden_size x 16` projection behind every embedding sketch."""
    generator = torch.Generator().manual_seed(_SKETCH_SEED)
    gaussian = torch.randn(hidden_size, SKETCH_DIMENSIONS, generator=generator)
    return gaussian / math.sqrt(SKETCH_DIMENSIONS)
