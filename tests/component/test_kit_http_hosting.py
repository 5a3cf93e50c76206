"""A service hosting its own HTTP app through the kit: `lifespan` runs the app, `run(http=...)`
refuses an HTTP app whose lifespan does not, and `/health` can be routed to the kit's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from faststream.kafka import TestKafkaBroker

from adaptmesh_kit import MeshApp, MeshSettings, create_app
from adaptmesh_kit._internal.hosting import ASGIApp, requiring_lifespan


def settings(tmp_path: Path) -> MeshSettings:
    return MeshSettings(artifact_root=f"file://{tmp_path}/artifacts", provision_topics=False)


def running(app: MeshApp) -> bool:
    return app.running


async def test_a_fastapi_lifespan_runs_the_app_and_its_activities(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path), "hosting")
    happened: list[str] = []

    async def start() -> None:
        happened.append(f"start (running: {app.running})")

    async def stop() -> None:
        happened.append(f"stop (running: {app.running})")

    app.while_running(start, stop)
    http = FastAPI(lifespan=app.lifespan)
    async with TestKafkaBroker(app.broker):
        assert not running(app)
        async with http.router.lifespan_context(http):
            assert running(app)
            happened.append("serving")
        assert not running(app)
    assert happened == ["start (running: True)", "serving", "stop (running: True)"]


async def lifespan_messages(hosted: ASGIApp) -> list[dict[str, Any]]:
    """Drive the ASGI lifespan protocol through start-up and shutdown; what the app sent."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
        inbox.put_nowait(message)

    async def receive() -> Any:
        if sent and sent[-1]["type"] == "lifespan.startup.failed":
            await asyncio.sleep(3600)  # a server stops here after a failed start-up
        return await inbox.get()

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def serve() -> None:
        await hosted({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    task = asyncio.create_task(serve())
    async with asyncio.timeout(10):
        while not sent or sent[-1]["type"] not in (
            "lifespan.shutdown.complete",
            "lifespan.startup.failed",
        ):
            await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return sent


async def test_run_refuses_an_http_app_whose_lifespan_does_not_run_the_service(
    tmp_path: Path,
) -> None:
    app = create_app(settings(tmp_path), "hosting")
    async with TestKafkaBroker(app.broker):
        wired = requiring_lifespan(FastAPI(lifespan=app.lifespan), lambda: app.running, "hosting")
        assert [m["type"] for m in await lifespan_messages(wired)] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
        forgotten = requiring_lifespan(FastAPI(), lambda: app.running, "hosting")
        # (Cancelling the app afterwards, as a server exits, adds a shutdown message.)
        failed = (await lifespan_messages(forgotten))[0]
    assert failed["type"] == "lifespan.startup.failed"
    assert "lifespan=app.lifespan" in failed["message"]


async def test_the_kits_health_can_be_routed_to_from_a_hosted_app(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path), "hosting")
    http = FastAPI(lifespan=app.lifespan)
    http.add_route("/health", app.health_asgi())
    async with TestKafkaBroker(app.broker), http.router.lifespan_context(http):
        transport = httpx.ASGITransport(app=http)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            assert (await client.get("/health")).status_code == 204
