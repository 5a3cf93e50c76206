"""Wiring: the ingestion service's app."""

from __future__ import annotations

from adaptmesh_ingestion.base_models import admit_base_model
from adaptmesh_ingestion.domain import CHANGE_EVENTS
from adaptmesh_ingestion.fleet import FleetIndex
from adaptmesh_ingestion.handlers import IngestionHandlers
from adaptmesh_ingestion.ledger import DatasetLedger
from adaptmesh_ingestion.persistence import HeadStore
from adaptmesh_ingestion.settings import IngestionSettings
from adaptmesh_kit import MeshApp, create_app
from adaptmesh_schemas import Stream
from adaptmesh_schemas.events import BaseModelReleased, DatasetVersioned, FeedbackSubmitted

SERVICE = "ingestion"
HEADS_FILE = f"{SERVICE}.heads.sqlite3"


def build_app(settings: IngestionSettings) -> MeshApp:
    """The ingestion service: changes and feedback in, dataset versions out; base-model
    releases fanned out over the fleet, which it follows on the datasets topic."""
    app = create_app(settings, SERVICE)
    heads = HeadStore(settings.state_dir / HEADS_FILE if settings.state_dir else None)
    app.on_close(heads.close)
    handlers = IngestionHandlers(
        DatasetLedger(app.artifacts, heads, admit=admit_base_model),
        FleetIndex(),
        fleet_sync_seconds=settings.ingestion_fleet_sync_seconds,
    )
    app.handles(Stream.CHANGES, *CHANGE_EVENTS)(handlers.on_change)
    app.handles(Stream.CHANGES, BaseModelReleased)(handlers.on_release)
    app.handles(Stream.FEEDBACK, FeedbackSubmitted)(handlers.on_change)
    app.handles(Stream.DATASETS, DatasetVersioned, broadcast=True)(handlers.on_dataset_versioned)
    return app
