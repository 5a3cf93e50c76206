"""Serving's settings: the shared `MESH_*` ones plus `MESH_SERVING_*`."""

from __future__ import annotations

from pydantic import Field

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
    serving_log_texts: bool = Field(
        default=True,
        description="Whether inference.logged carries the input text (its first "
        f"{MAX_LOGGED_TEXT_CHARS:,} characters), which drift-sensing offers for labelling; "
        "false for domains whose inputs must not be copied into the inference topic.",
    )
