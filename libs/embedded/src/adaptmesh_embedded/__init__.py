"""Runs the embedded mesh on one machine: a real Apache Kafka KRaft broker from local jars."""

from adaptmesh_embedded.kafka import (
    JARS_DIR_ENV,
    EmbeddedKafka,
    EmbeddedKafkaError,
    ensure_kafka_jars,
    find_repo_root,
)
from adaptmesh_embedded.mesh import SERVICES, EmbeddedMesh, MeshStartError, RunningService
from adaptmesh_embedded.processes import ManagedProcess

__all__ = [
    "JARS_DIR_ENV",
    "SERVICES",
    "EmbeddedKafka",
    "EmbeddedKafkaError",
    "EmbeddedMesh",
    "ManagedProcess",
    "MeshStartError",
    "RunningService",
    "ensure_kafka_jars",
    "find_repo_root",
]
