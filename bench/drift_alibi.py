"""Alibi Detect 0.13 `MMDDriftOnline` over the drift bench streams, in an environment of its own.

    uv run --no-project --python 3.11 --with 'alibi-detect[torch]==0.13.*' --with torch==2.15.0 \\
        python bench/drift_alibi.py .mesh/bench-drift/streams.json .mesh/bench-drift/alibi.json

Alibi Detect pins numpy < 2 and the project runs numpy 2, so this script runs in its own
environment and imports nothing of adaptmesh: it reads the streams file `bench/drift_streams.py`
writes (per data set the reference sketches — the model's 16-float embedding sketches of its
eval split — a scored pool and runs of pool indices) and writes its detections as JSON.

Per data set one detector is configured on the reference sketches with the same ERT and window
as the adaptmesh side and Alibi's defaults otherwise (Gaussian RBF kernel, bandwidth by the
median heuristic), except `n_bootstraps`: Alibi's default is 1,000 and its docs ask for "at
least an order of magnitude larger than the ERT", so it is `--n-bootstraps` (default 20 x ERT).
Every run starts from `reset_state()` and is fed record by record; after each detection the
detector is `reset_state()` again and goes on, so every detection index of a run is recorded.
The torch seed is fixed, so the bootstrap and the reference split are the same on every run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Not installed in the project's environment (its numpy is 2.x): mypy sees Any there.
from alibi_detect.cd import MMDDriftOnline  # type: ignore[import-not-found,unused-ignore]

BOOTSTRAPS_PER_ERT = 20
SEED = 0


def run_dataset(data: dict[str, Any], ert: int, window: int, n_bootstraps: int) -> dict[str, Any]:
    """Configure one detector on the data set's reference sketches and run every stream."""
    torch.manual_seed(SEED)
    x_ref = np.asarray(data["reference_sketches"], dtype=np.float32)
    pool = np.asarray([row["sketch"] for row in data["pool"]], dtype=np.float32)
    started = time.perf_counter()
    detector = MMDDriftOnline(
        x_ref,
        ert=ert,
        window_size=window,
        backend="pytorch",
        n_bootstraps=n_bootstraps,
        device="cpu",
        verbose=False,
    )
    configured = time.perf_counter() - started
    thresholds = [float(t) for t in detector._detector.thresholds]
    runs: dict[str, Any] = {}
    steps = 0
    started = time.perf_counter()
    for run in data["runs"]:
        detector.reset_state()
        detections = []
        for index, record in enumerate(run["records"]):
            verdict = detector.predict(pool[record["pool_index"]], return_test_stat=False)
            if verdict["data"]["is_drift"]:
                detections.append(index)
                detector.reset_state()
        steps += len(run["records"])
        runs[run["run_id"]] = {"detections": detections, "steps": len(run["records"])}
    seconds = time.perf_counter() - started
    print(
        f"  {data['name']}: configured in {configured:.1f}s ({n_bootstraps} bootstraps, "
        f"{len(x_ref)} reference sketches); {steps:,} steps in {seconds:.1f}s "
        f"({seconds / max(steps, 1) * 1e3:.2f} ms a step)",
        flush=True,
    )
    return {
        "configure_seconds": configured,
        "run_seconds": seconds,
        "steps": steps,
        "reference_size": len(x_ref),
        "thresholds": thresholds,
        "runs": runs,
    }


def main(streams: Path, out: Path, n_bootstraps: int | None, threads: int) -> None:
    torch.set_num_threads(threads)
    content = json.loads(streams.read_text())
    ert, window = int(content["ert"]), int(content["window"])
    bootstraps = n_bootstraps or BOOTSTRAPS_PER_ERT * ert
    print(
        f"alibi-detect {version('alibi-detect')}, torch {torch.__version__}, numpy "
        f"{np.__version__}, python {platform.python_version()}; MMDDriftOnline ert {ert}, "
        f"window {window}, n_bootstraps {bootstraps}, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    result = {
        "detector": "alibi_detect.cd.MMDDriftOnline (backend pytorch)",
        "versions": {
            "alibi-detect": version("alibi-detect"),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "ert": ert,
        "window": window,
        "n_bootstraps": bootstraps,
        "datasets": {
            data["name"]: run_dataset(data, ert, window, bootstraps) for data in content["datasets"]
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result))
    print(f"  detections written to {out}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("streams", type=Path, help="the streams file (bench/drift_streams.py)")
    parser.add_argument("out", type=Path, help="where to write the detections (JSON)")
    parser.add_argument(
        "--n-bootstraps",
        type=int,
        default=None,
        help=f"bootstrap samples for the thresholds (default {BOOTSTRAPS_PER_ERT} x ERT)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    arguments = parser.parse_args()
    main(arguments.streams, arguments.out, arguments.n_bootstraps, arguments.threads)
    sys.exit(0)
