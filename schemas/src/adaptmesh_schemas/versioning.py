"""Event base class, schema versions and upcasting (the eventsourcing model).

Each event type has a `major.minor` schema version. Additive changes bump the minor: old
consumers read new records (unknown fields are ignored) and new consumers read old ones (new
fields have defaults). A breaking change bumps the major and adds a classmethod
`upcast_v<N>_v<N+1>(data) -> data` on the model; records written with an older major — still in
the log, or kept forever on a compacted topic — are upgraded on read by chaining those methods.
A record from a *newer* major than the consumer knows is refused (to the dead-letter topic),
because guessing at a breaking change is how data gets corrupted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from adaptmesh_schemas.topics import Stream

CE_TYPE_PREFIX = "dev.adaptmesh."
DATASCHEMA_PREFIX = "urn:adaptmesh:schema:"
_DATASCHEMA = re.compile(
    r"^urn:adaptmesh:schema:(?P<name>[a-z0-9_.-]+):(?P<major>\d+)\.(?P<minor>\d+)$"
)

DOMAIN_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
Domain = Annotated[str, StringConstraints(pattern=DOMAIN_PATTERN)]

FLEET_DOMAIN = "mesh.fleet"
"""The reserved `domain` of events about every domain at once (e.g. a base-model release).

Every event needs a domain: it is the Kafka key and the CloudEvents subject. A fleet-wide event
uses this key, so all of them share one partition and stay ordered among themselves; it matches
`DOMAIN_PATTERN`, and no real domain may take it (ingestion refuses a change for it)."""


class SchemaVersionError(ValueError):
    """A `ce_dataschema` that is malformed, or names a version this consumer cannot read."""


class MeshEvent(BaseModel):
    """Base of every event body. The envelope (id, time, trace, causality) travels in headers."""

    # Events are facts: frozen. Consumers ignore unknown fields so that a producer can add
    # fields (a minor bump) without breaking anyone; user-facing config forbids them instead.
    model_config = ConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=False)

    event_name: ClassVar[str]
    stream: ClassVar[Stream]
    major: ClassVar[int]
    minor: ClassVar[int]

    domain: Domain = Field(
        description="The customization target this event is about; also the Kafka key and "
        "the CloudEvents subject, so one domain's events stay ordered in one partition.",
    )

    @classmethod
    def ce_type(cls) -> str:
        """The CloudEvents `type`, stable across schema versions."""
        return CE_TYPE_PREFIX + cls.event_name

    @classmethod
    def dataschema(cls) -> str:
        """The CloudEvents `dataschema`: names the body's schema and its version."""
        return f"{DATASCHEMA_PREFIX}{cls.event_name}:{cls.major}.{cls.minor}"

    @classmethod
    def schema_version(cls) -> str:
        return f"{cls.major}.{cls.minor}"

    @classmethod
    def upcast(cls, data: dict[str, Any], from_major: int) -> dict[str, Any]:
        """Upgrade a raw body written with `from_major` to this class's major."""
        if from_major > cls.major:
            raise SchemaVersionError(
                f"{cls.event_name} v{from_major} is newer than v{cls.major}, the newest this "
                "consumer knows; upgrade the consumer",
            )
        for step in range(from_major, cls.major):
            upcaster: Callable[[dict[str, Any]], dict[str, Any]] | None = getattr(
                cls, f"upcast_v{step}_v{step + 1}", None
            )
            if upcaster is None:
                raise SchemaVersionError(f"{cls.event_name} has no upcaster from v{step}")
            data = upcaster(data)
        return data


EVENT_TYPES: dict[str, type[MeshEvent]] = {}
"""Every registered event class by CloudEvents type."""

E = TypeVar("E", bound=type[MeshEvent])


def event(name: str, *, stream: Stream, version: str) -> Callable[[E], E]:
    """Register an event class under `dev.adaptmesh.<name>` with its stream and version.

    Registration (instead of an if/elif table) lets a decoder find the class for any `ce_type`
    and lets the generators list every event without a second list to keep in step.
    """
    major_text, minor_text = version.split(".")

    def register(cls: E) -> E:
        cls.event_name = name
        cls.stream = stream
        cls.major = int(major_text)
        cls.minor = int(minor_text)
        ce_type = cls.ce_type()
        if ce_type in EVENT_TYPES and EVENT_TYPES[ce_type] is not cls:
            raise ValueError(f"event type {ce_type} registered twice")
        EVENT_TYPES[ce_type] = cls
        return cls

    return register


def parse_dataschema(dataschema: str) -> tuple[str, int, int]:
    """Split `urn:adaptmesh:schema:<name>:<major>.<minor>` into its parts."""
    match = _DATASCHEMA.match(dataschema)
    if match is None:
        raise SchemaVersionError(
            f"ce_dataschema {dataschema!r} is not of the form "
            f"'{DATASCHEMA_PREFIX}<event>:<major>.<minor>'",
        )
    return match["name"], int(match["major"]), int(match["minor"])


def events_on(stream: Stream) -> list[type[MeshEvent]]:
    """The event classes carried by `stream`, in registration order."""
    return [cls for cls in EVENT_TYPES.values() if cls.stream is stream]
