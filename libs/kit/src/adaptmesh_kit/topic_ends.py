"""Where a topic's log starts and ends right now, per partition.

A broadcast subscriber compares these with how far it has read to know it has caught up with
everything written so far (`MeshApp.caught_up`); the gate uses the ends for the same question.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition


async def log_bounds(bootstrap_servers: str, topic: str) -> dict[int, tuple[int, int]]:
    """Per partition of `topic`: (offset of its first record, offset its next record will get)."""
    # Naming the topic makes start() wait for its metadata (the partition list); no group is
    # joined and nothing is consumed.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: (starts[tp], ends[tp]) for tp in partitions}
    finally:
        await consumer.stop()


async def end_offsets(bootstrap_servers: str, topic: str) -> dict[int, int]:
    """The offset the next record of each partition of `topic` will get."""
    bounds = await log_bounds(bootstrap_servers, topic)
    return {partition: end for partition, (_, end) in bounds.items()}
