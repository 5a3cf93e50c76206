"""Fixtures shared by every test tier.

Broker discovery for tests marked ``kafka`` (first that applies wins):

1. ``MESH_KAFKA_BOOTSTRAP_SERVERS``: an existing broker or cluster (CI service, a running
   ``adaptmesh-kafka``). It should allow 10 MB messages like the other two options.
2. A Docker engine that answers: testcontainers' ``KafkaContainer`` in KRaft mode.
3. Otherwise: ``EmbeddedKafka`` from the Maven Central jars, in a session temp dir.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from adaptmesh_embedded import EmbeddedKafka, ensure_kafka_jars

try:
    from testcontainers.community.kafka import KafkaContainer
except ImportError:  # testcontainers releases before the community namespace
    from testcontainers.kafka import KafkaContainer

KAFKA_BOOTSTRAP_ENV = "MESH_KAFKA_BOOTSTRAP_SERVERS"
# Same broker-wide limit as EmbeddedKafka, so a 5 MB test body behaves alike everywhere.
_MESSAGE_MAX_BYTES = 10 * 1024 * 1024
# Converted base models (GGUF -> safetensors) outlive the session: under the repo's .mesh/,
# which git ignores, so local reruns reuse them and a fresh CI clone converts each one once.
MODEL_CACHE_DIR = Path(__file__).resolve().parent.parent / ".mesh" / "test-model-cache"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that asks for a broker, so ``-m "not kafka"`` can never miss one."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


def _docker_engine_answers() -> bool:
    try:
        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        # No socket, no permission, a hung daemon: all mean "use the local jars instead".
        return False


def _kafka_container() -> Any:
    return (
        KafkaContainer()
        .with_kraft()
        .with_env("KAFKA_MESSAGE_MAX_BYTES", str(_MESSAGE_MAX_BYTES))
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    )


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``bootstrap_servers`` of a real Kafka broker shared by the whole session."""
    configured = os.environ.get(KAFKA_BOOTSTRAP_ENV)
    if configured:
        yield configured
        return

    if _docker_engine_answers():
        container = _kafka_container()
        with container as running:
            yield running.get_bootstrap_server()
        return

    if shutil.which("java") is None:
        # Fail, not skip: a green run that never touched a real broker would prove nothing.
        pytest.fail(f"no Kafka: {KAFKA_BOOTSTRAP_ENV} unset, no Docker engine, no java on PATH")

    with EmbeddedKafka(ensure_kafka_jars(), tmp_path_factory.mktemp("kafka")) as kafka:
        yield kafka.bootstrap_servers


@pytest.fixture
def unique_name() -> str:
    """A fresh suffix for topics, domains and groups, so no two tests ever share one."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def model_cache(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point `MESH_MODEL_CACHE` at the tests' shared cache of converted base models.

    Set per test, not for the session: services' settings reject `MESH_*` variables they do
    not know, so it must not leak into tests that build them.
    """
    MODEL_CACHE_DIR.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("MESH_MODEL_CACHE", str(MODEL_CACHE_DIR))
    return MODEL_CACHE_DIR
