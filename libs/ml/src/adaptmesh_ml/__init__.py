"""adaptmesh model code: base-model resolution, LoRA training, classifiers, evaluation, artifacts.

Every service that touches a model goes through this package, so a model trained by the
training service loads the same way in the evaluation gate and in serving.
"""

# First, before torch is loaded: see _openmp for why idle threads must sleep.
from adaptmesh_ml import _openmp  # noqa: F401
from adaptmesh_ml.artifacts import (
    MANIFEST_FILE,
    load_model_files,
    model_directory,
    save_model,
)
from adaptmesh_ml.base_models import BaseModelNotFoundError, resolve_base_model
from adaptmesh_ml.classifier import SKETCH_DIMENSIONS, Classifier, Prediction, sketch_projection
from adaptmesh_ml.evaluation import classification_metrics, evaluate
from adaptmesh_ml.head_mapping import HeadMapping, map_head, map_labels
from adaptmesh_ml.model_files import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    LABELS_FILE,
    ModelFilesError,
    configure_torch_threads,
)
from adaptmesh_ml.training import TrainedModel, TrainingProgress, train_classifier

__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "LABELS_FILE",
    "MANIFEST_FILE",
    "SKETCH_DIMENSIONS",
    "BaseModelNotFoundError",
    "Classifier",
    "HeadMapping",
    "ModelFilesError",
    "Prediction",
    "TrainedModel",
    "TrainingProgress",
    "classification_metrics",
    "configure_torch_threads",
    "evaluate",
    "load_model_files",
    "map_head",
    "map_labels",
    "model_directory",
    "resolve_base_model",
    "save_model",
    "sketch_projection",
    "train_classifier",
]
