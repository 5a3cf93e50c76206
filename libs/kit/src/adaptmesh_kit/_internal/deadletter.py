"""Turns a record nobody could take into a `DeadLetterRecorded` event."""

from __future__ import annotations

import base64
import re
from typing import Any

from adaptmesh_kit.artifacts import ArtifactStore
from adaptmesh_schemas.events import DeadLetterRecorded, DeadLetterSource, RawHeader
from adaptmesh_schemas.versioning import DOMAIN_PATTERN

UNKNOWN_DOMAIN = "unknown"
_DOMAIN = re.compile(DOMAIN_PATTERN)


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
    """Everything about `record` (an aiokafka ConsumerRecord), keeping its bytes whole."""
    value: bytes | None = record.value
    inline = value is None or len(value) <= inline_limit
    return DeadLetterRecorded(
        domain=domain_of(record.key),
        service=service,
        reason_code=reason_code,
        reason=reason,
        source=DeadLetterSource(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
            consumer_group=consumer_group,
        ),
        original_key_b64=None if record.key is None else _b64(record.key),
        original_headers=tuple(
            RawHeader(key=key, value_b64=_b64(raw or b"")) for key, raw in record.headers
        ),
        original_value_b64=_b64(value) if value is not None and inline else None,
        original_value=None if inline or value is None else artifacts.put_bytes(value),
    )
