"""The embedded Jaeger's pure parts: its configuration, where the binary is found, what a
machine without Go is told, and reading services out of a trace. The running Jaeger is proved
by tests/e2e/test_traces_in_jaeger.py."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from adaptmesh_embedded.jaeger import (
    CACHE_DIR_ENV,
    JAEGER_BINARY_ENV,
    JAEGER_VERSION,
    GoMissingError,
    JaegerError,
    JaegerPorts,
    cached_binary,
    ensure_jaeger_binary,
    jaeger_config,
    services_in_trace,
)

PORTS = JaegerPorts(ui=20001, query_grpc=20002, otlp_grpc=20003, otlp_http=20004)


def endpoints(node: object) -> list[str]:
    """Every `endpoint` value anywhere in the configuration."""
    if isinstance(node, dict):
        found = [str(node["endpoint"])] if "endpoint" in node else []
        return found + [e for value in node.values() for e in endpoints(value)]
    if isinstance(node, list):
        return [e for value in node for e in endpoints(value)]
    return []


def test_every_listener_is_on_loopback_at_the_chosen_ports() -> None:
    config = jaeger_config(PORTS)
    assert sorted(endpoints(config)) == [f"127.0.0.1:{port}" for port in range(20001, 20005)]
    query = config["extensions"]["jaeger_query"]  # type: ignore[index]
    assert query["http"]["endpoint"] == "127.0.0.1:20001"
    receivers = config["receivers"]["otlp"]["protocols"]  # type: ignore[index]
    assert receivers["http"]["endpoint"] == "127.0.0.1:20004"
    # Nothing else listens on a fixed port (internal metrics would take 8888), and Jaeger does
    # not trace itself to 127.0.0.1:4317.
    assert config["service"]["telemetry"]["metrics"] == {"level": "none"}  # type: ignore[index]
    assert query["enable_tracing"] is False
    assert "ui" not in query  # no assets given: Jaeger's placeholder page
    json.dumps(config)  # the config file is JSON, which Jaeger reads as YAML


def test_the_ui_is_served_from_the_given_assets(tmp_path: Path) -> None:
    query = jaeger_config(PORTS, tmp_path)["extensions"]["jaeger_query"]  # type: ignore[index]
    assert query["ui"] == {"assets_path": str(tmp_path)}


def test_the_binary_is_cached_per_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(JAEGER_BINARY_ENV, raising=False)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    assert cached_binary() == tmp_path / f"jaeger-{JAEGER_VERSION}" / "jaeger"


def test_without_go_the_error_says_how_to_get_traces_another_way(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(JAEGER_BINARY_ENV, raising=False)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(GoMissingError) as raised:
        ensure_jaeger_binary()
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in str(raised.value)
    assert "docker compose up jaeger" in str(raised.value)


def test_a_given_binary_is_used_as_it_is_and_must_be_executable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    binary = tmp_path / "my-jaeger"
    binary.write_text("#!/bin/sh\n")
    monkeypatch.setenv(JAEGER_BINARY_ENV, str(binary))
    with pytest.raises(JaegerError, match="not an executable"):
        ensure_jaeger_binary()
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    assert ensure_jaeger_binary() == binary


def test_services_are_read_from_the_spans_processes() -> None:
    trace: dict[str, object] = {
        "data": [
            {
                "traceID": "ab",
                "spans": [{"processID": "p1"}, {"processID": "p2"}, {"processID": "p1"}],
                "processes": {
                    "p1": {"serviceName": "ingestion"},
                    "p2": {"serviceName": "serving"},
                    "p3": {"serviceName": "not-in-any-span"},
                },
            }
        ]
    }
    assert services_in_trace(trace) == {"ingestion", "serving"}
    assert services_in_trace({"data": []}) == set()
