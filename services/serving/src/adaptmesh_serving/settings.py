"""Serving's settings: the shared `MESH_*` ones plus `MESH_SERVING_*`."""

from __future__ import annotations

import os
import socket
from typing import Self

from pydantic import Field, model_validator

from adaptmesh_kit import MeshSettings
from adaptmesh_schemas.events.inference import MAX_LOGGED_TEXT_CHARS


class ServingSettings(MeshSettings):
    """Where the HTTP API listens and how much it accepts and logs.

    The API, `/health` and `/ready` share one server on `serving_host:serving_port`; the kit's
    `health_host`/`health_port` are not used by this service.
    """

    serving_host: str = Field(default="127.0.0.1", description="HTTP API bind address.")
    serving_port: int = Field(
        default=8080, ge=0, le=65535, description="HTTP API port; 0 = any free."
    )
    serving_inference_sample_rate: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of predictions published as inference.logged for drift-sensing.",
    )
    serving_max_batch: int = Field(
        default=64, ge=1, le=4096, description="Most texts accepted in one predict request."
    )
    serving_max_text_chars: int = Field(
        default=20_000, ge=1, description="Longest text accepted, in characters."
    )
    serving_max_body_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        description="Largest predict request body accepted, in bytes (413 beyond).",
    )
    serving_max_batch_size: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Most texts in one model call: concurrent requests' texts are gathered "
        "into batches of up to this many.",
    )
    serving_max_wait_ms: float = Field(
        default=5.0,
        ge=0.0,
        le=10_000.0,
        description="How long the first text of a batch waits for more to join it before "
        "the model is called with what is there; 0 = never wait.",
    )
    serving_max_queue: int = Field(
        default=1024,
        ge=1,
        description="Most texts waiting for a model call, per model; a request that would "
        "go beyond is refused with 429 and Retry-After.",
    )
    serving_request_timeout_ms: float = Field(
        default=10_000.0,
        gt=0.0,
        description="Deadline of a prediction from the moment it is queued: past it the "
        "answer is 504 and its texts not yet started are dropped.",
    )
    serving_max_resident_models: int = Field(
        default=64,
        ge=1,
        description="Most domain models (a LoRA adapter and a head each) kept in memory at "
        "once, over all base models: past it the least recently used is unloaded, and loaded "
        "again from the artifact store (digests checked) when it is next asked for. Each base "
        "model is in memory once whatever the number of its domains.",
    )
    serving_calls_per_base: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Model calls that may run at once on one base model, each in its own "
        "thread with its share of the torch threads (MESH_SERVING_TORCH_THREADS divided "
        "among them): on CPU two calls of one thread each keep two cores busier than one "
        "call of two threads while the HTTP server shares the cores.",
    )
    serving_torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="Torch threads the model calls share (default: OMP_NUM_THREADS if set, "
        "else every core the process may run on).",
    )
    serving_replica_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        min_length=1,
        description="Names this replica in model.loaded, model.load_failed and "
        "serving.replica_status (default: host name and process id).",
    )
    serving_status_interval_seconds: float = Field(
        default=10.0,
        gt=0.0,
        description="How often the replica publishes serving.replica_status; a replica "
        "silent for three intervals is taken as gone by `adaptmesh watch rollout`.",
    )
    serving_log_texts: bool = Field(
        default=True,
        description="Whether inference.logged carries the input text (its first "
        f"{MAX_LOGGED_TEXT_CHARS:,} characters), which drift-sensing offers for labelling; "
        "false for domains whose inputs must not be copied into the inference topic.",
    )

    @model_validator(mode="after")
    def _a_request_fits_the_queue(self) -> Self:
        if self.serving_max_queue < self.serving_max_batch:
            raise ValueError(
                f"MESH_SERVING_MAX_QUEUE ({self.serving_max_queue}) must hold the largest "
                f"request, MESH_SERVING_MAX_BATCH ({self.serving_max_batch}) texts"
            )
        return self
