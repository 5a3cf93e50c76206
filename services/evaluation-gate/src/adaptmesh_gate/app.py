"""Wiring: the gate's subscriptions on the kit's app."""

from __future__ import annotations

from adaptmesh_gate.champions import Champions
from adaptmesh_gate.datasets import DatasetRegistry
from adaptmesh_gate.evaluation import Evaluator
from adaptmesh_gate.handlers import Gate
from adaptmesh_gate.settings import GateSettings
from adaptmesh_kit import MeshApp, create_app
from adaptmesh_kit.topic_ends import end_offsets
from adaptmesh_schemas import Stream
from adaptmesh_schemas.events import DatasetVersioned, ModelReady, ModelTrained

SERVICE = "evaluation-gate"


def build_app(settings: GateSettings, *, evaluator: Evaluator | None = None) -> MeshApp:
    """The evaluation gate. `evaluator` defaults to loading real classifiers from the
    artifact store; tests pass their own to judge prepared evaluations."""
    app = create_app(settings, SERVICE)
    if evaluator is None:
        # Imported here: the model stack takes seconds to load and tests that bring their own
        # evaluator do not need it.
        from adaptmesh_gate.classifiers import ClassifierEvaluator  # noqa: PLC0415

        evaluator = ClassifierEvaluator(app.artifacts)
    state = settings.state_dir
    datasets = DatasetRegistry(state / f"{SERVICE}.datasets.sqlite3" if state else None)
    app.on_close(datasets.close)

    async def models_ready_end(topic: str) -> dict[int, int]:
        return await end_offsets(settings.kafka_bootstrap_servers, topic)

    gate = Gate(
        app,
        settings=settings,
        evaluator=evaluator,
        datasets=datasets,
        champions=Champions(),
        end_offsets=models_ready_end,
    )
    app.handles(Stream.DATASETS, DatasetVersioned)(gate.on_dataset_versioned)
    app.handles(Stream.MODELS_READY, ModelReady, broadcast=True)(gate.on_model_ready)
    app.handles(Stream.TRAINING, ModelTrained)(gate.on_model_trained)
    return app
