from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import Field, ValidationError

from adaptmesh_kit import MeshSettings


def test_settings_read_the_mesh_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_KAFKA_BOOTSTRAP_SERVERS", "10.0.0.1:9092")
    monkeypatch.setenv("MESH_TOPIC_PARTITIONS", "6")
    settings = MeshSettings()
    assert settings.kafka_bootstrap_servers == "10.0.0.1:9092"
    assert settings.topic_partitions == 6


def test_unknown_keyword_is_rejected() -> None:
    with pytest.raises(ValidationError, match="kafka_bootstrap_server"):
        MeshSettings(kafka_bootstrap_server="typo:9092")  # type: ignore[call-arg]


def test_unknown_environment_variable_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_KAFKA_BOOTSTRAP_SERVER", "typo:9092")
    with pytest.raises(ValidationError, match="MESH_KAFKA_BOOTSTRAP_SERVER"):
        MeshSettings()


class TrainingLikeSettings(MeshSettings):
    other_owners: ClassVar[tuple[str, ...]] = MeshSettings.other_owners
    training_workers: int = Field(default=1, description="Workers.")


def test_another_services_variables_are_left_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_TRAINING_WORKERS", "2")
    assert MeshSettings().topic_partitions == 3
    assert TrainingLikeSettings().training_workers == 2


def test_a_typo_in_a_services_own_variables_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_TRAINING_WORKRS", "2")
    with pytest.raises(ValidationError, match="MESH_TRAINING_WORKRS"):
        TrainingLikeSettings()


def test_settings_are_validated() -> None:
    with pytest.raises(ValidationError):
        MeshSettings(topic_partitions=0)
    with pytest.raises(ValidationError):
        MeshSettings(topic_prefix="has spaces/")


def test_artifact_roots_per_residency_are_read_from_one_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESH_ARTIFACT_ROOTS", "eu=file:///data/eu, us-east=s3://bucket/us?x=1")
    assert MeshSettings().artifact_roots == {
        "eu": "file:///data/eu",
        "us-east": "s3://bucket/us?x=1",
    }
    monkeypatch.delenv("MESH_ARTIFACT_ROOTS")
    assert MeshSettings().artifact_roots == {}


@pytest.mark.parametrize(
    ("roots", "fragment"),
    [
        ("file:///data/eu", "residency=root-uri"),
        ("EU=file:///data/eu", "not a residency tag"),
        ("eu=", "empty artifact root"),
        ("eu=file:///a,eu=file:///b", "two artifact roots"),
    ],
)
def test_malformed_artifact_roots_are_refused(
    monkeypatch: pytest.MonkeyPatch, roots: str, fragment: str
) -> None:
    monkeypatch.setenv("MESH_ARTIFACT_ROOTS", roots)
    with pytest.raises(ValidationError, match=fragment):
        MeshSettings()
