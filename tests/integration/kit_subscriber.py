"""A subscriber in its own process: `python -m tests.integration.kit_subscriber ...`.

Receives data batches through `create_app` and writes one JSON line per event it handled:
the event, its envelope and the trace id of the span it was handled in.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from opentelemetry import trace

from adaptmesh_kit import EventContext, create_app
from adaptmesh_schemas import Stream
from adaptmesh_schemas.events import DataBatchSubmitted
from tests.meshtest import mesh_settings


async def main(bootstrap: str, name: str, work_dir: Path, out: Path) -> None:
    app = create_app(mesh_settings(bootstrap, name, work_dir), "probe-subscriber")

    @app.handles(Stream.CHANGES, DataBatchSubmitted)
    async def on_batch(event: DataBatchSubmitted, context: EventContext) -> None:
        span = trace.get_current_span().get_span_context()
        line = {
            "event": event.model_dump(mode="json"),
            "envelope": context.envelope.model_dump(mode="json"),
            "trace_id": f"{span.trace_id:032x}",
        }
        with out.open("a") as handle:
            handle.write(json.dumps(line) + "\n")

    async with app:
        (work_dir / "ready").touch()
        while True:
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])))
