"""Wiring: the gate's subscriptions on the kit's app."""

from __future__ import annotations

from adaptmesh_gate.datasets import DatasetRegistry
from adaptmesh_gate.evaluation import Evaluator
from adaptmesh_gate.handlers import Gate, ModelVerifier
from adaptmesh_gate.settings import GateSettings
from adaptmesh_kit import MeshApp, create_app
from adaptmesh_schemas import Stream
from adaptmesh_schemas.documents import ModelManifest
from adaptmesh_schemas.events import (
    DatasetVersioned,
    GateApproved,
    ModelReady,
    ModelTrained,
    RollbackRequested,
    RolledBack,
)
from adaptmesh_schemas.values import ArtifactRef

SERVICE = "evaluation-gate"


def build_app(
    settings: GateSettings,
    *,
    evaluator: Evaluator | None = None,
    verify_model: ModelVerifier | None = None,
) -> MeshApp:
    """The evaluation gate. `evaluator` defaults to loading real classifiers from the
    artifact store, `verify_model` to checking a model's files against its manifest; tests
    pass their own evaluator to judge prepared evaluations."""
    # Candidates and rollbacks: decision, promotion and offset in one transaction, fenced.
    app = create_app(settings, SERVICE, exactly_once=(Stream.TRAINING, Stream.CHANGES))
    if evaluator is None:
        # Imported here: the model stack takes seconds to load and tests that bring their own
        # evaluator do not need it.
        from adaptmesh_gate.classifiers import ClassifierEvaluator  # noqa: PLC0415

        evaluator = ClassifierEvaluator(app.artifacts)
    if verify_model is None:
        from adaptmesh_ml import load_model_files  # noqa: PLC0415

        store = app.artifacts

        def verify_files(ref: ArtifactRef) -> ModelManifest:
            manifest, _ = load_model_files(store, ref)
            return manifest

        verify_model = verify_files
    state = settings.state_dir
    datasets = DatasetRegistry(state / f"{SERVICE}.datasets.sqlite3" if state else None)
    app.on_close(datasets.close)

    gate = Gate(
        app,
        settings=settings,
        evaluator=evaluator,
        verify_model=verify_model,
        datasets=datasets,
    )
    app.handles(Stream.DATASETS, DatasetVersioned)(gate.on_dataset_versioned)
    app.handles(Stream.MODELS_READY, ModelReady, broadcast=True)(gate.on_model_ready)
    app.handles(Stream.GATE, GateApproved, RolledBack, broadcast=True)(gate.on_decision)
    app.handles(Stream.TRAINING, ModelTrained)(gate.on_model_trained)
    app.handles(Stream.CHANGES, RollbackRequested)(gate.on_rollback)
    return app
