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
from faststream.kafka.message import KafkaMessage


async def tolerant_parser(
    record: ConsumerRecord[Any, Any], original: Callable[..., Awaitable[Any]]
) -> Any:
    """FastStream's parser, minus its crash on non-UTF-8 headers (faststream#2458).

    The parser then sees text copies (undecodable bytes replaced); the message keeps the
    original record, whose exact bytes the dead letter preserves.
    """
    try:
        return await original(record)
    except UnicodeDecodeError:
        message = await original(_readable(record))
        message.raw_message = record
        return message


async def tolerant_batch_parser(
    records: Sequence[ConsumerRecord[Any, Any]], original: Callable[..., Awaitable[Any]]
) -> Any:
    """The same for a batch: one record with a non-UTF-8 header must not lose the others."""
    try:
        return await original(records)
    except UnicodeDecodeError:
        message = await original(tuple(_readable(record) for record in records))
        message.raw_message = records
        return message


async def raw_decoder(message: KafkaMessage, original: Callable[..., Awaitable[Any]]) -> Any:
    """Hand the handler the message itself: the kit decodes bodies, so bad JSON gets a dead
    letter instead of failing inside FastStream."""
    return message


def header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    """The text of header `name`, or None when absent, empty or not UTF-8."""
    for key, raw in record.headers:
        if key == name:
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
