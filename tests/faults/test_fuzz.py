"""Fuzzing the consumers: 10,000 malformed records on every input topic, valid ones between them.

The five services run in this process on the real broker (each built by its own `build_app`, as
the integration tests do), on private topics. A seeded generator writes malformed records to
every topic a service consumes — bad and missing CloudEvents headers, headers that are not
UTF-8 or have no value at all, megabytes of headers, unknown and misplaced types, bodies that are
not JSON, JSON of the wrong shape, nested too deep, too large, from a schema major nobody knows,
subjects that do not match, keys that are garbage, ids reused with another body, changes for
domains that do not exist — and, between them, valid changes and feedback for one domain, whose
dataset versions show that they were handled. No model is trained: the valid data has one label
only, which no one can train on.

Exactly once, by design: a record bad in itself is dead-lettered once by every service that
consumes its topic (per service, not per subscription: a stream read both by the group and by
broadcast is dead-lettered by the group only; a broadcast-only reader dead-letters it itself).
A record whose envelope is fine but whose body is not is dead-lettered only by the services that
take its type (the others skip the type unread). So each malformed record has its set of
services, and the test asserts that the dead-letter topic holds exactly one letter per record
and service in that set, with the expected reason code, and nothing else.

Reproducible: the seed is printed; `FUZZ_SEED=<n>` replays a run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from pydantic import ValidationError

from adaptmesh_drift.app import build_app as build_drift
from adaptmesh_drift.settings import DriftSettings
from adaptmesh_gate.app import build_app as build_gate
from adaptmesh_gate.evaluation import EvalSet, Evaluated
from adaptmesh_gate.settings import GateSettings
from adaptmesh_ingestion.app import build_app as build_ingestion
from adaptmesh_ingestion.domain import CHANGE_EVENTS
from adaptmesh_ingestion.settings import IngestionSettings
from adaptmesh_kit import ArtifactStore, MeshApp, MeshSettings
from adaptmesh_schemas import MeshEvent, Stream, encode_event, topic_name
from adaptmesh_schemas.documents import ModelManifest
from adaptmesh_schemas.envelope import Envelope
from adaptmesh_schemas.events import (
    BaseModelReleased,
    DatasetVersioned,
    DeadLetterRecorded,
    FeedbackSubmitted,
    GateApproved,
    InferenceLogged,
    ModelReady,
    ModelTrained,
    RetrainRequested,
    RollbackRequested,
    RolledBack,
)
from adaptmesh_schemas.topics import TOPIC_SPECS
from adaptmesh_schemas.values import ArtifactRef
from adaptmesh_schemas.versioning import DATASCHEMA_PREFIX, EVENT_TYPES, events_on
from adaptmesh_serving.app import build_app as build_serving
from adaptmesh_serving.registry import Predictor
from adaptmesh_serving.settings import ServingSettings
from adaptmesh_training.app import build_app as build_training
from adaptmesh_training.settings import TrainingSettings
from tests.meshtest import mesh_settings
from tests.unit.adaptmesh_ingestion.factories import batch, example, recipe

pytestmark = pytest.mark.kafka

MALFORMED_RECORDS = 10_000
VALID_EVERY = 50
"""One valid change or feedback after every this many malformed records."""
DEFAULT_SEED = 20261203
MAX_EVENT_BYTES = 32_768
"""Small, so that too-large bodies are cheap to make; the kit's check is the same at any size."""
INLINE_BYTES = 4_096
"""Dead letters of larger bodies keep them in the artifact store: that path is fuzzed too."""
HUGE_HEADERS_AT = range(5_000, 5_000 + 3 * 8)
"""Where records with megabytes of headers go (three kinds on each of the eight topics): few,
they are slow to write, and one is enough to show whether its dead letter fits in a record."""
LABEL = "grain"
"""The one label the valid data uses: a dataset with examples of one label is not trainable, so
drift-sensing asks for no retraining and no model is trained."""

