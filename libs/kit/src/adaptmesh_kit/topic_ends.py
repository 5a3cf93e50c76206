"""Where a topic's readable log starts and ends right now, per partition.

A broadcast subscriber compares these with how far it has read to know it has caught up with
everything written so far (`MeshApp.caught_up`).

Read as a `read_committed` consumer reads: the end is just past the partition's last record of
a committed transaction (or of no transaction at all). The log's own end is not the target:
every transaction ends with a commit marker, an offset no consumer ever receives, and an
aborted transaction leaves records nobody reads; a reader that counts the records it handled
would wait for those offsets for ever.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from adaptmesh_kit.kafka_security import kafka_client_kwargs
from adaptmesh_kit.settings import MeshSettings

# How far back from the stable end to look for the last readable record at first: a marker
# follows every transaction, so the last record is usually one or two offsets back.
_TAIL = 16
_FETCH_TIMEOUT_MS = 1000
_MAX_FETCHES = 30


async def log_bounds(kafka: MeshSettings | str, topic: str) -> dict[int, tuple[int, int]]:
    """Per partition of `topic`: (offset of its first record, one past its last readable one).

    A partition with nothing readable has both equal to its first offset. `kafka` is the
    settings to connect with (their TLS and SASL included) or a PLAINTEXT bootstrap address.
    """
    connection = (
        {"bootstrap_servers": kafka} if isinstance(kafka, str) else kafka_client_kwargs(kafka)
    )
    # Naming the topic makes start() wait for its metadata (the partition list) and, without a
    # group, assigns every partition (so the tail can be read by seeking); nothing is committed.
    # (Re-assigning an unsubscribed consumer instead made its stop() take a minute.)
    consumer = AIOKafkaConsumer(
        topic,
        **connection,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        starts = await consumer.beginning_offsets(partitions)
        # read_committed: the last stable offset, before any transaction still open.
        stable_ends = await consumer.end_offsets(partitions)
        bounds: dict[int, tuple[int, int]] = {}
        for tp in partitions:
            first, stable_end = starts[tp], stable_ends[tp]
            bounds[tp.partition] = (first, await _readable_end(consumer, tp, first, stable_end))
        return bounds
    finally:
        await consumer.stop()


async def _readable_end(
    consumer: AIOKafkaConsumer, tp: TopicPartition, first: int, stable_end: int
) -> int:
    """One past the last record a read_committed consumer receives below `stable_end`."""
    tail = _TAIL
    while stable_end > first:
        start = max(first, stable_end - tail)
        consumer.seek(tp, start)
        last: int | None = None
        for _ in range(_MAX_FETCHES):
            if await consumer.position(tp) >= stable_end:
                break
            fetched = await consumer.getmany(tp, timeout_ms=_FETCH_TIMEOUT_MS)
            for record in fetched.get(tp, ()):
                if record.offset < stable_end:
                    last = record.offset
        else:
            raise TimeoutError(f"could not read {tp.topic}[{tp.partition}] up to {stable_end}")
        if last is not None:
            return last + 1
        if start == first:
            break
        tail *= 4
    return first


async def end_offsets(kafka: MeshSettings | str, topic: str) -> dict[int, int]:
    """One past the last readable record of each partition of `topic` (see `log_bounds`)."""
    bounds = await log_bounds(kafka, topic)
    return {partition: end for partition, (_, end) in bounds.items()}
