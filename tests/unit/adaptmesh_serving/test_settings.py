"""Serving's own settings come from `MESH_SERVING_*`; typos there are errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adaptmesh_serving.settings import ServingSettings


def test_defaults() -> None:
    settings = ServingSettings()
    assert (settings.serving_host, settings.serving_port) == ("127.0.0.1", 8080)
    assert settings.serving_inference_sample_rate == 1.0
    assert settings.serving_max_batch == 64
    assert settings.serving_max_text_chars == 20_000
    assert settings.serving_log_texts is True
    assert settings.serving_max_body_bytes == 2 * 1024 * 1024
    assert settings.serving_max_batch_size == 64
    assert settings.serving_max_wait_ms == 5.0
    assert settings.serving_max_queue == 1024
    assert settings.serving_request_timeout_ms == 10_000.0


def test_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_SERVING_PORT", "9000")
    monkeypatch.setenv("MESH_SERVING_INFERENCE_SAMPLE_RATE", "0.1")
    monkeypatch.setenv("MESH_SERVING_LOG_TEXTS", "false")
    monkeypatch.setenv("MESH_SERVING_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("MESH_SERVING_MAX_WAIT_MS", "2.5")
    monkeypatch.setenv("MESH_SERVING_MAX_QUEUE", "256")
    monkeypatch.setenv("MESH_SERVING_REQUEST_TIMEOUT_MS", "1500")
    monkeypatch.setenv("MESH_SERVING_MAX_BODY_BYTES", "65536")
    settings = ServingSettings()
    assert settings.serving_max_batch_size == 16
    assert settings.serving_max_wait_ms == 2.5
    assert settings.serving_max_queue == 256
    assert settings.serving_request_timeout_ms == 1500
    assert settings.serving_max_body_bytes == 65536
    assert settings.serving_port == 9000
    assert settings.serving_inference_sample_rate == 0.1
    assert settings.serving_log_texts is False


def test_a_typo_in_a_serving_variable_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_SERVING_PROT", "9000")
    with pytest.raises(ValidationError, match="MESH_SERVING_PROT"):
        ServingSettings()


@pytest.mark.parametrize(
    "field",
    [
        {"serving_inference_sample_rate": 1.5},
        {"serving_max_batch": 0},
        {"serving_max_batch_size": 0},
        {"serving_max_wait_ms": -1},
        {"serving_request_timeout_ms": 0},
        {"serving_max_body_bytes": 10},
        # A queue that cannot hold the largest request would refuse it for ever.
        {"serving_max_queue": 32, "serving_max_batch": 64},
    ],
)
def test_out_of_range_values_are_rejected(field: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        ServingSettings(**field)  # type: ignore[arg-type]
