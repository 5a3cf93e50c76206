"""Writes the JSON Schema of every event and the AsyncAPI 3 document into `schemas/`.

    uv run python -m adaptmesh_schemas.generate          # rewrite the committed files
    uv run python -m adaptmesh_schemas.generate --check  # exit 1 if they are stale

The files are generated from the models (never edited by hand) and committed, so that people
and other languages can read the contracts without running Python; a test keeps them fresh.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

import adaptmesh_schemas.events  # noqa: F401  (registers every event)
from adaptmesh_schemas.documents import (
    DatasetSnapshot,
    GateReport,
    LabelingSample,
    ModelManifest,
    ReferenceProfile,
)
from adaptmesh_schemas.topics import TOPIC_SPECS, Stream, topic_name
from adaptmesh_schemas.versioning import EVENT_TYPES, MeshEvent, events_on

SCHEMAS_DIR = Path(__file__).resolve().parents[2]
# Artifact documents referenced by events (claim checks) are contracts too.
DOCUMENTS: tuple[type[BaseModel], ...] = (
    DatasetSnapshot,
    ModelManifest,
    GateReport,
    ReferenceProfile,
    LabelingSample,
)
JSONSCHEMA_DIR = "jsonschema"
ASYNCAPI_FILE = "asyncapi.json"

CLOUDEVENTS_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0 Kafka binary-mode context; W3C trace context rides along.",
    "required": [
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_dataschema",
        "content-type",
    ],
    "properties": {
        "ce_specversion": {"const": "1.0"},
        "ce_id": {"type": "string", "description": "Unique per event; consumers dedupe on it."},
        "ce_source": {"type": "string", "description": "URI-reference of the producer."},
        "ce_type": {"type": "string", "description": "dev.adaptmesh.<event>"},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_subject": {"type": "string", "description": "The domain (also the Kafka key)."},
        "ce_dataschema": {
            "type": "string",
            "description": "urn:adaptmesh:schema:<event>:<major>.<minor>",
        },
        "ce_correlationid": {"type": "string", "description": "ce_id of the originating change."},
        "ce_causationid": {"type": "string", "description": "ce_id of the direct cause."},
        "content-type": {"const": "application/json"},
        "traceparent": {"type": "string", "description": "W3C trace context."},
        "tracestate": {"type": "string"},
    },
}


class ContractJsonSchema(GenerateJsonSchema):
    """pydantic's JSON Schema, minus the OpenAPI-only `discriminator` object.

    pydantic writes `discriminator: {propertyName, mapping}` next to the `oneOf` of a tagged
    union. That object is OpenAPI's: in an AsyncAPI 3 Schema Object `discriminator` must be a
    string naming a property of that very schema (the official parser refuses the document), and
    JSON Schema has no such keyword. The `oneOf` says everything without it, because each branch
    requires its own `const` tag (`op` of a taxonomy operation), so exactly one branch can match.
    Only the generated documents change; pydantic still validates the union by its tag.
    """

    def tagged_union_schema(self, schema: core_schema.TaggedUnionSchema) -> JsonSchemaValue:
        generated = super().tagged_union_schema(schema)
        generated.pop("discriminator", None)
        return generated


def _file_name(cls: type[MeshEvent]) -> str:
    return f"{JSONSCHEMA_DIR}/{cls.event_name}.v{cls.major}.json"


def event_json_schema(cls: type[MeshEvent]) -> dict[str, Any]:
    schema = cls.model_json_schema(mode="validation", schema_generator=ContractJsonSchema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": cls.dataschema(),
        "x-ce-type": cls.ce_type(),
        "x-schema-version": cls.schema_version(),
        "x-topic": topic_name(cls.stream),
        **schema,
    }


def asyncapi_document() -> dict[str, Any]:
    classes = list(EVENT_TYPES.values())
    _, definitions = models_json_schema(
        [(cls, "validation") for cls in classes],
        ref_template="#/components/schemas/{model}",
        schema_generator=ContractJsonSchema,
    )
    schemas: dict[str, Any] = {"CloudEventsHeaders": CLOUDEVENTS_HEADERS}
    schemas.update(definitions.get("$defs", {}))
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for stream in Stream:
        spec = TOPIC_SPECS[stream]
        channel_id = stream.value.replace(".", "-")
        stream_classes = events_on(stream)
        refs = {
            cls.__name__: {"$ref": f"#/components/messages/{cls.__name__}"}
            for cls in stream_classes
        }
        for cls in stream_classes:
            messages[cls.__name__] = {
                "name": cls.ce_type(),
                "title": cls.__name__,
                "summary": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
                "contentType": "application/json",
                "headers": {"$ref": "#/components/schemas/CloudEventsHeaders"},
                "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
                "bindings": {"kafka": {"key": {"type": "string", "description": "The domain."}}},
                "x-schema-version": cls.schema_version(),
                "x-dataschema": cls.dataschema(),
            }
        topic_configuration: dict[str, Any] = {
            "cleanup.policy": ["compact"] if spec.compacted else ["delete"]
        }
        channels[channel_id] = {
            "address": topic_name(stream),
            "description": spec.description,
            "messages": refs,
            "bindings": {
                "kafka": {"topic": topic_name(stream), "topicConfiguration": topic_configuration}
            },
        }
        channel_ref = {"$ref": f"#/channels/{channel_id}"}
        message_refs = [{"$ref": f"#/channels/{channel_id}/messages/{name}"} for name in refs]
        operations[f"{channel_id}.send"] = {
            "action": "send",
            "channel": channel_ref,
            "summary": f"Produced by {spec.producer}.",
            "messages": message_refs,
        }
        operations[f"{channel_id}.receive"] = {
            "action": "receive",
            "channel": channel_ref,
            "summary": f"Consumed by {', '.join(spec.consumers)}.",
            "messages": message_refs,
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "adaptmesh",
            "version": "1.0.0",
            "description": "Events of the adaptmesh closed loop. Every record is a CloudEvent "
            "in Kafka binary mode, keyed by domain. Generated from adaptmesh_schemas; do not edit.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def document_json_schema(cls: type[BaseModel]) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:adaptmesh:document:{cls.__name__}",
        **cls.model_json_schema(mode="validation", schema_generator=ContractJsonSchema),
    }


def render_all() -> dict[str, str]:
    """Relative path under `schemas/` -> file text, for every generated file."""
    files = {_file_name(cls): _dump(event_json_schema(cls)) for cls in EVENT_TYPES.values()}
    files |= {
        f"{JSONSCHEMA_DIR}/document.{cls.__name__}.json": _dump(document_json_schema(cls))
        for cls in DOCUMENTS
    }
    files[ASYNCAPI_FILE] = _dump(asyncapi_document())
    return files


def stale_files(root: Path = SCHEMAS_DIR) -> list[str]:
    """Generated files that are missing, differ, or are left over from removed events."""
    expected = render_all()
    stale = [
        path
        for path, text in expected.items()
        if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text
    ]
    existing = root / JSONSCHEMA_DIR
    if existing.is_dir():
        stale += [
            f"{JSONSCHEMA_DIR}/{p.name}"
            for p in sorted(existing.glob("*.json"))
            if f"{JSONSCHEMA_DIR}/{p.name}" not in expected
        ]
    return sorted(stale)


def write_all(root: Path = SCHEMAS_DIR) -> None:
    expected = render_all()
    (root / JSONSCHEMA_DIR).mkdir(parents=True, exist_ok=True)
    for leftover in (root / JSONSCHEMA_DIR).glob("*.json"):
        if f"{JSONSCHEMA_DIR}/{leftover.name}" not in expected:
            leftover.unlink()
    for path, text in expected.items():
        (root / path).write_text(text, encoding="utf-8")


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="fail if the committed files are stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            sys.stderr.write(
                "stale generated schemas (run `make schemas`):\n  " + "\n  ".join(stale) + "\n"
            )
            return 1
        return 0
    write_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