# What each service consumes: stream -> service -> the ce_types it takes there (from each
# service's app.py). A record bad in itself is dead-lettered by every service of its stream; one
# with a bad body, by the services that take its type.
CONSUMERS: dict[Stream, dict[str, frozenset[str]]] = {
    Stream.CHANGES: {
        "ingestion": frozenset(t.ce_type() for t in (*CHANGE_EVENTS, BaseModelReleased)),
        "evaluation-gate": frozenset({RollbackRequested.ce_type()}),
    },
    Stream.FEEDBACK: {
        "ingestion": frozenset({FeedbackSubmitted.ce_type()}),
        "drift-sensing": frozenset({FeedbackSubmitted.ce_type()}),
    },
    Stream.DATASETS: {
        service: frozenset({DatasetVersioned.ce_type()})
        for service in ("ingestion", "drift-sensing", "evaluation-gate", "training")
    },
    Stream.INFERENCE: {"drift-sensing": frozenset({InferenceLogged.ce_type()})},
    Stream.RETRAIN: {"training": frozenset({RetrainRequested.ce_type()})},
    Stream.TRAINING: {"evaluation-gate": frozenset({ModelTrained.ce_type()})},
    Stream.GATE: {"evaluation-gate": frozenset({GateApproved.ce_type(), RolledBack.ce_type()})},
    Stream.MODELS_READY: {
        service: frozenset({ModelReady.ce_type()})
        for service in ("drift-sensing", "evaluation-gate", "training", "serving")
    },
}
INPUT_STREAMS = tuple(CONSUMERS)


def taken_types(stream: Stream) -> list[type[MeshEvent]]:
    """The event types of `stream` some service takes: a bad body of any other type is, by
    design, nobody's to dead-letter (the CLI reads it), so the fuzz does not send those."""
    wanted = set().union(*CONSUMERS[stream].values())
    return [t for t in events_on(stream) if t.ce_type() in wanted]


# -- what is sent -----------------------------------------------------------------------------

Headers = list[tuple[str, bytes | None]]


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to write, and what must become of it."""

    stream: Stream
    key: bytes | None
    value: bytes | None
    headers: Headers
    kind: str
    """The generator that made it (for the printout)."""
    code: str | None = None
    """The reason code its dead letters must carry; None for a valid record."""
    services: frozenset[str] = frozenset()
    """The services that must dead-letter it, once each."""
    ce_id: str | None = None
    """A valid record's id, to find in the dataset versions it causes."""


def headers_of(event_type: type[MeshEvent], domain: str, ce_id: str | None = None) -> Headers:
    envelope = Envelope(
        id=ce_id or str(uuid.uuid4()),
        source="urn:test:fuzz",
        type=event_type.ce_type(),
        time=datetime.now(UTC),
        subject=domain,
        dataschema=event_type.dataschema(),
        correlationid=ce_id or str(uuid.uuid4()),
    )
    return list(envelope.to_headers())


def replaced(headers: Headers, name: str, value: bytes | None) -> Headers:
    return [(key, value if key == name else raw) for key, raw in headers]


