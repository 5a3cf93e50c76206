"""adaptmesh model code: base-model resolution, LoRA training, classifiers, evaluation, artifacts.

Every service that touches a model goes through this package, so a model trained by the
training service loads the same way in the evaluation gate and in serving.

The names below are imported on first use, not with the package: importing torch, transformers
and PEFT costs about 11 s and 900 MB, and a process that only decides whether a base model may
be loaded (ingestion, through `adaptmesh_ml.base_models`) must not pay for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# First, before torch is loaded: see _openmp for why idle threads must sleep.
from adaptmesh_ml import _openmp  # noqa: F401

if TYPE_CHECKING:
    from adaptmesh_ml.architectures import (
        UnsupportedArchitectureError,
        lora_target_modules,
        register_architecture,
    )
    from adaptmesh_ml.artifacts import (
        MANIFEST_FILE,
        load_model_files,
        model_directory,
        save_model,
    )
    from adaptmesh_ml.base_cache import BaseModelCache
    from adaptmesh_ml.base_models import (
        BaseModelNotFoundError,
        BaseModelRefusedError,
        base_model_roots,
        base_model_sha256,
        locate_base_model,
        resolve_base_model,
    )
    from adaptmesh_ml.classifier import SKETCH_DIMENSIONS, Classifier, Prediction, sketch_projection
    from adaptmesh_ml.evaluation import classification_metrics, evaluate, evaluate_with_predictions
    from adaptmesh_ml.head_mapping import HeadMapping, map_head, map_labels
    from adaptmesh_ml.model_files import (
        ADAPTER_CONFIG_FILE,
        ADAPTER_WEIGHTS_FILE,
        LABELS_FILE,
        ModelFilesError,
        configure_torch_threads,
    )
    from adaptmesh_ml.profiles import profile_from_predictions, reference_profile
    from adaptmesh_ml.shared_base import (
        AdapterInfo,
        AdapterUnloadedError,
        BaseInfo,
        DomainModel,
        SharedBaseModels,
    )
    from adaptmesh_ml.training import (
        TrainedModel,
        TrainingCancelledError,
        TrainingProgress,
        TrainingState,
        WarmStart,
        WarmStartError,
        library_versions,
        lora_config_for,
        train_classifier,
        warm_start_blocker,
    )
    from adaptmesh_ml.warm_start import WarmStartPlan, plan_warm_start

# Where each public name lives, for `__getattr__`.
_HOMES: dict[str, str] = {
    "UnsupportedArchitectureError": "adaptmesh_ml.architectures",
    "lora_target_modules": "adaptmesh_ml.architectures",
    "register_architecture": "adaptmesh_ml.architectures",
    "MANIFEST_FILE": "adaptmesh_ml.artifacts",
    "load_model_files": "adaptmesh_ml.artifacts",
    "model_directory": "adaptmesh_ml.artifacts",
    "save_model": "adaptmesh_ml.artifacts",
    "BaseModelCache": "adaptmesh_ml.base_cache",
    "BaseModelNotFoundError": "adaptmesh_ml.base_models",
    "BaseModelRefusedError": "adaptmesh_ml.base_models",
    "base_model_roots": "adaptmesh_ml.base_models",
    "locate_base_model": "adaptmesh_ml.base_models",
    "base_model_sha256": "adaptmesh_ml.base_models",
    "resolve_base_model": "adaptmesh_ml.base_models",
    "SKETCH_DIMENSIONS": "adaptmesh_ml.classifier",
    "Classifier": "adaptmesh_ml.classifier",
    "Prediction": "adaptmesh_ml.classifier",
    "sketch_projection": "adaptmesh_ml.classifier",
    "classification_metrics": "adaptmesh_ml.evaluation",
    "evaluate": "adaptmesh_ml.evaluation",
    "evaluate_with_predictions": "adaptmesh_ml.evaluation",
    "HeadMapping": "adaptmesh_ml.head_mapping",
    "map_head": "adaptmesh_ml.head_mapping",
    "map_labels": "adaptmesh_ml.head_mapping",
    "ADAPTER_CONFIG_FILE": "adaptmesh_ml.model_files",
    "ADAPTER_WEIGHTS_FILE": "adaptmesh_ml.model_files",
    "LABELS_FILE": "adaptmesh_ml.model_files",
    "ModelFilesError": "adaptmesh_ml.model_files",
    "configure_torch_threads": "adaptmesh_ml.model_files",
    "profile_from_predictions": "adaptmesh_ml.profiles",
    "reference_profile": "adaptmesh_ml.profiles",
    "AdapterInfo": "adaptmesh_ml.shared_base",
    "AdapterUnloadedError": "adaptmesh_ml.shared_base",
    "BaseInfo": "adaptmesh_ml.shared_base",
    "DomainModel": "adaptmesh_ml.shared_base",
    "SharedBaseModels": "adaptmesh_ml.shared_base",
    "TrainedModel": "adaptmesh_ml.training",
    "TrainingCancelledError": "adaptmesh_ml.training",
    "TrainingProgress": "adaptmesh_ml.training",
    "TrainingState": "adaptmesh_ml.training",
    "WarmStart": "adaptmesh_ml.training",
    "WarmStartError": "adaptmesh_ml.training",
    "library_versions": "adaptmesh_ml.training",
    "lora_config_for": "adaptmesh_ml.training",
    "train_classifier": "adaptmesh_ml.training",
    "warm_start_blocker": "adaptmesh_ml.training",
    "WarmStartPlan": "adaptmesh_ml.warm_start",
    "plan_warm_start": "adaptmesh_ml.warm_start",
}

__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "LABELS_FILE",
    "MANIFEST_FILE",
    "SKETCH_DIMENSIONS",
    "AdapterInfo",
    "AdapterUnloadedError",
    "BaseInfo",
    "BaseModelCache",
    "BaseModelNotFoundError",
    "BaseModelRefusedError",
    "Classifier",
    "DomainModel",
    "HeadMapping",
    "ModelFilesError",
    "Prediction",
    "SharedBaseModels",
    "TrainedModel",
    "TrainingCancelledError",
    "TrainingProgress",
    "TrainingState",
    "UnsupportedArchitectureError",
    "WarmStart",
    "WarmStartError",
    "WarmStartPlan",
    "base_model_roots",
    "base_model_sha256",
    "classification_metrics",
    "configure_torch_threads",
    "evaluate",
    "evaluate_with_predictions",
    "library_versions",
    "load_model_files",
    "locate_base_model",
    "lora_config_for",
    "lora_target_modules",
    "map_head",
    "map_labels",
    "model_directory",
    "plan_warm_start",
    "profile_from_predictions",
    "reference_profile",
    "register_architecture",
    "resolve_base_model",
    "save_model",
    "sketch_projection",
    "train_classifier",
    "warm_start_blocker",
]

if not TYPE_CHECKING:  # for mypy the imports above define every name, and nothing else exists

    def __getattr__(name: str) -> object:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value  # once imported, a plain module attribute
        return value
