"""`adaptmesh-ingestion`: run the ingestion service until SIGTERM."""

from __future__ import annotations

from adaptmesh_ingestion.app import build_app
from adaptmesh_ingestion.settings import IngestionSettings


def main() -> None:
    build_app(IngestionSettings()).run()


if __name__ == "__main__":
    main()
