"""Turns a record nobody could take into a `DeadLetterRecorded` event."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from adaptmesh_kit.artifacts import ArtifactStore
from adaptmesh_schemas.events import DeadLetterRecorded, DeadLetterSource, RawHeader
from adaptmesh_schemas.values import ArtifactRef
from adaptmesh_schemas.versioning import DOMAIN_PATTERN

UNKNOWN_DOMAIN = "unknown"
_DOMAIN = re.compile(DOMAIN_PATTERN)
SMALL_HEADER_BYTES = 1024
"""When a record's headers are too large together to inline, those with values up to this size
are still listed inline, so that the dead letter stays readable without the artifact."""
MAX_REASON_CHARS = 4096
"""Reasons quote what is wrong, e.g. a header's value; a huge value is cut (its bytes are kept)."""
MAX_CAUSATION_CHARS = 256
"""A longer `ce_id` is not copied into the dead letter's `ce_causationid` header."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def domain_of(key: bytes | None) -> str:
    """The record's key when it is a valid domain: dead letters about garbage still need one."""
    if key is None:
        return UNKNOWN_DOMAIN
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return UNKNOWN_DOMAIN
    return text if _DOMAIN.match(text) else UNKNOWN_DOMAIN


def bounded(reason: str) -> str:
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return f"{reason[:MAX_REASON_CHARS]}... ({len(reason) - MAX_REASON_CHARS:,} more characters)"


def causation_of(ce_id: str | None) -> str | None:
    """The dead letter's cause: the record's `ce_id`, unless it is too long to be a header."""
    return ce_id if ce_id is not None and len(ce_id) <= MAX_CAUSATION_CHARS else None


def dead_letter_for(
    record: Any,
    *,
    service: str,
    consumer_group: str,
    reason_code: str,
    reason: str,
    artifacts: ArtifactStore,
    inline_limit: int,
) -> DeadLetterRecorded:
    """Everything about `record` (an aiokafka ConsumerRecord), keeping its bytes whole.

    A value or headers larger than `inline_limit` go to the artifact store, so that a dead
    letter always fits in a Kafka record whatever the broker let in (headers included).
    """
    value: bytes | None = record.value
    inline = value is None or len(value) <= inline_limit
    headers: list[tuple[str, bytes | None]] = list(record.headers)
    headers_inline = sum(len(key) + len(raw or b"") for key, raw in headers) <= inline_limit
    return DeadLetterRecorded(
        domain=domain_of(record.key),
        service=service,
        reason_code=reason_code,
        reason=bounded(reason),
        source=DeadLetterSource(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
            consumer_group=consumer_group,
        ),
        original_key_b64=None if record.key is None else _b64(record.key),
        original_headers=tuple(
            RawHeader(key=key, value_b64=_b64(raw or b""))
            for key, raw in headers
            if headers_inline or len(raw or b"") <= SMALL_HEADER_BYTES
        ),
        original_headers_artifact=None if headers_inline else _put_headers(artifacts, headers),
        original_value_b64=_b64(value) if value is not None and inline else None,
        original_value=None if inline or value is None else artifacts.put_bytes(value),
    )


def _put_headers(artifacts: ArtifactStore, headers: list[tuple[str, bytes | None]]) -> ArtifactRef:
    listed = [{"key": key, "value_b64": None if raw is None else _b64(raw)} for key, raw in headers]
    return artifacts.put_bytes(json.dumps(listed).encode())
