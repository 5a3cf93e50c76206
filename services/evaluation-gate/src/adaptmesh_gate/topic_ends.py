"""Where a topic's log ends right now, per partition."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition


async def end_offsets(bootstrap_servers: str, topic: str) -> dict[int, int]:
    """The offset the next record of each partition of `topic` will get."""
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
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()
