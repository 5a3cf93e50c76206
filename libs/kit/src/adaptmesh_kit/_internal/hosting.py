"""Hosting a service's own ASGI app (`MeshApp.run(http=...)`): the app's lifespan must run the
service, and a host that forgot to wire it fails at start-up rather than serving without Kafka.

Plain ASGI types, so the kit depends on no web framework; FastAPI and Starlette apps fit them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def requiring_lifespan(http: ASGIApp, is_running: Callable[[], bool], service: str) -> ASGIApp:
    """`http`, except that its start-up fails when its lifespan did not start the service.

    The check sits on the ASGI lifespan protocol: when the app reports
    `lifespan.startup.complete` while the service is not running, the server is told
    `lifespan.startup.failed` instead, with the reason (uvicorn then logs it and exits).
    """

    async def hosted(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await http(scope, receive, send)
            return

        async def checked(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete" and not is_running():
                message = {
                    "type": "lifespan.startup.failed",
                    "message": f"{service}: the HTTP app's lifespan did not start the service; "
                    "build it with lifespan=app.lifespan (or enter `app.lifespan()` in its own)",
                }
            await send(message)

        await http(scope, receive, checked)

    return hosted
