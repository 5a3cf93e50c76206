"""`adaptmesh-drift-sensing`: run the service (settings from `MESH_*`, tracing from `OTEL_*`)."""

from __future__ import annotations

from adaptmesh_drift.app import build_app
from adaptmesh_drift.settings import DriftSettings


def main() -> None:
    build_app(DriftSettings()).run()


if __name__ == "__main__":
    main()
