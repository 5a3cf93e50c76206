"""Settings every service shares; each service subclasses `MeshSettings` for its own.

Read from the environment with the `MESH_` prefix (pydantic-settings). Unknown keys are errors,
not silently ignored: a mistyped `MESH_KAFKA_BOOTSTRAP_SERVER` would otherwise send a service to
the default broker. Service-specific variables are named `MESH_<SERVICE>_...`; a service does not
reject another service's variables, so one environment file can configure the whole mesh.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from adaptmesh_schemas.values import RESIDENCY_PATTERN

ENV_PREFIX = "MESH_"


class MeshSettings(BaseSettings):
    """Shared settings: Kafka, topics, delivery, state and artifacts."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # Prefixes owned by other services (and by tools that share the environment).
    other_owners: ClassVar[tuple[str, ...]] = (
        "INGESTION_",
        "DRIFT_",
        "TRAINING_",
        "GATE_",
        "SERVING_",
        "CLI_",
        "DEMO_",
        "BENCH_",
        "EMBEDDED_",
    )
    # Read by libraries rather than by a service: the embedded broker's jars, where
    # adaptmesh_ml keeps base models converted once (e.g. GGUF to safetensors), and the
    # directories it may load local base models from (read where a base model is checked or
    # loaded: ingestion, training and its Ray workers, the gate, serving), and where tests arm
    # fault points (adaptmesh_kit.faults, read where a point is reached).
    outside_variables: ClassVar[frozenset[str]] = frozenset(
        {"MESH_KAFKA_JARS_DIR", "MESH_MODEL_CACHE", "MESH_BASE_MODEL_ROOTS", "MESH_FAULT_DIR"}
    )

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated Kafka bootstrap servers."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How every Kafka client of the process connects (see kafka_security.py).",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism of the SASL_* protocols."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="PEM CA bundle the broker's certificate must chain to (SSL, SASL_SSL); "
        "the system's trust store if unset.",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate, for brokers that require one."
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="PEM key of the client certificate, if not in its file."
    )
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Prefix for every topic name (private topic sets for tests or tenants).",
    )
    topic_partitions: int = Field(default=3, ge=1, description="Partitions for provisioned topics.")
    topic_replication: int = Field(
        default=1, ge=1, description="Replication for provisioned topics."
    )
    provision_topics: bool = Field(default=True, description="Create missing topics at start-up.")
    consumer_group: str | None = Field(
        default=None, description="Consumer group; defaults to `adaptmesh.<service>`."
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="Where a new consumer group starts: earliest, so nothing sent before a "
        "service first started is missed.",
    )
    max_event_bytes: int = Field(
        default=1_048_576, ge=1024, description="Larger records are dead-lettered, not parsed."
    )
    input_topic_max_bytes: int = Field(
        default=8_388_608,
        ge=1024,
        description="max.message.bytes of user-facing input topics, so oversized events reach "
        "a consumer and get a clear dead-letter reason instead of bouncing at the broker.",
    )
    deadletter_inline_bytes: int = Field(
        default=262_144,
        ge=0,
        description="Dead letters inline original values up to this size; larger ones are "
        "written to the artifact store and referenced by URI and digest.",
    )
    commit_interval_ms: int = Field(
        default=200, ge=1, description="How often offsets of handled records are committed."
    )
    max_poll_interval_ms: int = Field(
        default=1_800_000,
        ge=1000,
        description="Longest a handler may hold a record before the consumer group deems the "
        "instance dead and gives its partitions away (the gate evaluates models in its "
        "handler; training records its runs and returns at once).",
    )
    handler_attempts: int = Field(
        default=3,
        ge=1,
        description="Tries of a failing handler before its record is dead-lettered.",
    )
    freeze_startup_heap: bool = Field(
        default=True,
        description="Once the first app of the process has started, move every object alive "
        "then into a generation the cyclic garbage collector no longer scans (gc.freeze): "
        "full collections get far cheaper; cycles among those objects that die later are "
        "never collected.",
    )
    state_dir: Path | None = Field(
        default=None,
        description="Where a service keeps its own state (dedupe log); memory if unset.",
    )
    artifact_root: str = Field(
        default="file://.mesh/artifacts",
        description="fsspec URI of the artifact store root (of domains without a residency).",
    )
    # NoDecode: written `eu=file:///data/eu,us=file:///data/us`, not as JSON.
    artifact_roots: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Artifact roots per residency, `eu=file:///data/eu,us=file:///data/us`: "
        "every artifact of a domain whose recipe declares a residency lands under that "
        "residency's root; a residency missing here is refused, never written to the default.",
    )
    health_host: str = Field(default="127.0.0.1", description="Health endpoint bind address.")
    health_port: int = Field(
        default=0, ge=0, le=65535, description="Health endpoint port; 0 = any free."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )

    @field_validator("artifact_roots", mode="before")
    @classmethod
    def _parse_artifact_roots(cls, value: Any) -> Any:
        return parse_artifact_roots(value) if isinstance(value, str) else value

    @field_validator("artifact_roots")
    @classmethod
    def _check_residency_tags(cls, roots: dict[str, str]) -> dict[str, str]:
        for residency, uri in roots.items():
            if not re.fullmatch(RESIDENCY_PATTERN, residency):
                raise ValueError(f"{residency!r} is not a residency tag (e.g. eu, us-east)")
            if not uri:
                raise ValueError(f"residency {residency!r} has an empty artifact root")
        return roots

    @model_validator(mode="after")
    def _check_kafka_security(self) -> MeshSettings:
        # A half-configured client would only fail at its first connection, with an error
        # that does not name the setting; say at start which variable is wrong.
        problems = kafka_security_problems(self)
        if problems:
            raise ValueError("Kafka security settings: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _reject_unknown_environment(self) -> MeshSettings:
        known = {ENV_PREFIX + name.upper() for name in type(self).model_fields}
        unknown = sorted(
            key
            for key in os.environ
            if key.startswith(ENV_PREFIX)
            and key not in known
            and key not in self.outside_variables
            and not self._owned_elsewhere(key[len(ENV_PREFIX) :])
        )
        if unknown:
            raise ValueError(
                f"unknown setting(s) in the environment: {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return self

    def _owned_elsewhere(self, name: str) -> bool:
        own = {field.upper() for field in type(self).model_fields}
        return any(
            name.startswith(prefix) and not any(f.startswith(prefix) for f in own)
            for prefix in self.other_owners
        )


def parse_artifact_roots(text: str) -> dict[str, str]:
    """`eu=file:///data/eu,us=file:///data/us` -> {"eu": ..., "us": ...}. URIs may contain `=`
    (query strings) but not `,`."""
    roots: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        residency, equals, uri = item.partition("=")
        if not equals:
            raise ValueError(f"{item!r} is not `residency=root-uri`")
        residency = residency.strip()
        if residency in roots:
            raise ValueError(f"residency {residency!r} is given two artifact roots")
        roots[residency] = uri.strip()
    return roots


def kafka_security_problems(settings: MeshSettings) -> list[str]:
    """What is inconsistent in `settings`' Kafka security, one sentence per problem."""
    protocol = settings.kafka_security_protocol
    sasl = protocol.startswith("SASL_")
    tls = protocol.endswith("SSL")
    problems: list[str] = []
    if sasl and not (settings.kafka_sasl_username and settings.kafka_sasl_password):
        problems.append(
            f"MESH_KAFKA_SECURITY_PROTOCOL={protocol} needs MESH_KAFKA_SASL_USERNAME and "
            "MESH_KAFKA_SASL_PASSWORD"
        )
    if not sasl and (settings.kafka_sasl_username or settings.kafka_sasl_password):
        problems.append(
            f"MESH_KAFKA_SASL_USERNAME/PASSWORD are set but MESH_KAFKA_SECURITY_PROTOCOL="
            f"{protocol} sends no credentials (use SASL_SSL)"
        )
    files = {
        "MESH_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "MESH_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "MESH_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    for name, path in files.items():
        if path is None:
            continue
        if not tls:
            problems.append(f"{name} is set but MESH_KAFKA_SECURITY_PROTOCOL={protocol} is not TLS")
        elif not path.is_file():
            problems.append(f"{name}={path} is not a file")
    if settings.kafka_ssl_keyfile is not None and settings.kafka_ssl_certfile is None:
        problems.append("MESH_KAFKA_SSL_KEYFILE needs MESH_KAFKA_SSL_CERTFILE")
    return problems
