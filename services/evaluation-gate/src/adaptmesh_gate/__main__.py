"""`adaptmesh-evaluation-gate`: run the gate until SIGTERM."""

from __future__ import annotations

from adaptmesh_gate.app import build_app
from adaptmesh_gate.settings import GateSettings


def main() -> None:
    build_app(GateSettings()).run()


if __name__ == "__main__":
    main()
