"""Drift-sensing settings: the shared `MESH_*` ones plus `MESH_DRIFT_*`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from adaptmesh_drift.detectors import DETECTORS, DetectorThresholds
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
    drift_window_size: int = Field(
        default=200,
        ge=2,
        description="Inference records per domain in the sliding window the detectors test.",
    )
    drift_test_every: int = Field(
        default=20,
        ge=1,
        description="A full window is tested again after this many new records (testing "
        "after each one repeats nearly the same test and inflates false alarms).",
    )
    drift_p_threshold: float = Field(
        default=0.001,
        gt=0,
        lt=1,
        description="A test with a p-value below this reports drift (label-chi2).",
    )
    drift_min_mean_confidence: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="A window whose mean confidence is below this reports drift (confidence-drop).",
    )
    drift_detectors: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("label-chi2", "confidence-drop"),
        description="Detectors to run, in order, comma-separated (registered: label-chi2, "
        "confidence-drop); empty turns statistical detection off.",
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

    def thresholds(self) -> DetectorThresholds:
        return DetectorThresholds(
            p_value=self.drift_p_threshold, min_mean_confidence=self.drift_min_mean_confidence
        )
