"""docker-compose.yml cannot be run here (no Docker engine); check what can be checked."""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from adaptmesh_kit import MeshSettings

REPO = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return document


def console_scripts() -> dict[str, str]:
    """Service distribution name -> import package, from services/*/pyproject.toml."""
    scripts = {}
    for pyproject in REPO.glob("services/*/pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        for name, target in project["scripts"].items():
            scripts[name] = target.split(".")[0]
    return scripts


def settings_class(package: str) -> type[MeshSettings]:
    module = importlib.import_module(f"{package}.settings")
    found = [
        value
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, MeshSettings) and value is not MeshSettings
    ]
    assert len(found) == 1, f"{package}.settings should define one MeshSettings subclass"
    return found[0]


def test_compose_has_the_mesh_and_its_infrastructure() -> None:
    services = compose()["services"]
    assert {
        "kafka",
        "jaeger",
        "ray-head",
        "ingestion",
        "drift-sensing",
        "training",
        "evaluation-gate",
        "serving",
    } <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")


def test_every_built_service_exists_has_a_health_check_and_waits_for_kafka() -> None:
    scripts = console_scripts()
    for name, service in compose()["services"].items():
        build = service.get("build")
        if build is None:
            continue
        assert (REPO / build["context"] / build["dockerfile"]).is_file(), name
        assert build["args"]["SERVICE"] in scripts, f"{name}: no such console script"
        assert "healthcheck" in service, name
        if "command" not in service:  # a mesh service, not the Ray head built from its image
            assert service["depends_on"]["kafka"]["condition"] == "service_healthy", name
        assert "container_name" not in service, f"{name} could not be scaled with --scale"


def test_service_environment_only_names_settings_that_exist() -> None:
    scripts = console_scripts()
    for name, service in compose()["services"].items():
        if "build" not in service or service.get("command"):
            continue
        fields = settings_class(scripts[service["build"]["args"]["SERVICE"]]).model_fields
        for variable in service.get("environment", {}):
            if variable.startswith("MESH_"):
                assert variable.removeprefix("MESH_").lower() in fields, f"{name}: {variable}"
            else:
                assert re.match(r"^(OTEL|RAY)_[A-Z_]+$", variable), f"{name}: {variable}"
