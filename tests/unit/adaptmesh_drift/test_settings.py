"""`MESH_DRIFT_*` settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adaptmesh_drift.settings import DriftSettings


def test_defaults() -> None:
    settings = DriftSettings()
    assert settings.drift_settle_ms == 1500
    assert settings.drift_cooldown_seconds == 30
    assert settings.drift_detectors == (
        "embedding-mmd",
        "prediction-shift",
        "estimated-accuracy",
        "feedback-accuracy",
    )
    assert settings.drift_alert_cooldown_seconds == 300
    assert settings.timing().settle_seconds == 1.5


def test_detectors_are_a_comma_separated_list_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESH_DRIFT_DETECTORS", " prediction-shift , embedding-mmd ")
    monkeypatch.setenv("MESH_DRIFT_SETTLE_MS", "250")
    settings = DriftSettings()
    assert settings.drift_detectors == ("prediction-shift", "embedding-mmd")
    assert settings.drift_settle_ms == 250
    monkeypatch.setenv("MESH_DRIFT_DETECTORS", "")
    assert DriftSettings().drift_detectors == ()


def test_an_unregistered_detector_or_a_mistyped_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValidationError, match="label-ks"):
        DriftSettings(drift_detectors=("label-ks",))
    monkeypatch.setenv("MESH_DRIFT_SETTLE_SECONDS", "2")
    with pytest.raises(ValidationError, match="MESH_DRIFT_SETTLE_SECONDS"):
        DriftSettings()


def test_every_drift_setting_is_documented() -> None:
    drift_fields = {k: v for k, v in DriftSettings.model_fields.items() if k.startswith("drift_")}
    assert len(drift_fields) == 8
    assert all(field.description for field in drift_fields.values())
