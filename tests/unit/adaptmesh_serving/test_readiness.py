"""Readiness waits for the kit's `caught_up` in the background and keeps asking."""

from __future__ import annotations

import asyncio

import pytest

from adaptmesh_serving.readiness import StartupRead


def is_ready(read: StartupRead) -> bool:
    return read.ready


async def test_ready_once_caught_up_after_a_timeout_and_an_unreachable_broker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[float] = []

    async def caught_up(within_seconds: float) -> None:
        attempts.append(within_seconds)
        if len(attempts) == 1:
            raise TimeoutError("mesh.models.ready.v1 not read to its end within 7s")
        if len(attempts) == 2:
            raise ConnectionError("no broker")

    read = StartupRead(caught_up, "mesh.models.ready.v1", attempt_seconds=7, retry_pause_seconds=0)
    assert not is_ready(read)
    await read.start()
    async with asyncio.timeout(5):
        while not is_ready(read):
            await asyncio.sleep(0.01)
    await read.stop()
    assert attempts == [7, 7, 7]
    assert "not read to its end within 7s" in caplog.text
    assert "ConnectionError: no broker" in caplog.text


async def test_stopping_before_it_caught_up_leaves_it_unready() -> None:
    async def never(within_seconds: float) -> None:
        await asyncio.sleep(3600)

    read = StartupRead(never, "mesh.models.ready.v1")
    await read.start()
    await asyncio.sleep(0.01)
    await read.stop()
    assert not read.ready