class Fuzzer:
    """A seeded generator of malformed records (and the valid ones between them)."""

    def __init__(self, seed: int, domain: str) -> None:
        self.rng = random.Random(seed)
        self.domain = domain
        self.valid_sent: dict[Stream, list[tuple[str, MeshEvent]]] = collections.defaultdict(list)
        self._texts = 0
        self._kinds: list[tuple[str, Callable[[Stream], Outgoing]]] = [
            ("missing-header", self.missing_header),
            ("empty-ce-id", self.empty_ce_id),
            ("no-value-header", self.no_value_header),
            ("wrong-specversion", self.wrong_specversion),
            ("not-utf8-header", self.not_utf8_header),
            ("wrong-content-type", self.wrong_content_type),
            ("garbled-time", self.garbled_time),
            ("unknown-type", self.unknown_type),
            ("wrong-topic", self.wrong_topic),
            ("too-large", self.too_large),
            ("not-json", self.not_json),
            ("no-body", self.no_body),
            ("json-not-object", self.json_not_object),
            ("wrong-shape", self.wrong_shape),
            ("bad-domain", self.bad_domain),
            ("huge-value", self.huge_value),
            ("deep-nesting", self.deep_nesting),
            ("garbled-dataschema", self.garbled_dataschema),
            ("other-dataschema", self.other_dataschema),
            ("newer-major", self.newer_major),
            ("subject-mismatch", self.subject_mismatch),
            ("unknown-domain", self.unknown_domain),
            ("conflicting-id", self.conflicting_id),
        ]

    # -- helpers ---------------------------------------------------------------------------------

    def junk(self, low: int = 0, high: int = 512) -> bytes:
        return self.rng.randbytes(self.rng.randint(low, high))

    def key(self, stream: Stream) -> bytes | None:
        """Keys of every sort: the domain, none, garbage bytes, a domain that does not match.
        Never none on a compacted topic: the broker refuses a record without a key there."""
        keys: list[bytes | None] = [self.domain.encode(), self.junk(1, 64), b"Not A Domain"]
        keys.append(b"other-domain")
        if not TOPIC_SPECS[stream].compacted:
            keys.append(None)
        return self.rng.choice(keys)

    def taken(self, stream: Stream) -> type[MeshEvent]:
        return self.rng.choice(taken_types(stream))

    def everyone(self, stream: Stream) -> frozenset[str]:
        return frozenset(CONSUMERS[stream])

    def takers(self, stream: Stream, event_type: type[MeshEvent]) -> frozenset[str]:
        ce_type = event_type.ce_type()
        return frozenset(s for s, types in CONSUMERS[stream].items() if ce_type in types)

    def decorated(self, headers: Headers) -> Headers:
        """Headers the envelope does not read, garbled now and then: never change the verdict."""
        extra: Headers = []
        if self.rng.random() < 0.3:
            extra.append(("x-fuzz", self.junk(0, 64)))
        if self.rng.random() < 0.1:
            extra.append(("traceparent", self.rng.choice([b"00-zz-yy-01", self.junk(1, 40)])))
        if self.rng.random() < 0.05:
            extra.append(("x-fuzz-null", None))
        return headers + extra

    def record(
        self,
        stream: Stream,
        kind: str,
        code: str,
        services: frozenset[str],
        headers: Headers,
        value: bytes | None,
        key: bytes | None = None,
    ) -> Outgoing:
        assert services, f"{kind} on {stream}: nobody would dead-letter it"
        key = self.key(stream) if key is None else key
        if key is None and value is None:  # a Kafka record needs one of them
            key = self.domain.encode()
        return Outgoing(
            stream,
            key,
            value,
            self.decorated(headers),
            kind,
            code,
            services,
        )

    def envelope_defect(self, stream: Stream, kind: str, code: str, headers: Headers) -> Outgoing:
        body = self.rng.choice([self.junk(), b"{}", json.dumps({"domain": self.domain}).encode()])
        return self.record(stream, kind, code, self.everyone(stream), headers, body)

    def body_defect(self, stream: Stream, kind: str, code: str, body: bytes | None) -> Outgoing:
        event_type = self.taken(stream)
        headers = headers_of(event_type, self.domain)
        return self.record(stream, kind, code, self.takers(stream, event_type), headers, body)

    def invalid_object(self, event_type: type[MeshEvent]) -> dict[str, Any]:
        """A JSON object `event_type` refuses: random fields, sometimes a bad domain."""
        data: dict[str, Any] = {"domain": self.domain}
        for _ in range(self.rng.randint(0, 6)):
            data[self.rng.choice(["x", "labels", "examples", "model_version", "id", "ü"])] = (
                self.rng.choice([None, 1, -1.5, "", "text", [], {}, [1, "a"], {"a": {"b": []}}])
            )
        try:
            event_type.model_validate(data)
        except ValidationError:
            return data
        # Every field but the domain has a default (e.g. a rollback to the previous champion).
        data["domain"] = "Not A Domain"
        return data

    # -- envelope defects: every consumer of the stream refuses them ----------------------------

    def missing_header(self, stream: Stream) -> Outgoing:
        headers = headers_of(self.taken(stream), self.domain)
        required = ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_dataschema"]
        gone = set(self.rng.sample(required, self.rng.randint(1, len(required))))
        if self.rng.random() < 0.1:
            return self.envelope_defect(stream, "missing-header", "invalid-envelope", [])
        kept = [(k, v) for k, v in headers if k not in gone]
        return self.envelope_defect(stream, "missing-header", "invalid-envelope", kept)

    def empty_ce_id(self, stream: Stream) -> Outgoing:
        headers = replaced(headers_of(self.taken(stream), self.domain), "ce_id", b"")
        return self.envelope_defect(stream, "empty-ce-id", "invalid-envelope", headers)

    def no_value_header(self, stream: Stream) -> Outgoing:
        """A CloudEvents header present with no value at all (Kafka allows a null value)."""
        name = self.rng.choice(["ce_id", "ce_type", "ce_specversion", "ce_time", "ce_source"])
        headers = replaced(headers_of(self.taken(stream), self.domain), name, None)
        return self.envelope_defect(stream, "no-value-header", "invalid-header", headers)

    def wrong_specversion(self, stream: Stream) -> Outgoing:
        version = self.rng.choice([b"0.3", b"2.0", b"1", b"1.0 ", b"\xc3\xa9"])
        headers = replaced(headers_of(self.taken(stream), self.domain), "ce_specversion", version)
        return self.envelope_defect(stream, "wrong-specversion", "invalid-envelope", headers)

    def not_utf8_header(self, stream: Stream) -> Outgoing:
        name = self.rng.choice(["ce_id", "ce_type", "ce_source", "ce_subject", "content-type"])
        garbage = b"\xff\xfe" + self.junk(0, 32)
        headers = headers_of(self.taken(stream), self.domain)
        headers = replaced(headers, name, garbage)
        return self.envelope_defect(stream, "not-utf8-header", "invalid-header", headers)

    def wrong_content_type(self, stream: Stream) -> Outgoing:
        content_type = self.rng.choice([b"text/plain", b"application/xml", b"application/avro"])
        headers = replaced(
            headers_of(self.taken(stream), self.domain), "content-type", content_type
        )
        return self.envelope_defect(stream, "wrong-content-type", "invalid-envelope", headers)

    def garbled_time(self, stream: Stream) -> Outgoing:
        # Not "0" or a bare number: pydantic takes those as Unix times.
        garbled = self.rng.choice([b"yesterday", b"2026-13-45T99:00:00Z", b"", b"\x00", b"T"])
        headers = replaced(headers_of(self.taken(stream), self.domain), "ce_time", garbled)
        return self.envelope_defect(stream, "garbled-time", "invalid-envelope", headers)

    def unknown_type(self, stream: Stream) -> Outgoing:
        name = self.rng.choice(["dev.adaptmesh.nothing", "com.example.order", "", "x" * 300])
        headers = replaced(headers_of(self.taken(stream), self.domain), "ce_type", name.encode())
        # An empty ce_type is a missing one.
        code = "unknown-type" if name else "invalid-envelope"
        return self.envelope_defect(stream, "unknown-type", code, headers)

    def wrong_topic(self, stream: Stream) -> Outgoing:
        elsewhere = [t for t in EVENT_TYPES.values() if t.stream is not stream]
        event_type = self.rng.choice(elsewhere)
        headers = headers_of(event_type, self.domain)
        return self.envelope_defect(stream, "wrong-topic", "wrong-topic", headers)

    def too_large(self, stream: Stream) -> Outgoing:
        event_type = self.taken(stream)
        body = json.dumps({"domain": self.domain, "x": "a" * MAX_EVENT_BYTES}).encode()
        headers = headers_of(event_type, self.domain)
        if self.rng.random() < 0.5:  # size is checked first: the headers do not matter
            headers = [("ce_type", b"\xff")]
        return self.record(stream, "too-large", "too-large", self.everyone(stream), headers, body)

    def huge_header(self, stream: Stream, variant: int) -> Outgoing:
        """Megabytes of headers, which the broker lets in: a dead letter that inlined them
        would be larger than a producer request (found by fuzzing: the record was lost)."""
        event_type = self.taken(stream)
        headers = headers_of(event_type, self.domain)
        huge = b"h" * self.rng.randint(1_100_000, 2_000_000)
        if variant == 0:  # an extra header nobody reads
            headers.append(("x-fuzz-huge", huge))
            code, services = "invalid-json", self.takers(stream, event_type)
        elif variant == 1:  # an id too long to be the dead letter's cause
            headers = replaced(headers, "ce_id", huge)
            code, services = "invalid-json", self.takers(stream, event_type)
        else:  # an unknown type, quoted by the reason
            headers = replaced(headers, "ce_type", huge)
            code, services = "unknown-type", self.everyone(stream)
        return self.record(stream, "huge-header", code, services, headers, b"not json")

    # -- body defects: the services that take the type refuse them ---------------------------

    def not_json(self, stream: Stream) -> Outgoing:
        body = self.rng.choice(
            [b"\xff" + self.junk(), b"{", b'{"domain": ', b"not json", b"{'a': 1}", b"NaN-ish"]
        )
        return self.body_defect(stream, "not-json", "invalid-json", body)

    def no_body(self, stream: Stream) -> Outgoing:
        return self.body_defect(stream, "no-body", "invalid-json", self.rng.choice([b"", None]))

    def json_not_object(self, stream: Stream) -> Outgoing:
        body = self.rng.choice([b"[]", b"1", b'"text"', b"null", b"true", b'[{"domain": "x"}]'])
        return self.body_defect(stream, "json-not-object", "schema-violation", body)

    def wrong_shape(self, stream: Stream) -> Outgoing:
        event_type = self.taken(stream)
        body = json.dumps(self.invalid_object(event_type)).encode()
        headers = headers_of(event_type, self.domain)
        services = self.takers(stream, event_type)
        return self.record(stream, "wrong-shape", "schema-violation", services, headers, body)

    def bad_domain(self, stream: Stream) -> Outgoing:
        domain = self.rng.choice(["../../etc", "/etc/passwd", "UPPER", "", "a" * 100, 7, None])
        event_type = self.taken(stream)
        body = json.dumps({"domain": domain}).encode()
        headers = headers_of(event_type, self.domain)
        services = self.takers(stream, event_type)
        return self.record(stream, "bad-domain", "schema-violation", services, headers, body)

    def huge_value(self, stream: Stream) -> Outgoing:
        """Large but under the size limit: a long string where a short one belongs."""
        event_type = self.taken(stream)
        data = self.invalid_object(event_type)
        # Domains are at most 63 characters.
        data["domain"] = "z" * self.rng.randint(10_000, 25_000)  # within MAX_EVENT_BYTES
        headers = headers_of(event_type, self.domain)
        services = self.takers(stream, event_type)
        body = json.dumps(data).encode()
        return self.record(stream, "huge-value", "schema-violation", services, headers, body)

    def deep_nesting(self, stream: Stream) -> Outgoing:
        # Deeper than Python's recursion limit, within MAX_EVENT_BYTES (6 bytes a level at most).
        depth = self.rng.randint(2_000, 4_500)
        opener, closer = self.rng.choice([("[", "]"), ('{"a":', "}")])
        body = '{"domain": "' + self.domain + '", "x": ' + opener * depth + "1" + closer * depth
        return self.body_defect(stream, "deep-nesting", "invalid-json", (body + "}").encode())

    def garbled_dataschema(self, stream: Stream) -> Outgoing:
        event_type = self.taken(stream)
        schema = self.rng.choice(
            [b"urn:adaptmesh:schema:", b"http://example.com/schema", b"urn:x:1.0", b"v1"]
        )
        headers = replaced(headers_of(event_type, self.domain), "ce_dataschema", schema)
        body = json.dumps({"domain": self.domain}).encode()
        services = self.takers(stream, event_type)
        return self.record(
            stream, "garbled-dataschema", "invalid-envelope", services, headers, body
        )

    def other_dataschema(self, stream: Stream) -> Outgoing:
        """ce_dataschema naming another event than ce_type."""
        event_type = self.taken(stream)
        other = self.rng.choice([t for t in EVENT_TYPES.values() if t is not event_type])
        headers = replaced(
            headers_of(event_type, self.domain), "ce_dataschema", other.dataschema().encode()
        )
        body = json.dumps({"domain": self.domain}).encode()
        services = self.takers(stream, event_type)
        return self.record(stream, "other-dataschema", "invalid-envelope", services, headers, body)

    def newer_major(self, stream: Stream) -> Outgoing:
        event_type = self.taken(stream)
        major = event_type.major + self.rng.randint(1, 5)
        schema = f"{DATASCHEMA_PREFIX}{event_type.event_name}:{major}.0".encode()
        headers = replaced(headers_of(event_type, self.domain), "ce_dataschema", schema)
        body = json.dumps({"domain": self.domain}).encode()
        services = self.takers(stream, event_type)
        return self.record(stream, "newer-major", "unsupported-version", services, headers, body)

    def subject_mismatch(self, stream: Stream) -> Outgoing:
        """A valid body whose ce_subject names another domain (changes and feedback only: their
        valid bodies are cheap to make and handled without a model)."""
        if stream is Stream.FEEDBACK:
            event: MeshEvent = self.feedback()
        elif stream is Stream.CHANGES:
            event = self.data_batch()
        else:
            return self.wrong_shape(stream)
        headers = replaced(headers_of(type(event), self.domain), "ce_subject", b"other-domain")
        services = self.takers(stream, type(event))
        return self.record(
            stream, "subject-mismatch", "schema-violation", services, headers, encode_event(event)
        )

    # -- valid in form, refused by a handler or by the consumer group's memory ----------------

    def unknown_domain(self, stream: Stream) -> Outgoing:
        """A well-formed change or feedback for a domain that has no recipe: ingestion rejects
        it (drift-sensing has no watch for it and lets it go)."""
        if stream not in (Stream.CHANGES, Stream.FEEDBACK):
            return self.not_json(stream)
        nowhere = f"nowhere-{self.rng.randrange(10**9)}"
        event: MeshEvent = (
            self.feedback(nowhere) if stream is Stream.FEEDBACK else self.data_batch(nowhere)
        )
        headers = headers_of(type(event), nowhere)
        return self.record(
            stream,
            "unknown-domain",
            "rejected",
            frozenset({"ingestion"}),
            headers,
            encode_event(event),
            key=nowhere.encode(),
        )

    def conflicting_id(self, stream: Stream) -> Outgoing:
        """An id already handled, sent again with another (valid) body."""
        sent = self.valid_sent.get(stream)
        if stream not in (Stream.CHANGES, Stream.FEEDBACK) or not sent:
            return self.wrong_shape(stream)
        ce_id, _ = self.rng.choice(sent)
        event: MeshEvent = self.feedback() if stream is Stream.FEEDBACK else self.data_batch()
        headers = headers_of(type(event), self.domain, ce_id)
        services = self.takers(stream, type(event))
        return self.record(
            stream, "conflicting-id", "conflict", services, headers, encode_event(event)
        )

    # -- valid records ---------------------------------------------------------------------------

    def text(self) -> str:
        self._texts += 1
        return f"wheat shipment {self._texts} {self.rng.randrange(10**9)}"

    def data_batch(self, domain: str | None = None) -> MeshEvent:
        return batch(
            example(self.text(), LABEL),
            batch_id=f"b{self._texts}",
            domain=domain or self.domain,
        )

    def feedback(self, domain: str | None = None) -> MeshEvent:
        return FeedbackSubmitted(
            domain=domain or self.domain,
            prediction_id=str(uuid.uuid4()),
            text=self.text(),
            true_label=LABEL,
        )

    def valid(self, event: MeshEvent) -> Outgoing:
        ce_id = str(uuid.uuid4())
        self.valid_sent[event.stream].append((ce_id, event))
        return Outgoing(
            event.stream,
            event.domain.encode(),
            encode_event(event),
            headers_of(type(event), event.domain, ce_id),
            "valid",
            ce_id=ce_id,
        )

    def next_valid(self) -> Outgoing:
        return self.valid(self.rng.choice([self.data_batch, self.feedback])())

    def malformed(self, index: int) -> Outgoing:
        stream = INPUT_STREAMS[index % len(INPUT_STREAMS)]
        if index in HUGE_HEADERS_AT:
            return self.huge_header(stream, (index - HUGE_HEADERS_AT.start) // len(INPUT_STREAMS))
        _, make = self.rng.choice(self._kinds)
        return make(stream)

    def records(self, count: int) -> Iterator[Outgoing]:
        """The recipe, then `count` malformed records with a valid one every `VALID_EVERY`,
        then a last valid change and feedback (handled last: the consumers still run)."""
        yield self.valid(recipe(labels=(LABEL, "crude"), domain=self.domain))
        for index in range(count):
            yield self.malformed(index)
            if index % VALID_EVERY == VALID_EVERY - 1:
                yield self.next_valid()
        yield self.valid(self.data_batch())
        yield self.valid(self.feedback())


# -- the services -----------------------------------------------------------------------------


def refuse_to_evaluate(model: ArtifactRef, on: EvalSet, /) -> Evaluated:
    raise AssertionError("the fuzz trains no model: nothing may be evaluated")


def refuse_to_verify(ref: ArtifactRef) -> ModelManifest:
    raise AssertionError("the fuzz promotes no model: nothing may be verified")


def refuse_to_load(store: ArtifactStore, ref: ArtifactRef) -> Predictor:
    raise AssertionError("the fuzz promotes no model: nothing may be loaded")


@contextlib.asynccontextmanager
async def five_services(base: MeshSettings, name: str) -> AsyncIterator[list[MeshApp]]:
    """The five services on one private topic set, each in its own consumer group."""

    def settings(cls: type[MeshSettings], service: str) -> Any:
        values = base.model_dump() | {"consumer_group": f"fuzz-{service}-{name}"}
        return cls.model_validate(values)

    serving = build_serving(settings(ServingSettings, "serving"), load_model=refuse_to_load)
    apps = [
        build_ingestion(settings(IngestionSettings, "ingestion")),
        build_drift(settings(DriftSettings, "drift-sensing")),
        build_gate(
            settings(GateSettings, "evaluation-gate"),
            evaluator=refuse_to_evaluate,
            verify_model=refuse_to_verify,
        ),
        build_training(settings(TrainingSettings, "training")),
        serving.mesh,
    ]
    async with contextlib.AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app.lifespan())
        yield apps


