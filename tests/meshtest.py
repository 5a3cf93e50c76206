"""Helpers shared by the tests (not fixtures: those live in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from adaptmesh_kit import MeshSettings
from adaptmesh_schemas import Envelope, MeshEvent, encode_event


def mesh_settings(bootstrap: str, name: str, tmp_path: Path, **overrides: Any) -> MeshSettings:
    """Settings on a private topic set (`t-<name>.mesh.*`), so tests never share topics."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "topic_prefix": f"t-{name}.",
        "topic_partitions": 1,
        "artifact_root": f"file://{tmp_path}/artifacts",
        "commit_interval_ms": 50,
        **overrides,
    }
    return MeshSettings(**values)


def record_of(
    event: MeshEvent, **envelope_updates: Any
) -> tuple[list[tuple[str, bytes]], bytes, Envelope]:
    """Headers and body of `event` as an outside producer would write them."""
    envelope = Envelope.for_event(event, source="urn:test:producer")
    if envelope_updates:
        envelope = envelope.model_copy(update=envelope_updates)
    return envelope.to_headers(), encode_event(event), envelope


async def read_records(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    timeout: float = 30.0,
    where: Callable[[ConsumerRecord[bytes, bytes]], bool] = lambda _r: True,
) -> list[ConsumerRecord[bytes, bytes]]:
    """The first `count` committed records of `topic` that match, read from the beginning."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        # What every consumer of the mesh sees: records of aborted transactions never count.
        isolation_level="read_committed",
    )
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    found.extend(r for r in records if where(r))
    except TimeoutError:
        raise AssertionError(f"only {len(found)} of {count} records arrived on {topic}") from None
    finally:
        await consumer.stop()
    return found[:count]


def body_json(record: ConsumerRecord[bytes, bytes]) -> Any:
    return json.loads(record.value)


async def eventually(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)
    assert predicate(), what


async def stop_with_sigterm(process: subprocess.Popen[bytes], within: float = 30.0) -> None:
    """SIGTERM a service process and check it drained and exited promptly.

    uvicorn drains, then re-raises the signal so a supervisor sees why it stopped: exit code 0
    or -SIGTERM both mean an orderly stop; what the drain did, each test checks itself.
    """
    stopping = time.monotonic()
    process.send_signal(signal.SIGTERM)
    exit_code = await asyncio.to_thread(process.wait, 60)
    assert exit_code in (0, -signal.SIGTERM), f"exit code {exit_code}"
    assert time.monotonic() - stopping < within, "shutdown did not drain promptly"
