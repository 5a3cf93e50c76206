"""The one owner of this process's connection to Ray: `ray.init` once, `ray.shutdown` at stop.

Local by default (a Ray runtime started by the service and stopped with it, every listening
socket of it on 127.0.0.1); with `RAY_ADDRESS` set, the service joins that cluster instead and
leaves it running when it stops.

Data residency: a node offers a residency as the custom resource `residency:<tag>` (the local
Ray offers `MESH_TRAINING_RESIDENCIES`; a cluster's nodes are started with `ray start
--resources='{"residency:eu": 1}'`). A run of a domain with a residency asks for that resource,
and fails at once when no node of the cluster offers it rather than waiting for one forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import Future

import ray
from ray._private import ray_constants

log = logging.getLogger(__name__)

RAY_ADDRESS_ENV = "RAY_ADDRESS"
SHUTDOWN_TIMEOUT_SECONDS = 60.0
LOOPBACK = "127.0.0.1"
RESIDENCY_RESOURCE_PREFIX = "residency:"
RESIDENCY_SHARE = 0.01
"""What one worker asks of its node's residency resource: the resource is a label, so a node
offering 1 (as `ray start --resources` would) hosts up to 100 workers of that residency."""


class ResidencyUnavailableError(RuntimeError):
    """No node of the Ray cluster offers the residency a run must be trained in."""


def residency_resource(residency: str) -> str:
    """The Ray custom resource a node carries when it may train a residency's domains."""
    return RESIDENCY_RESOURCE_PREFIX + residency


def require_residency(residency: str) -> None:
    """Raise `ResidencyUnavailableError` unless some node of the (started) cluster offers
    `residency`. Asked before a run is scheduled: an actor asking for a resource no node has
    would wait for such a node forever."""
    resource = residency_resource(residency)
    offered: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    if offered.get(resource, 0) > 0:
        return
    residencies = sorted(
        name.removeprefix(RESIDENCY_RESOURCE_PREFIX)
        for name in offered
        if name.startswith(RESIDENCY_RESOURCE_PREFIX)
    )
    raise ResidencyUnavailableError(
        f"no Ray node offers residency {residency!r} (custom resource {resource!r}; the "
        f"cluster's nodes offer residencies: {', '.join(residencies) or 'none'}); the run "
        f"was not scheduled. Start a node with it (local Ray: MESH_TRAINING_RESIDENCIES="
        f"{residency}; a cluster node: ray start --resources='{{\"{resource}\": 1}}') and "
        "send the request again"
    )


class RayCluster:
    """Starts Ray once, ahead of need (`warm_up`) or on it (`ensure_started`, `ready`).

    `ray.init` runs on a thread of its own that lives until `shutdown`: a local Ray's GCS and
    raylet are bound to the *thread* that started them (Linux parent-death signal), so starting
    them from a short-lived thread would have them killed the moment that thread ended. Being
    off the main thread also leaves SIGTERM to the service (Ray would install its own handler),
    and being off the event loop keeps the seconds `ray.init` costs from stalling Kafka.
    """

    def __init__(self, num_cpus: int | None = None, residencies: tuple[str, ...] = ()) -> None:
        """`residencies`: what a local Ray offers (ignored when joining a cluster)."""
        self._num_cpus = num_cpus
        self._residencies = residencies
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready: Future[bool] = Future()
        self._stop = threading.Event()
        self.init_seconds: float | None = None

    @property
    def residencies(self) -> tuple[str, ...]:
        """What a local Ray started by this object offers."""
        return self._residencies

    @property
    def requested(self) -> bool:
        """Whether anyone has asked for Ray yet (`warm_up`, `ensure_started`, `ready`)."""
        return self._thread is not None

    @property
    def address(self) -> str | None:
        """The cluster to join, or None for a local Ray."""
        return os.environ.get(RAY_ADDRESS_ENV) or None

    def warm_up(self) -> Future[bool]:
        """Start Ray in the background unless it is started or starting (a failed start is
        tried again). The future says whether this object started it."""
        with self._lock:
            failed = self._ready.done() and self._ready.exception() is not None
            if self._thread is None or failed:
                self._ready = Future()
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._own, args=(self._ready, self._stop), name="ray-owner", daemon=True
                )
                self._thread.start()
            return self._ready

    def ensure_started(self) -> None:
        """Block until Ray is up; raises what `ray.init` raised."""
        self.warm_up().result()

    async def ready(self) -> None:
        """`ensure_started` for async code."""
        await asyncio.wrap_future(self.warm_up())

    def shutdown(self) -> None:
        """Stop the local Ray (or leave the cluster) if this object started it."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None:
            thread.join(SHUTDOWN_TIMEOUT_SECONDS)

    def _own(self, ready: Future[bool], stop: threading.Event) -> None:
        if ray.is_initialized():  # another owner in this process (tests share one Ray)
            ready.set_result(False)
            return
        try:
            self._init()
        except Exception as error:  # noqa: BLE001  (handed to whoever waits for Ray)
            ready.set_exception(error)
            return
        ready.set_result(True)
        stop.wait()
        ray.shutdown()
        log.info("Ray stopped")

    def _init(self) -> None:
        started = time.perf_counter()
        if self.address is None:
            start_local_ray(self._num_cpus, self._residencies)
        else:
            # A cluster's resources and dashboard are its operator's business.
            ray.init(address=self.address, log_to_driver=False, ignore_reinit_error=True)
        self.init_seconds = time.perf_counter() - started
        log.info(
            "Ray ready in %.1f s (%s): %s",
            self.init_seconds,
            self.address or "local",
            ray.cluster_resources(),  # type: ignore[no-untyped-call]
        )


def start_local_ray(num_cpus: int | None, residencies: tuple[str, ...] = ()) -> None:
    """`ray.init` a single-node Ray whose every listening socket is on 127.0.0.1.

    Ray's servers (GCS, raylet, object manager, core workers, runtime-env agent) bind 127.0.0.1
    only when the node's IP *is* 127.0.0.1, and otherwise 0.0.0.0 / the node's IP. `ray.init`
    turns `_node_ip_address="127.0.0.1"` into the host's routable IP on Linux unless Ray's
    "clusters enabled" switch is off (as it is on macOS and Windows), so that switch is turned
    off for the duration of the start: the node then is 127.0.0.1, and every process Ray starts
    is handed that address on its command line. No other node can join such a Ray, which is the
    point. The dashboard (an HTTP server that nothing here uses) is not started at all.
    The node carries one `residency:<tag>` resource per residency it offers.
    """
    clusters_enabled = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            num_cpus=num_cpus,
            resources={residency_resource(residency): 1.0 for residency in residencies},
            include_dashboard=False,
            dashboard_host=LOOPBACK,
            _node_ip_address=LOOPBACK,
            log_to_driver=False,
            ignore_reinit_error=True,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = clusters_enabled
