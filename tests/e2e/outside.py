"""What an outside user of the mesh does, shared by the end-to-end tests: publish change events
with any Kafka client (CloudEvents binary mode, hand-written JSON, the domain as key) and wait
for serving to answer with a model. No project code: plain aiokafka and httpx."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer


def new_traceparent() -> tuple[str, str]:
    """A fresh W3C trace: (trace id, traceparent header)."""
    trace_id = os.urandom(16).hex()
    return trace_id, f"00-{trace_id}-{os.urandom(8).hex()}-01"


class OutsideUser:
    """CloudEvents binary mode, JSON bodies, the domain (or the fleet key) as key."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.prefix = prefix
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024
        )

    async def publish_change(
        self,
        event: str,
        body: dict[str, Any],
        traceparent: str | None = None,
        correlation: str | None = None,
    ) -> str:
        """Publish `body` as a `dev.adaptmesh.<event>` change; returns its ce_id."""
        event_id = str(uuid.uuid4())
        headers = {
            "ce_specversion": "1.0",
            "ce_id": event_id,
            "ce_source": "urn:example:e2e-user",
            "ce_type": f"dev.adaptmesh.{event}",
            "ce_time": datetime.now(UTC).isoformat(),
            "ce_subject": body["domain"],
            "ce_dataschema": f"urn:adaptmesh:schema:{event}:1.0",
            "ce_correlationid": correlation or event_id,
            "content-type": "application/json",
            "traceparent": traceparent or new_traceparent()[1],
        }
        await self.producer.send_and_wait(
            f"{self.prefix}mesh.changes.v1",
            json.dumps(body).encode(),
            key=body["domain"].encode(),
            headers=[(k, v.encode()) for k, v in headers.items()],
        )
        return event_id


async def served(
    http: httpx.AsyncClient, domain: str, model_version: str, timeout: float = 180
) -> None:
    """Wait until serving has loaded `model_version` (it swaps asynchronously)."""
    async with asyncio.timeout(timeout):
        while True:
            response = await http.get(f"/v1/domains/{domain}/model")
            if response.status_code == 200 and response.json()["model_version"] == model_version:
                return
            await asyncio.sleep(0.5)
