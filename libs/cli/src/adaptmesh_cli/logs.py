"""Reading a mesh topic as it is now, the way the CLI's commands need it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from adaptmesh_kit import MeshSettings, kafka_client_kwargs
from adaptmesh_kit.topic_ends import log_bounds
from adaptmesh_schemas import (
    DecodeError,
    Envelope,
    MeshEvent,
    Stream,
    decode_event,
    read_envelope,
    topic_name,
)

log = logging.getLogger(__name__)

POLL_MS = 500
READ_TIMEOUT_SECONDS = 120.0


def history_reader(settings: MeshSettings, *topics: str) -> AIOKafkaConsumer:
    """A consumer (not started) of what the mesh's transactions committed, from the beginning,
    without a consumer group: the CLI reads history and never takes a share of a service's
    partitions or commits an offset."""
    return AIOKafkaConsumer(
        *topics,
        **kafka_client_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )


async def read_topic(settings: MeshSettings, stream: Stream) -> list[tuple[Envelope, MeshEvent]]:
    """Every decodable event of `stream`'s topic, from its beginning to where it ends now.

    Read as `read_committed` (records of aborted transactions are never seen) without a
    consumer group; in log order within each partition (a domain's events share one). Records
    that do not decode were dead-lettered by their consumers and are left out.
    """
    topic = topic_name(stream, settings.topic_prefix)
    bounds = await log_bounds(settings, topic)
    ends = {TopicPartition(topic, p): end for p, (first, end) in bounds.items() if end > first}
    if not ends:
        return []
    consumer = history_reader(settings)
    await consumer.start()
    events: list[tuple[Envelope, MeshEvent]] = []
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        remaining = dict(ends)
        async with asyncio.timeout(READ_TIMEOUT_SECONDS):
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=POLL_MS)
                for tp, records in batch.items():
                    for record in records:
                        if record.offset < ends[tp]:
                            _decode_into(events, record.headers, record.value, topic)
                for tp in list(remaining):
                    if await consumer.position(tp) >= remaining[tp]:
                        del remaining[tp]
    except TimeoutError:
        raise RuntimeError(
            f"could not read {topic} to its end within {READ_TIMEOUT_SECONDS:g} s "
            f"(still waiting on partitions {sorted(tp.partition for tp in remaining)})"
        ) from None
    finally:
        await consumer.stop()
    return events


def _decode_into(
    events: list[tuple[Envelope, MeshEvent]],
    headers: Sequence[tuple[str, bytes]],
    value: bytes | None,
    topic: str,
) -> None:
    try:
        envelope = read_envelope(headers)
        events.append((envelope, decode_event(envelope, value)))
    except DecodeError as error:
        log.info("skipping an undecodable record of %s: %s", topic, error)
