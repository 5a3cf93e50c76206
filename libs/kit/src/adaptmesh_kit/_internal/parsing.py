"""The parser and decoder the kit gives FastStream's subscribers, and header reading.

FastStream's parsers turn records into messages; the kit keeps the records themselves (it reads
envelopes and bodies so that a bad record gets a dead letter instead of failing inside
FastStream), and must never lose a record's exact bytes to a parser.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka.message import FAKE_CONSUMER, KafkaMessage


async def tolerant_parser(
    record: ConsumerRecord[Any, Any], original: Callable[..., Awaitable[Any]]
) -> Any:
    """FastStream's parser, minus its crash on non-UTF-8 headers (faststream#2458) and on
    headers without a value (Kafka allows a null one; FastStream decodes every value).

    The parser then sees text copies (undecodable bytes replaced, no value as empty); the
    message keeps the original record, whose exact bytes the dead letter preserves.
    """
    try:
        if all(raw is not None for _, raw in record.headers):
            return await original(record)
    except UnicodeDecodeError:
        pass
    message = await original(_readable(record))
    message.raw_message = record
    return message


async def batch_message(
    records: Sequence[ConsumerRecord[Any, Any]], original: Callable[..., Awaitable[Any]]
) -> KafkaMessage:
    """A fetched batch as FastStream's message, records kept as they are.

    FastStream's own batch parser decodes every header of every record into dicts for its
    telemetry and logging, and fails the whole batch on one non-UTF-8 header (faststream#2458).
    The kit reads the records itself and makes a batch's span, so it leaves that out: with
    the collector's work for those dicts, kept alive for the whole batch, it was about a tenth
    of the kit's CPU time per record (measured on bench/backbone's records, in process).
    """
    first, last = records[0], records[-1]
    return KafkaMessage(
        records,
        [record.value for record in records],
        message_id=f"{first.offset}-{last.offset}-{first.timestamp}",
        # Commits go through the subscriber's consumer (offsets.py), never the message's.
        consumer=FAKE_CONSUMER,
    )


async def raw_decoder(message: KafkaMessage, original: Callable[..., Awaitable[Any]]) -> Any:
    """Hand the handler the message itself: the kit decodes bodies, so bad JSON gets a dead
    letter instead of failing inside FastStream."""
    return message


def header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    """The text of header `name`, or None when absent, empty, without a value or not UTF-8."""
    for key, raw in record.headers:
        if key == name and raw is not None:
            try:
                return str(raw.decode("utf-8")) or None
            except UnicodeDecodeError:
                return None
    return None


def _readable(record: ConsumerRecord[Any, Any]) -> ConsumerRecord[Any, Any]:
    """A copy whose headers are all text."""
    readable = tuple(
        (key, (raw or b"").decode("utf-8", "replace").encode()) for key, raw in record.headers
    )
    return dataclasses.replace(record, headers=readable)
