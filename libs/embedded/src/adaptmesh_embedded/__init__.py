"""Runs the embedded mesh on one machine: a real Apache Kafka KRaft broker from local jars."""

from adaptmesh_embedded.kafka import (
    JARS_DIR_ENV,
    EmbeddedKafka,
    EmbeddedKafkaError,
    ensure_kafka_jars,
    find_repo_root,
)

__all__ = [
    "JARS_DIR_ENV",
    "EmbeddedKafka",
    "EmbeddedKafkaError",
    "ensure_kafka_jars",
    "find_repo_root",
]
