"""`mesh.deadletter.v1`: what no consumer could take, kept whole."""

from __future__ import annotations

from pydantic import Field

from adaptmesh_schemas.topics import Stream
from adaptmesh_schemas.values import ArtifactRef, Value
from adaptmesh_schemas.versioning import MeshEvent, event


class DeadLetterSource(Value):
    topic: str = Field(description="Topic the record was read from.")
    partition: int = Field(ge=0, description="Its partition.")
    offset: int = Field(ge=0, description="Its offset.")
    timestamp_ms: int | None = Field(default=None, description="Its Kafka timestamp.")
    consumer_group: str = Field(description="Group of the consumer that refused it.")


class RawHeader(Value):
    key: str = Field(description="Header name.")
    value_b64: str = Field(description="Header value, base64 (values may not be UTF-8).")


@event("deadletter.recorded", stream=Stream.DEADLETTER, version="1.2")
class DeadLetterRecorded(MeshEvent):
    """A record that could not be decoded, validated or handled.

    `domain` is the record's key when it was a valid domain, else `unknown`.

    1.2 (additive): headers too large together to inline are kept whole in the artifact store
    (`original_headers_artifact`); `original_headers` then lists only the small ones.
    """

    service: str = Field(description="Service that refused it.")
    reason_code: str = Field(
        description="Stable code: invalid-envelope, invalid-header, unknown-type, invalid-json, "
        "schema-violation, unsupported-version, too-large, wrong-topic, rejected (valid form, "
        "unacceptable content, e.g. an unknown label), handler-error, conflict (since 1.1: a "
        "ce_id the consumer group already handled, sent again with a different body; it was "
        "not handled again).",
    )
    reason: str = Field(description="What is wrong, for people.")
    source: DeadLetterSource = Field(description="Where it came from.")
    original_key_b64: str | None = Field(default=None, description="Record key, base64.")
    original_headers: tuple[RawHeader, ...] = Field(
        description="Every header, as received; when `original_headers_artifact` is set, only "
        "those with small values."
    )
    original_headers_artifact: ArtifactRef | None = Field(
        default=None,
        description="Every header, as received, when together too large to inline (1.2): a JSON "
        "list of {key, value_b64} (value_b64 null for a header without a value) in the "
        "artifact store.",
    )
    original_value_b64: str | None = Field(
        default=None, description="Record value, base64, when small enough to inline."
    )
    original_value: ArtifactRef | None = Field(
        default=None, description="Record value in the artifact store, when too large to inline."
    )
