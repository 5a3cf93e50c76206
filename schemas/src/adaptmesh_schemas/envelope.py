"""CloudEvents 1.0 over Kafka, binary content mode.

The body is the event's JSON; the context attributes are `ce_*` headers, plus `content-type`.
Two extensions make the causal chain readable from the log alone: `correlationid` (the user's
change event that started the chain) and `causationid` (the event that directly caused this one).
W3C `traceparent`/`tracestate` headers are added by the telemetry middleware, not here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adaptmesh_schemas.versioning import (
    EVENT_TYPES,
    MeshEvent,
    SchemaVersionError,
    parse_dataschema,
)

CONTENT_TYPE = "application/json"
SPEC_VERSION = "1.0"
KafkaHeaders = Sequence[tuple[str, bytes | None]]


class Envelope(BaseModel):
    """The CloudEvents context of one record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, description="Unique per event; consumers dedupe on it.")
    source: str = Field(min_length=1, description="URI-reference of the producing service.")
    type: str = Field(min_length=1, description="`dev.adaptmesh.<event>`.")
    specversion: str = Field(default=SPEC_VERSION, description="Always 1.0.")
    time: datetime = Field(description="When the event happened (RFC 3339).")
    subject: str | None = Field(default=None, description="The domain.")
    dataschema: str = Field(description="`urn:adaptmesh:schema:<event>:<major>.<minor>`.")
    correlationid: str = Field(description="ce_id of the change event that started the chain.")
    causationid: str | None = Field(default=None, description="ce_id of the direct cause.")

    @classmethod
    def for_event(
        cls,
        event: MeshEvent,
        *,
        source: str,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        event_id: str | None = None,
    ) -> Envelope:
        """A fresh envelope; an event without a cause starts its own correlation chain."""
        new_id = event_id or str(uuid.uuid4())
        return cls(
            id=new_id,
            source=source,
            type=event.ce_type(),
            time=datetime.now(UTC),
            subject=event.domain,
            dataschema=event.dataschema(),
            correlationid=correlation_id or new_id,
            causationid=causation_id,
        )

    def to_headers(self) -> list[tuple[str, bytes]]:
        """Kafka record headers (binary content mode)."""
        return [(key, value.encode()) for key, value in self.header_texts().items()]

    def header_texts(self) -> dict[str, str]:
        """The same headers as text, for clients that encode them themselves."""
        headers = [
            ("ce_specversion", self.specversion),
            ("ce_id", self.id),
            ("ce_source", self.source),
            ("ce_type", self.type),
            ("ce_time", self.time.isoformat().replace("+00:00", "Z")),
            ("ce_dataschema", self.dataschema),
            ("ce_correlationid", self.correlationid),
            ("content-type", CONTENT_TYPE),
        ]
        if self.subject is not None:
            headers.append(("ce_subject", self.subject))
        if self.causationid is not None:
            headers.append(("ce_causationid", self.causationid))
        return dict(headers)


class DecodeError(ValueError):
    """A record that cannot become an event. `code` is stable; the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _header_text(headers: KafkaHeaders) -> dict[str, str]:
    texts: dict[str, str] = {}
    for key, raw in headers:
        if not (key.startswith("ce_") or key == "content-type"):
            continue
        if raw is None:  # Kafka allows a header without a value
            raise DecodeError("invalid-header", f"header {key!r} has no value")
        try:
            texts[key] = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DecodeError(
                "invalid-header", f"header {key!r} is not valid UTF-8 ({error.reason})"
            ) from None
    return texts


def read_envelope(headers: KafkaHeaders) -> Envelope:
    """The CloudEvents context from Kafka headers, or a DecodeError saying what is wrong."""
    texts = _header_text(headers)
    missing = [
        name
        for name in ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_dataschema")
        if not texts.get(name)
    ]
    if missing:
        raise DecodeError(
            "invalid-envelope", f"missing CloudEvents header(s): {', '.join(missing)}"
        )
    if texts["ce_specversion"] != SPEC_VERSION:
        raise DecodeError(
            "invalid-envelope", f"ce_specversion {texts['ce_specversion']!r} is not {SPEC_VERSION}"
        )
    content_type = texts.get("content-type", CONTENT_TYPE).split(";")[0].strip()
    if content_type != CONTENT_TYPE:
        raise DecodeError(
            "invalid-envelope", f"content-type {content_type!r} is not {CONTENT_TYPE}"
        )
    try:
        return Envelope(
            id=texts["ce_id"],
            source=texts["ce_source"],
            type=texts["ce_type"],
            specversion=texts["ce_specversion"],
            time=texts["ce_time"],  # type: ignore[arg-type]  # pydantic parses RFC 3339
            subject=texts.get("ce_subject"),
            dataschema=texts["ce_dataschema"],
            correlationid=texts.get("ce_correlationid") or texts["ce_id"],
            causationid=texts.get("ce_causationid"),
        )
    except ValidationError as error:
        raise DecodeError("invalid-envelope", _first_errors(error)) from None


def decode_event(envelope: Envelope, body: bytes | None) -> MeshEvent:
    """Body bytes to the current model of `envelope.type`, upcasting older majors."""
    event_class = EVENT_TYPES.get(envelope.type)
    if event_class is None:
        raise DecodeError("unknown-type", f"unknown ce_type {envelope.type!r}")
    try:
        name, major, _minor = parse_dataschema(envelope.dataschema)
    except SchemaVersionError as error:
        raise DecodeError("invalid-envelope", str(error)) from None
    if name != event_class.event_name:
        raise DecodeError(
            "invalid-envelope",
            f"ce_dataschema names {name!r} but ce_type is {envelope.type!r}",
        )
    if not body:
        raise DecodeError("invalid-json", "the record has no body")
    try:
        data: Any = json.loads(body)
    except UnicodeDecodeError:
        raise DecodeError("invalid-json", "the body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise DecodeError("invalid-json", f"the body is not JSON: {error}") from None
    except RecursionError:
        # The parser recurses per level; a body nested thousands deep exhausts the stack.
        raise DecodeError("invalid-json", "the body is nested too deeply to parse") from None
    if not isinstance(data, dict):
        raise DecodeError(
            "schema-violation", f"the body is a JSON {type(data).__name__}, not an object"
        )
    try:
        data = event_class.upcast(data, from_major=major)
    except SchemaVersionError as error:
        raise DecodeError("unsupported-version", str(error)) from None
    try:
        event = event_class.model_validate(data)
    except ValidationError as error:
        raise DecodeError(
            "schema-violation", f"{event_class.event_name}: {_first_errors(error)}"
        ) from None
    if envelope.subject is not None and envelope.subject != event.domain:
        raise DecodeError(
            "schema-violation",
            f"ce_subject {envelope.subject!r} differs from the body's domain {event.domain!r}",
        )
    return event


def encode_event(event: MeshEvent) -> bytes:
    return event.model_dump_json(exclude_none=False).encode()


def _first_errors(error: ValidationError, limit: int = 5) -> str:
    parts = [
        f"{'.'.join(str(p) for p in item['loc']) or '<root>'}: {item['msg']}"
        for item in error.errors(include_url=False)[:limit]
    ]
    more = error.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
