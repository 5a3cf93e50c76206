"""Wiring: the training service's handlers on the mesh's streams, and its runner."""

from __future__ import annotations

from adaptmesh_kit import MeshApp
from adaptmesh_schemas import Stream
from adaptmesh_schemas.events import DatasetVersioned, ModelReady, RetrainRequested
from adaptmesh_training.handlers import TrainingHandlers
from adaptmesh_training.ledger import TrainingLedger
from adaptmesh_training.ray_cluster import RayCluster
from adaptmesh_training.runner import RunRunner
from adaptmesh_training.runs import RunLedger
from adaptmesh_training.settings import TrainingSettings
from adaptmesh_training.workers import WorkerGroup

SERVICE = "training"
RUNS_FILE = f"{SERVICE}.runs.sqlite3"


class TrainingApp(MeshApp):
    """The kit's app plus the run ledger, the warm workers and the runner."""

    def __init__(self, settings: TrainingSettings, cluster: RayCluster) -> None:
        super().__init__(settings, SERVICE)
        state = settings.state_dir
        self.runs = RunLedger(state / RUNS_FILE if state else None)
        self.knowledge = TrainingLedger()
        self.workers = WorkerGroup(
            settings.training_workers,
            settings.cpus_per_worker(),
            self.artifacts.default_root_uri,
            self.artifacts.residency_roots,
        )
        self.runner = RunRunner(
            self,
            settings=settings,
            runs=self.runs,
            knowledge=self.knowledge,
            cluster=cluster,
            workers=self.workers,
        )
        handlers = TrainingHandlers(self.runs, self.knowledge, self.runner)
        self.handles(Stream.RETRAIN, RetrainRequested)(handlers.on_retrain_requested)
        # Every instance needs the whole picture of ancestry and champions, not a share of it.
        self.handles(Stream.DATASETS, DatasetVersioned, broadcast=True)(
            handlers.on_dataset_versioned
        )
        self.handles(Stream.MODELS_READY, ModelReady, broadcast=True)(handlers.on_model_ready)
        # The runner starts after the broker (it publishes) and stops before it.
        self.while_running(self.runner.start, self.runner.stop)
        self.on_close(self.workers.stop)
        self.on_close(self.runs.close)


def build_app(settings: TrainingSettings, *, cluster: RayCluster | None = None) -> TrainingApp:
    """The training service. Pass `cluster` to share one Ray connection between several
    instances in a process (tests)."""
    return TrainingApp(settings, cluster or ray_cluster_for(settings))


def ray_cluster_for(settings: TrainingSettings) -> RayCluster:
    """The Ray connection `settings` ask for: its CPUs and the residencies a local Ray offers."""
    return RayCluster(settings.training_num_cpus, settings.training_residencies)
