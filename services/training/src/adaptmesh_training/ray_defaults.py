"""Environment defaults for Ray, kept apart from `ray_cluster` so they apply before Ray's import.

An operator's own value always wins (`os.environ.setdefault`).
"""

from __future__ import annotations

RAY_ENVIRONMENT_DEFAULTS: dict[str, str] = {
    # No usage reports leave the machine.
    "RAY_USAGE_STATS_ENABLED": "0",
    # Started under `uv run`, Ray would otherwise launch every worker through `uv run` with the
    # current directory shipped as working_dir: slower, and able to re-sync the environment
    # under a running service. A local Ray's workers already share the driver's interpreter.
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    # Ray's C++ crash handler also catches SIGTERM and kills the process on the spot, before the
    # service can drain its consumer and stop Ray (whose agents would then outlive it).
    "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1",
}
