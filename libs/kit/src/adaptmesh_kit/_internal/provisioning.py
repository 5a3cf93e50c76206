"""Creates the mesh's topics with the settings their contracts need (idempotent)."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from adaptmesh_kit.kafka_security import kafka_client_kwargs
from adaptmesh_kit.settings import MeshSettings
from adaptmesh_schemas.topics import TOPIC_SPECS, Stream, topic_name

log = logging.getLogger(__name__)

# Streams users write to directly: they get room for oversized records so that those reach a
# consumer and are dead-lettered with a reason, instead of failing at the broker.
USER_INPUT_STREAMS = frozenset({Stream.CHANGES, Stream.FEEDBACK})


def topic_configs(stream: Stream, settings: MeshSettings) -> dict[str, str]:
    configs: dict[str, str] = {}
    if TOPIC_SPECS[stream].compacted:
        configs["cleanup.policy"] = "compact"
    if TOPIC_SPECS[stream].kept_forever:
        configs["retention.ms"] = "-1"
    if stream in USER_INPUT_STREAMS:
        configs["max.message.bytes"] = str(settings.input_topic_max_bytes)
    return configs


async def provision_topics(settings: MeshSettings) -> list[str]:
    """Create every missing mesh topic; returns the names created now."""
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=topic_name(stream, settings.topic_prefix),
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication,
                topic_configs=topic_configs(stream, settings),
            )
            for stream in Stream
            if topic_name(stream, settings.topic_prefix) not in existing
        ]
        if not wanted:
            return []
        created: list[str] = []
        response = await admin.create_topics(wanted)
        for name, code, message in _topic_errors(response):
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:  # a concurrent starter won the race
                raise RuntimeError(f"could not create topic {name}: error {code} {message}")
        log.info("created topics: %s", ", ".join(created))
        return created
    finally:
        await admin.close()


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    rows = response.topic_errors  # type: ignore[attr-defined]
    return [(row[0], row[1], row[2] if len(row) > 2 else None) for row in rows]
