"""`adaptmesh rollback DOMAIN [--to VERSION] --reason TEXT`: put an earlier model back.

Publishes `change.rollback` and waits for the gate's answer on `mesh.gate.v1` — the
`gate.rolled_back` or `gate.rollback_refused` naming this request — reading from where the
topic ended before the request went out, as a `read_committed` consumer.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
from collections.abc import Callable
from typing import TypeGuard

from aiokafka import AIOKafkaConsumer, TopicPartition

from adaptmesh_kit import MeshSettings, create_app, kafka_client_kwargs
from adaptmesh_kit.topic_ends import log_bounds
from adaptmesh_schemas import (
    DecodeError,
    MeshEvent,
    Stream,
    decode_event,
    read_envelope,
    topic_name,
)
from adaptmesh_schemas.events import RollbackRefused, RollbackRequested, RolledBack

EXIT_ROLLED_BACK, EXIT_REFUSED, EXIT_NO_ANSWER = 0, 1, 2
POLL_MS = 500

Say = Callable[[str], None]


def add_rollback_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rollback = commands.add_parser(
        "rollback",
        help="serve an earlier approved model of a domain again (default: the previous one)",
    )
    rollback.add_argument("domain")
    rollback.add_argument("--to", metavar="VERSION", help="the approved model to serve again")
    rollback.add_argument("--reason", required=True, help="why, for the audit trail")
    rollback.add_argument(
        "--requested-by", metavar="WHO", help="who asks (default: user@host of this shell)"
    )
    rollback.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the gate's answer (0: do not wait)",
    )


def request_of(args: argparse.Namespace) -> RollbackRequested:
    return RollbackRequested(
        domain=args.domain,
        to_version=args.to,
        reason=args.reason,
        requested_by=args.requested_by or f"{getpass.getuser()}@{socket.gethostname()}",
    )


async def run_rollback(
    settings: MeshSettings, request: RollbackRequested, *, wait: float, say: Say = print
) -> int:
    """Ask for the rollback; with `wait` > 0, report the gate's answer."""
    gate_topic = topic_name(Stream.GATE, settings.topic_prefix)
    # Where the answers start: taken before asking, so the answer cannot be missed.
    bounds = await log_bounds(settings, gate_topic) if wait > 0 else {}
    async with create_app(settings, "cli") as app:
        envelope = await app.publish(request)
    target = request.to_version or "the previous model"
    say(f"asked to roll {request.domain} back to {target} (request {envelope.id})")
    if wait <= 0:
        return EXIT_ROLLED_BACK
    answer = await _answer(settings, gate_topic, bounds, envelope.id, wait)
    if answer is None:
        say(f"no answer from the gate on {gate_topic} within {wait:g}s (is it running?)")
        return EXIT_NO_ANSWER
    if isinstance(answer, RolledBack):
        say(
            f"rolled back: {answer.model_version} serves {answer.domain} again (promotion "
            f"{answer.promotion}, replacing {answer.rollback.replaced_version})"
        )
        return EXIT_ROLLED_BACK
    say(f"refused: {'; '.join(answer.reasons)}")
    say(f"{answer.current_version or 'nothing'} still serves {answer.domain}")
    return EXIT_REFUSED


async def _answer(
    settings: MeshSettings,
    topic: str,
    bounds: dict[int, tuple[int, int]],
    request_id: str,
    wait: float,
) -> RolledBack | RollbackRefused | None:
    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, partition) for partition in bounds]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, bounds[tp.partition][1])
        async with asyncio.timeout(wait):
            while True:
                batch = await consumer.getmany(timeout_ms=POLL_MS)
                for records in batch.values():
                    for record in records:
                        try:
                            event = decode_event(read_envelope(record.headers), record.value)
                        except DecodeError:
                            continue
                        if _answers(event, request_id):
                            return event
    except TimeoutError:
        return None
    finally:
        await consumer.stop()


def _answers(event: MeshEvent, request_id: str) -> TypeGuard[RolledBack | RollbackRefused]:
    """Whether `event` is the gate's answer to the rollback request `request_id`."""
    if isinstance(event, RolledBack):
        return event.rollback.request_id == request_id
    return isinstance(event, RollbackRefused) and event.request_id == request_id
