"""The kit's parser and header reading on records FastStream's own parser cannot take."""

from __future__ import annotations

import re

from aiokafka import ConsumerRecord
from faststream.kafka.message import KafkaMessage
from faststream.kafka.parser import AioKafkaParser

from adaptmesh_kit._internal.parsing import header, tolerant_parser


def record(headers: list[tuple[str, bytes | None]]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="t",
        partition=0,
        offset=7,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=b"{}",
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=2,
        headers=headers,
    )


async def test_headers_without_a_value_or_not_utf8_still_parse_and_keep_the_record() -> None:
    # Found by fuzzing: FastStream decodes every header value, and `None.decode` raised
    # AttributeError before the kit could dead-letter the record.
    parser = AioKafkaParser(KafkaMessage, re.compile("t"))
    cases: list[list[tuple[str, bytes | None]]] = [
        [("ce_id", None), ("x", b"ok")],
        [("ce_id", b"\xff\xfe"), ("x", None)],
        [("ce_id", b"fine")],
    ]
    for headers in cases:
        original = record(headers)
        message = await tolerant_parser(original, parser.parse_message)
        assert message.raw_message is original, "the dead letter needs the exact record"


def test_header_without_a_value_reads_as_absent() -> None:
    assert header(record([("ce_id", None)]), "ce_id") is None
    assert header(record([("ce_id", None), ("ce_id", b"later")]), "ce_id") == "later"
    assert header(record([("ce_id", b"\xff")]), "ce_id") is None
    assert header(record([("ce_id", b"abc")]), "ce_id") == "abc"
