"""A dead letter fits in a Kafka record whatever the broker let in (found by fuzzing)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from aiokafka import ConsumerRecord

from adaptmesh_kit import ArtifactStore
from adaptmesh_kit._internal.deadletter import (
    MAX_REASON_CHARS,
    causation_of,
    dead_letter_for,
)
from adaptmesh_schemas import encode_event
from adaptmesh_schemas.values import ArtifactRef

INLINE = 4096


def record(headers: list[tuple[str, bytes | None]], value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="mesh.changes.v1",
        partition=0,
        offset=3,
        timestamp=0,
        timestamp_type=0,
        key=b"fin-news",
        value=value,
        checksum=None,
        serialized_key_size=8,
        serialized_value_size=len(value),
        headers=headers,
    )


def letter_of(
    raw: ConsumerRecord[bytes, bytes], store: ArtifactStore, reason: str = "bad"
) -> bytes:
    letter = dead_letter_for(
        raw,
        service="probe",
        consumer_group="g",
        reason_code="invalid-json",
        reason=reason,
        artifacts=store,
        inline_limit=INLINE,
    )
    return encode_event(letter)


def test_headers_too_large_to_inline_are_kept_whole_in_the_artifact_store(tmp_path: Path) -> None:
    # A 1.5 MB header on a topic that allows 8 MB records made a 2 MB dead letter, over the
    # producer's request limit: the record was lost instead of dead-lettered.
    store = ArtifactStore(f"file://{tmp_path}")
    headers: list[tuple[str, bytes | None]] = [
        ("ce_id", b"id-1"),
        ("x-big", b"a" * 1_500_000),
        ("x-none", None),
    ]
    body = letter_of(record(headers, b"not json"), store)
    assert len(body) < 2 * INLINE
    letter = json.loads(body)
    assert [h["key"] for h in letter["original_headers"]] == ["ce_id", "x-none"]
    where = ArtifactRef.model_validate(letter["original_headers_artifact"])
    kept = json.loads(store.get_bytes(where))
    assert [(h["key"], h["value_b64"] and base64.b64decode(h["value_b64"])) for h in kept] == [
        ("ce_id", b"id-1"),
        ("x-big", b"a" * 1_500_000),
        ("x-none", None),
    ]


def test_small_headers_stay_inline_only(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}")
    letter = json.loads(letter_of(record([("ce_id", b"id-1")], b"x"), store))
    assert letter["original_headers_artifact"] is None
    assert letter["original_headers"] == [{"key": "ce_id", "value_b64": "aWQtMQ=="}]


def test_a_huge_reason_is_cut_and_a_huge_id_is_no_cause(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}")
    # Reasons quote values (e.g. an unknown ce_type of megabytes).
    letter = json.loads(letter_of(record([], b"x"), store, reason="r" * 1_000_000))
    assert len(letter["reason"]) < MAX_REASON_CHARS + 100
    assert letter["reason"].endswith("(995,904 more characters)")
    assert causation_of("id-1") == "id-1"
    assert causation_of("i" * 10_000) is None
    assert causation_of(None) is None
