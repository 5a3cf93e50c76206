"""Wiring: the training service's handlers on the mesh's streams."""

from __future__ import annotations

from adaptmesh_kit import MeshApp, create_app
from adaptmesh_schemas import Stream
from adaptmesh_schemas.events import DatasetVersioned, ModelReady, RetrainRequested
from adaptmesh_training.handlers import TrainingHandlers
from adaptmesh_training.ledger import TrainingLedger
from adaptmesh_training.ray_cluster import RayCluster
from adaptmesh_training.settings import TrainingSettings

SERVICE = "training"


def build_app(
    settings: TrainingSettings,
    *,
    cluster: RayCluster | None = None,
    ledger: TrainingLedger | None = None,
) -> MeshApp:
    """The training service. Pass `cluster` to share one Ray connection between several
    instances in a process (tests), `ledger` to look at what an instance trained."""
    app = create_app(settings, SERVICE)
    handlers = TrainingHandlers(
        settings,
        app.artifacts,
        cluster or RayCluster(settings.training_num_cpus),
        ledger or TrainingLedger(),
    )
    app.handles(Stream.RETRAIN, RetrainRequested)(handlers.on_retrain_requested)
    # Every instance needs the whole picture of ancestry and champions, not a share of it.
    app.handles(Stream.DATASETS, DatasetVersioned, broadcast=True)(handlers.on_dataset_versioned)
    app.handles(Stream.MODELS_READY, ModelReady, broadcast=True)(handlers.on_model_ready)
    return app
