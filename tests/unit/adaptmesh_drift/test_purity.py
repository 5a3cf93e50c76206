"""The logic modules stay free of the broker (the service skeleton's rule)."""

from __future__ import annotations

import subprocess
import sys

PURE = (
    "calibration",
    "decisions",
    "detectors",
    "monitor",
    "outbox",
    "reference",
    "relay",
    "schedule",
    "state",
    "watch",
)


def test_the_logic_modules_load_without_kafka_or_faststream() -> None:
    imports = "; ".join(f"import adaptmesh_drift.{name}" for name in PURE)
    loaded = "sorted(m for m in ('faststream', 'aiokafka') if m in sys.modules)"
    check = f"{imports}; import sys; print({loaded})"
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
