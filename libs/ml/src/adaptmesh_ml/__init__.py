"""adaptmesh model code: base-model resolution, LoRA training, classifiers, evaluation, artifacts.

Every service that touches a model goes through this package, so a model trained by the
training service loads the same way in the evaluation gate and in serving.
"""

# First, before torch is loaded: see _openmp for why idle threads must sleep.
from adaptmesh_ml import _openmp  # noqa: F401
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
from adaptmesh_ml.base_models import BaseModelNotFoundError, base_model_sha256, resolve_base_model
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
    "base_model_sha256",
    "classification_metrics",
    "configure_torch_threads",
    "evaluate",
    "evaluate_with_predictions",
    "library_versions",
    "load_model_files",
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
