"""Commit-after-handle without a broker round trip per record.

A record's offset becomes committable only once its handler has returned, which means every
event it published has been acknowledged by the broker. Committing each record synchronously
would cost a round trip per record; instead handled offsets are collected and committed on a
short timer (like Kafka Streams' `commit.interval.ms`), on partition revocation and at shutdown.
A crash loses at most the uncommitted tail, which is redelivered and deduplicated by `ce_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)


class HandledOffsets:
    """Handled offsets waiting to be committed, per consumer: each group subscription of a
    service has its own consumer, and a consumer can commit only partitions assigned to it."""

    def __init__(self, interval_seconds: float) -> None:
        self._interval = interval_seconds
        self._pending: dict[AIOKafkaConsumer, dict[TopicPartition, int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def handled(self, consumer: AIOKafkaConsumer, topic: str, partition: int, offset: int) -> None:
        """Record that `offset` is done; the next commit moves the group past it."""
        self._pending.setdefault(consumer, {})[TopicPartition(topic, partition)] = offset + 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._commit_later())

    async def _commit_later(self) -> None:
        await asyncio.sleep(self._interval)
        await self.commit()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """No commit runs while inside (a transaction commits offsets itself meanwhile)."""
        async with self._lock:
            yield

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        async with self._lock:
            for consumer, pending in list(self._pending.items()):
                await self._commit(consumer, pending, only)
                if not pending:
                    del self._pending[consumer]

    @staticmethod
    async def _commit(
        consumer: AIOKafkaConsumer,
        pending: dict[TopicPartition, int],
        only: set[TopicPartition] | None,
    ) -> None:
        assigned = consumer.assignment()
        offsets = {
            tp: offset
            for tp, offset in pending.items()
            if tp in assigned and (only is None or tp in only)
        }
        for tp in offsets:
            del pending[tp]
        # Offsets for partitions no longer ours are dropped: the new owner re-reads them.
        for tp in [tp for tp in pending if tp not in assigned]:
            del pending[tp]
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as error:
            # Not fatal: the records are redelivered and deduplicated.
            log.warning("offset commit failed (%s); records will be redelivered", error)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.commit()


class CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits handled offsets of partitions before another consumer takes them over."""

    def __init__(self, offsets: HandledOffsets) -> None:
        self._offsets = offsets

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._offsets.commit(only=set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None
