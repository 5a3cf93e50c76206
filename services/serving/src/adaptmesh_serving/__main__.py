"""`adaptmesh-serving`: the serving process."""

from __future__ import annotations

from adaptmesh_serving.app import build_app
from adaptmesh_serving.settings import ServingSettings


def main() -> None:
    """Serve predictions on `MESH_SERVING_HOST:MESH_SERVING_PORT` until SIGTERM."""
    build_app(ServingSettings()).run()


if __name__ == "__main__":
    main()