# -- reading what came of it ------------------------------------------------------------------

LetterKey = tuple[str, str, int, int]  # service, topic, partition, offset


async def read_topic_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    *,
    timeout: float,
    settle: float = 0.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Records of `topic` from its start until `done` says so (or `timeout`), then `settle`
    seconds more, so that anything written after (a duplicate) is read too."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not done(found):
                    batch = await consumer.getmany(timeout_ms=500)
                    found.extend(r for records in batch.values() for r in records)
        until = time.monotonic() + settle
        while time.monotonic() < until:
            batch = await consumer.getmany(timeout_ms=500)
            found.extend(r for records in batch.values() for r in records)
    finally:
        await consumer.stop()
    return found


class ConsumerCrashes(logging.Handler):
    """Counts exceptions that escaped into FastStream or asyncio: a consumer that crashed on a
    record logs one (and the record is neither handled nor dead-lettered)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None:
            self.records.append(record)


@pytest.fixture
def crashes() -> Iterator[ConsumerCrashes]:
    handler = ConsumerCrashes()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


# -- the test ---------------------------------------------------------------------------------


@pytest.mark.timeout(600)
async def test_ten_thousand_malformed_records_are_each_dead_lettered_once(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, crashes: ConsumerCrashes
) -> None:
    seed = int(os.environ.get("FUZZ_SEED", DEFAULT_SEED))
    domain = f"fuzz-{unique_name}"
    base = mesh_settings(
        kafka_bootstrap,
        unique_name,
        tmp_path,
        max_event_bytes=MAX_EVENT_BYTES,
        deadletter_inline_bytes=INLINE_BYTES,
        # A handler that fails is retried; nothing here should fail, and if it does the retries
        # should not eat the time budget.
        handler_attempts=2,
    )
    fuzzer = Fuzzer(seed, domain)
    started = time.monotonic()

    async with five_services(base, unique_name):
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            enable_idempotence=True,
            max_request_size=16 * 1024 * 1024,
            linger_ms=5,
        )
        await producer.start()
        sent: list[tuple[Outgoing, Any]] = []
        try:
            for outgoing in fuzzer.records(MALFORMED_RECORDS):
                # Not awaited one by one: the producer batches them; each partition keeps
                # their order.
                future = await producer.send(
                    topic_name(outgoing.stream, base.topic_prefix),
                    outgoing.value,
                    key=outgoing.key,
                    headers=outgoing.headers,
                )
                sent.append((outgoing, future))
            placed = [(outgoing, await future) for outgoing, future in sent]
        finally:
            await producer.stop()
        produced = time.monotonic()

        expected: dict[LetterKey, str] = {}
        kind_of: dict[LetterKey, str] = {}
        valid_ids: set[str] = set()
        for outgoing, metadata in placed:
            if outgoing.code is None:
                assert outgoing.ce_id is not None
                valid_ids.add(outgoing.ce_id)
            for service in outgoing.services:
                key = (service, metadata.topic, metadata.partition, metadata.offset)
                expected[key] = outgoing.code or ""
                kind_of[key] = outgoing.kind

        def seen_keys(records: list[ConsumerRecord[bytes, bytes]]) -> set[LetterKey]:
            return {letter_key(DeadLetterRecorded.model_validate_json(r.value)) for r in records}

        letters = await read_topic_until(
            kafka_bootstrap,
            topic_name(Stream.DEADLETTER, base.topic_prefix),
            lambda found: len(found) >= len(expected) and expected.keys() <= seen_keys(found),
            timeout=300,
            settle=3.0,
        )
        versions = await read_topic_until(
            kafka_bootstrap,
            topic_name(Stream.DATASETS, base.topic_prefix),
            lambda found: valid_ids <= caused_by(found),
            timeout=60,
        )
    finished = time.monotonic()

    # -- counting ---------------------------------------------------------------------------------
    malformed = [outgoing for outgoing, _ in placed if outgoing.code is not None]
    by_key: dict[LetterKey, list[DeadLetterRecorded]] = collections.defaultdict(list)
    for record in letters:
        letter = DeadLetterRecorded.model_validate_json(record.value)
        by_key[letter_key(letter)].append(letter)
    duplicates = {key: found for key, found in by_key.items() if len(found) > 1}
    unexpected = {key: found for key, found in by_key.items() if key not in expected}
    missing = sorted(expected.keys() - by_key.keys())
    wrong_code = {
        key: [letter.reason_code for letter in found]
        for key, found in by_key.items()
        if key in expected and any(letter.reason_code != expected[key] for letter in found)
    }
    without_reason = [
        key
        for key, found in by_key.items()
        if any(not letter.reason_code or not letter.reason for letter in found)
    ]
    processed = valid_ids & caused_by(versions)

    print(f"\nfuzz seed {seed} (FUZZ_SEED={seed} replays it)")
    print(f"generated: {len(malformed)} malformed, {len(valid_ids)} valid")
    per_stream = collections.Counter(outgoing.stream.value for outgoing in malformed)
    print("per topic:", dict(sorted(per_stream.items())))
    per_kind = collections.Counter(outgoing.kind for outgoing in malformed)
    print("per kind:", dict(sorted(per_kind.items())))
    print(
        f"dead letters: {len(letters)} read, {len(expected)} expected "
        f"({len(expected) / len(malformed):.2f} per malformed record: one per consuming service)"
    )
    per_code = collections.Counter(
        letter.reason_code for found in by_key.values() for letter in found
    )
    print("per reason code:", dict(sorted(per_code.items())))
    per_service = collections.Counter(key[0] for key in by_key)
    print("per service:", dict(sorted(per_service.items())))
    print(
        f"duplicates: {len(duplicates)}, missing: {len(missing)}, unexpected: {len(unexpected)}, "
        f"wrong code: {len(wrong_code)}, without reason: {len(without_reason)}"
    )
    if wrong_code:
        mismatches = collections.Counter(
            (kind_of[key], expected[key], *found) for key, found in wrong_code.items()
        )
        print("wrong codes (kind, expected, found):", dict(mismatches))
    print(f"valid processed: {len(processed)} of {len(valid_ids)}")
    print(f"consumer crashes: {len(crashes.records)}")
    print(
        f"seconds: {produced - started:.1f} producing, {finished - produced:.1f} until every "
        "dead letter and dataset version was read"
    )

    def sample(items: Any) -> list[Any]:
        return list(items)[:5]

    assert len(malformed) == MALFORMED_RECORDS
    assert set(per_stream) == {stream.value for stream in INPUT_STREAMS}
    assert not crashes.records, [r.getMessage() for r in crashes.records[:5]]
    assert not missing, f"{len(missing)} never dead-lettered, e.g. {missing[:5]}"
    assert not duplicates, f"dead-lettered more than once: {sample(duplicates)}"
    assert not unexpected, f"dead-lettered but should not be: {sample(unexpected.items())}"
    assert not wrong_code, f"wrong reason code (expected, found): {sample(wrong_code.items())}"
    assert not without_reason
    assert processed == valid_ids, f"{len(valid_ids - processed)} valid records not processed"


def letter_key(letter: DeadLetterRecorded) -> LetterKey:
    source = letter.source
    return letter.service, source.topic, source.partition, source.offset


INGESTION_SOURCE = b"urn:adaptmesh:service:ingestion"


def caused_by(records: list[ConsumerRecord[bytes, bytes]]) -> set[str]:
    """The ce_ids of the changes behind the dataset versions ingestion wrote among `records`
    (the topic holds the fuzz's malformed records too)."""
    causes: set[str] = set()
    for record in records:
        if dict(record.headers).get("ce_source") == INGESTION_SOURCE:
            causes.update(DatasetVersioned.model_validate_json(record.value).cause_event_ids)
    return causes
