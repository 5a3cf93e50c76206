"""Drift-sensing settings: the shared `MESH_*` ones plus `MESH_DRIFT_*`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from adaptmesh_drift.detectors import DETECTORS
from adaptmesh_drift.schedule import Timing
from adaptmesh_kit import MeshSettings


class DriftSettings(MeshSettings):
    """When explicit changes and detected drift become retrain requests."""

    drift_settle_ms: int = Field(
        default=1500,
        ge=0,
        description="A request goes out this long after the latest event for its domain, so "
        "a burst of changes (e.g. a taxonomy and a regulation change together) makes one "
        "request for the newest dataset version.",
    )
    drift_cooldown_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Minimum time between two retrain requests for one domain.",
    )
    drift_detectors: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("embedding-mmd", "prediction-shift", "estimated-accuracy", "feedback-accuracy"),
        description="Detectors watching each production model, comma-separated (registered: "
        "embedding-mmd, prediction-shift, estimated-accuracy, feedback-accuracy); they share "
        "the recipe's false-alarm budget. Empty turns statistical detection off.",
    )
    drift_alert_cooldown_seconds: float = Field(
        default=300.0,
        ge=0,
        description="After a drift.detected for a domain, further alarms on the same model "
        "within this time re-arm the detectors but publish nothing (a lasting shift would "
        "otherwise alarm every few windows).",
    )
    drift_retry_seconds: float = Field(
        default=1800.0,
        ge=0,
        description="A drift alarm does not request a retrain on a dataset version a request "
        "already named within this time (that retrain is likely still under way).",
    )
    drift_label_sample_size: int = Field(
        default=20,
        ge=0,
        le=500,
        description="Most uncertain recent inputs offered for labelling with each alarm.",
    )
    drift_batch_max_records: int = Field(
        default=500,
        ge=1,
        description="Inference and feedback records handled per batch.",
    )
    drift_catch_up_seconds: float = Field(
        default=60.0,
        ge=0,
        description="At start, how long the first batch waits for mesh.models.ready.v1 to be "
        "read to its end (so records are judged against the model that answered them).",
    )

    @field_validator("drift_detectors", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("drift_detectors")
    @classmethod
    def _known_detectors(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in names if name not in DETECTORS]
        if unknown:
            raise ValueError(
                f"unknown detector(s) {', '.join(unknown)}; registered: "
                f"{', '.join(sorted(DETECTORS))}"
            )
        return names

    def timing(self) -> Timing:
        return Timing(self.drift_settle_ms / 1000, self.drift_cooldown_seconds)
