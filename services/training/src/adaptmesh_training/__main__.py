"""`adaptmesh-training`: the training service process."""

from __future__ import annotations

import signal
from types import FrameType

from adaptmesh_training.app import build_app, ray_cluster_for
from adaptmesh_training.settings import TrainingSettings


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    """Serve until SIGTERM or SIGINT; Ray starts alongside Kafka and stops with the service."""
    settings = TrainingSettings()
    # Held here as well as by the app: Ray stops after the app's last step (`finally`).
    cluster = ray_cluster_for(settings)
    app = build_app(settings, cluster=cluster)
    # uvicorn drains on SIGTERM and then raises it again for the handler that was in place
    # before it; by default that ends the process on the spot, leaving Ray's agents behind.
    # This handler makes it an exit that passes through `finally`.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    cluster.warm_up()
    try:
        app.run()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
