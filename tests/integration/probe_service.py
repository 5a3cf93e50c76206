"""A service-shaped process built like the real ones: `python -m tests.integration.probe_service`.

Settings come from `MESH_*` and tracing from `OTEL_*` variables; it serves `/health` and stops
on SIGTERM. For every data batch it publishes a retrain request, as a consequence.
"""

from __future__ import annotations

from adaptmesh_kit import EventContext, MeshSettings, create_app
from adaptmesh_schemas import Stream
from adaptmesh_schemas.events import DataBatchSubmitted, RetrainReason, RetrainRequested
from adaptmesh_schemas.values import ArtifactRef

app = create_app(MeshSettings(), "probe-service")


@app.handles(Stream.CHANGES, DataBatchSubmitted)
async def on_batch(event: DataBatchSubmitted, context: EventContext) -> None:
    dataset = app.artifacts.put_bytes(event.model_dump_json().encode())
    await context.publish(
        RetrainRequested(
            domain=event.domain,
            reason=RetrainReason.DATA,
            detail=f"batch {event.batch_id}",
            dataset_version=f"ds-{dataset.sha256[:12]}",
            dataset=ArtifactRef(uri=dataset.uri, sha256=dataset.sha256),
        )
    )


if __name__ == "__main__":
    app.run()
