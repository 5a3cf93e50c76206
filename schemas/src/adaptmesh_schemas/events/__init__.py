"""Every event model, one module per stream. Importing this package registers them all."""

from adaptmesh_schemas.events.changes import (
    BaseModelChanged,
    BaseModelReleased,
    DataBatchSubmitted,
    LabelAdded,
    LabelRenamed,
    LabelRetired,
    LabelsMerged,
    RecipeChanged,
    RegulationChanged,
    RollbackRequested,
    TaxonomyChanged,
    TaxonomyOperation,
)
from adaptmesh_schemas.events.datasets import DatasetCounts, DatasetVersioned
from adaptmesh_schemas.events.deadletter import DeadLetterRecorded, DeadLetterSource, RawHeader
from adaptmesh_schemas.events.drift import DriftAction, DriftDetected
from adaptmesh_schemas.events.feedback import FeedbackSubmitted
from adaptmesh_schemas.events.gate import (
    GateApproved,
    GateRejected,
    LabelMetrics,
    RollbackRefused,
    RolledBack,
)
from adaptmesh_schemas.events.inference import InferenceLogged
from adaptmesh_schemas.events.models import ModelReady
from adaptmesh_schemas.events.retrain import RetrainReason, RetrainRequested
from adaptmesh_schemas.events.rollout import ModelLoaded, ModelLoadFailed, ReplicaStatus
from adaptmesh_schemas.events.training import (
    ModelTrained,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)

__all__ = [
    "BaseModelChanged",
    "BaseModelReleased",
    "DataBatchSubmitted",
    "DatasetCounts",
    "DatasetVersioned",
    "DeadLetterRecorded",
    "DeadLetterSource",
    "DriftAction",
    "DriftDetected",
    "FeedbackSubmitted",
    "GateApproved",
    "GateRejected",
    "InferenceLogged",
    "LabelAdded",
    "LabelMetrics",
    "LabelRenamed",
    "LabelRetired",
    "LabelsMerged",
    "ModelLoadFailed",
    "ModelLoaded",
    "ModelReady",
    "ModelTrained",
    "RawHeader",
    "RecipeChanged",
    "RegulationChanged",
    "ReplicaStatus",
    "RetrainReason",
    "RetrainRequested",
    "RollbackRefused",
    "RollbackRequested",
    "RolledBack",
    "TaxonomyChanged",
    "TaxonomyOperation",
    "TrainingFailed",
    "TrainingProgress",
    "TrainingStarted",
]
