"""adaptmesh contracts: the only definitions of events, envelopes, versions and topic names.

Importing this package registers every event type (see `versioning.EVENT_TYPES`).
"""

from adaptmesh_schemas import events
from adaptmesh_schemas.envelope import (
    CONTENT_TYPE,
    DecodeError,
    Envelope,
    KafkaHeaders,
    decode_event,
    encode_event,
    read_envelope,
)
from adaptmesh_schemas.topics import TOPIC_SPECS, Stream, TopicSpec, all_topic_names, topic_name
from adaptmesh_schemas.versioning import (
    EVENT_TYPES,
    FLEET_DOMAIN,
    Domain,
    MeshEvent,
    SchemaVersionError,
    event,
    events_on,
    parse_dataschema,
)

__all__ = [
    "CONTENT_TYPE",
    "EVENT_TYPES",
    "FLEET_DOMAIN",
    "TOPIC_SPECS",
    "DecodeError",
    "Domain",
    "Envelope",
    "KafkaHeaders",
    "MeshEvent",
    "SchemaVersionError",
    "Stream",
    "TopicSpec",
    "all_topic_names",
    "decode_event",
    "encode_event",
    "event",
    "events",
    "events_on",
    "parse_dataschema",
    "read_envelope",
    "topic_name",
]
