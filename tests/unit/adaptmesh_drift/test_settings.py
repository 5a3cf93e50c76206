"""`MESH_DRIFT_*` settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adaptmesh_drift.settings import DriftSettings


def test_defaults() -> None:
    settings = DriftSettings()
    assert settings.drift_settle_ms == 1500
    assert settings.drift_cooldown_seconds == 30
    assert settings.drift_window_size == 200
    assert settings.drift_test_every == 20
    assert settings.drift_p_threshold == 0.001
    assert settings.drift_min_mean_confidence == 0.5
    assert settings.drift_detectors == ("label-chi2", "confidence-drop")
    assert settings.timing().settle_seconds == 1.5
    assert settings.thresholds().p_value == 0.001


def test_detectors_are_a_comma_separated_list_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESH_DRIFT_DETECTORS", " confidence-drop , label-chi2 ")
    monkeypatch.setenv("MESH_DRIFT_SETTLE_MS", "250")
    settings = DriftSettings()
    assert settings.drift_detectors == ("confidence-drop", "label-chi2")
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
    assert len(drift_fields) == 7
    assert all(field.description for field in drift_fields.values())
