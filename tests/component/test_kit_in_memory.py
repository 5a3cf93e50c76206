"""The kit's handler discipline on FastStream's in-memory broker (no Kafka needed).

Fast feedback for handler logic; the same behaviours are shown on a real broker in
tests/integration/test_kit_on_kafka.py.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from faststream.kafka import TestKafkaBroker

from adaptmesh_kit import Delivery, EventContext, MeshApp, MeshSettings, create_app
from adaptmesh_schemas import Envelope, Stream, encode_event, topic_name
from adaptmesh_schemas.events import (
    DataBatchSubmitted,
    DeadLetterRecorded,
    FeedbackSubmitted,
    RetrainRequested,
    TaxonomyChanged,
)
from adaptmesh_schemas.values import LabelledExample


def settings(tmp_path: Path) -> MeshSettings:
    return MeshSettings(artifact_root=f"file://{tmp_path}/artifacts", provision_topics=False)


def batch(batch_id: str) -> DataBatchSubmitted:
    return DataBatchSubmitted(
        domain="fin-news",
        batch_id=batch_id,
        examples=(LabelledExample(text="wheat exports fell", label="grain"),),
    )


async def test_handler_gets_typed_event_and_publishes_with_causation(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path), "component")
    seen: list[tuple[str, Envelope]] = []

    @app.handles(Stream.CHANGES, DataBatchSubmitted)
    async def on_batch(event: DataBatchSubmitted, context: EventContext) -> None:
        seen.append((event.batch_id, context.envelope))

    async with TestKafkaBroker(app.broker):
        sent = await app.publish(batch("b1"))
        # Duplicate delivery of the same record: handled once.
        await app.broker.publish(
            encode_event(batch("b1")),
            topic_name(Stream.CHANGES),
            key=b"fin-news",
            headers={k: v.decode() for k, v in sent.to_headers()},
        )
    assert [batch_id for batch_id, _ in seen] == ["b1"]
    assert seen[0][1].id == sent.id


async def test_invalid_body_is_dead_lettered_in_memory(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path), "component")
    letters: list[DeadLetterRecorded] = []

    # The kit's broker runs without FastStream's argument injection: a plain subscriber gets
    # the JSON-decoded body.
    @app.broker.subscriber(topic_name(Stream.DEADLETTER))
    async def on_letter(body: dict[str, object]) -> None:
        letters.append(DeadLetterRecorded.model_validate(body))

    @app.handles(Stream.CHANGES, DataBatchSubmitted)
    async def on_batch(event: DataBatchSubmitted, context: EventContext) -> None:
        raise AssertionError("must not be called for an invalid body")

    envelope = Envelope.for_event(batch("b1"), source="urn:test")
    async with TestKafkaBroker(app.broker):
        await app.broker.publish(
            b'{"domain": "fin-news"}',
            topic_name(Stream.CHANGES),
            key=b"fin-news",
            headers={k: v.decode() for k, v in envelope.to_headers()},
        )
    assert [letter.reason_code for letter in letters] == ["schema-violation"]
    assert "examples" in letters[0].reason


def test_a_handler_cannot_claim_an_event_of_another_stream(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path), "component")
    with pytest.raises(ValueError, match="retrain"):
        app.handles(Stream.CHANGES, RetrainRequested)


def letters_of(app: MeshApp) -> list[DeadLetterRecorded]:
    """Collects the app's dead letters (a plain subscriber gets the JSON-decoded body)."""
    letters: list[DeadLetterRecorded] = []

    @app.broker.subscriber(topic_name(Stream.DEADLETTER))
    async def on_letter(body: dict[str, object]) -> None:
        letters.append(DeadLetterRecorded.model_validate(body))

    return letters


async def test_batch_handler_gets_deliveries_and_each_publishes_with_its_causation(
    tmp_path: Path,
) -> None:
    app = create_app(settings(tmp_path), "component")
    calls: list[list[str]] = []
    published: list[Envelope] = []

    @app.handles_batch(Stream.CHANGES, DataBatchSubmitted)
    async def on_batches(deliveries: Sequence[Delivery[DataBatchSubmitted]]) -> None:
        calls.append([delivery.event.batch_id for delivery in deliveries])
        for delivery in deliveries:
            published.append(
                await delivery.context.publish(
                    FeedbackSubmitted(
                        domain="fin-news",
                        prediction_id=delivery.event.batch_id,
                        text="wheat",
                        true_label="grain",
                    )
                )
            )

    async with TestKafkaBroker(app.broker):
        first = await app.publish(batch("b1"))
        # The same record again: it was handled, so it is not delivered again.
        await app.broker.publish(
            encode_event(batch("b1")),
            topic_name(Stream.CHANGES),
            key=b"fin-news",
            headers=first.header_texts(),
        )
        second = await app.publish(batch("b2"))
    # The in-memory broker delivers each record as a batch of its own.
    assert calls == [["b1"], ["b2"]]
    assert [(e.causationid, e.correlationid) for e in published] == [
        (first.id, first.correlationid),
        (second.id, second.correlationid),
    ]


async def test_batch_handler_rejections_and_bad_records_are_dead_lettered_in_memory(
    tmp_path: Path,
) -> None:
    app = create_app(settings(tmp_path), "component")
    letters = letters_of(app)
    handled: list[str] = []

    @app.handles_batch(Stream.CHANGES, DataBatchSubmitted)
    async def on_batches(
        deliveries: Sequence[Delivery[DataBatchSubmitted]],
    ) -> list[tuple[Delivery[DataBatchSubmitted], str]]:
        handled.extend(d.event.batch_id for d in deliveries if d.event.batch_id != "refused")
        return [(d, "not this one") for d in deliveries if d.event.batch_id == "refused"]

    envelope = Envelope.for_event(batch("b1"), source="urn:test")
    async with TestKafkaBroker(app.broker):
        await app.broker.publish(
            b'{"domain": "fin-news"}',
            topic_name(Stream.CHANGES),
            key=b"fin-news",
            headers=envelope.header_texts(),
        )
        await app.publish(batch("refused"))
        await app.publish(batch("fine"))
    assert handled == ["fine"]
    assert [letter.reason_code for letter in letters] == ["schema-violation", "rejected"]
    assert letters[1].reason == "not this one"


async def test_group_and_broadcast_handlers_share_a_stream_and_bad_records_are_dead_lettered_once(
    tmp_path: Path,
) -> None:
    app = create_app(settings(tmp_path), "component")
    letters = letters_of(app)
    group: list[str] = []
    broadcast: list[str] = []

    @app.handles_batch(Stream.CHANGES, DataBatchSubmitted)
    async def on_batches(deliveries: Sequence[Delivery[DataBatchSubmitted]]) -> None:
        group.extend(delivery.event.batch_id for delivery in deliveries)

    @app.handles(Stream.CHANGES, DataBatchSubmitted, broadcast=True)
    async def on_each(event: DataBatchSubmitted, context: EventContext) -> None:
        broadcast.append(event.batch_id)

    envelope = Envelope.for_event(batch("b0"), source="urn:test")
    async with TestKafkaBroker(app.broker):
        await app.publish(batch("b1"))
        await app.broker.publish(
            b"{not json",
            topic_name(Stream.CHANGES),
            key=b"fin-news",
            headers=envelope.header_texts(),
        )
        await app.publish(batch("b2"))
    assert group == ["b1", "b2"]
    assert broadcast == ["b1", "b2"]
    assert [letter.reason_code for letter in letters] == ["invalid-json"]


async def test_a_bad_record_of_a_type_only_broadcast_handlers_take_is_dead_lettered_by_the_group(
    tmp_path: Path,
) -> None:
    app = create_app(settings(tmp_path), "component")
    letters = letters_of(app)

    @app.handles(Stream.CHANGES, TaxonomyChanged)
    async def on_taxonomy(event: TaxonomyChanged, context: EventContext) -> None:
        raise AssertionError("no taxonomy change was sent")

    @app.handles(Stream.CHANGES, DataBatchSubmitted, broadcast=True)
    async def on_each(event: DataBatchSubmitted, context: EventContext) -> None:
        raise AssertionError("must not be called for an invalid body")

    envelope = Envelope.for_event(batch("b0"), source="urn:test")
    async with TestKafkaBroker(app.broker):
        await app.broker.publish(
            b'{"domain": "fin-news"}',
            topic_name(Stream.CHANGES),
            key=b"fin-news",
            headers=envelope.header_texts(),
        )
    assert [letter.reason_code for letter in letters] == ["schema-violation"]


async def test_a_bad_record_on_a_broadcast_only_stream_is_dead_lettered_by_it(
    tmp_path: Path,
) -> None:
    app = create_app(settings(tmp_path), "component")
    letters = letters_of(app)

    @app.handles(Stream.CHANGES, DataBatchSubmitted, broadcast=True)
    async def on_each(event: DataBatchSubmitted, context: EventContext) -> None:
        raise AssertionError("must not be called for an invalid body")

    envelope = Envelope.for_event(batch("b0"), source="urn:test")
    async with TestKafkaBroker(app.broker):
        await app.broker.publish(
            b"[]", topic_name(Stream.CHANGES), key=b"fin-news", headers=envelope.header_texts()
        )
    assert [letter.reason_code for letter in letters] == ["schema-violation"]


def test_a_stream_has_one_group_subscription(tmp_path: Path) -> None:
    async def on_batches(deliveries: Sequence[Delivery[DataBatchSubmitted]]) -> None:
        return None

    async def on_each(event: DataBatchSubmitted, context: EventContext) -> None:
        return None

    batches_first = create_app(settings(tmp_path), "component")
    batches_first.handles_batch(Stream.CHANGES, DataBatchSubmitted)(on_batches)
    batches_first.handles(Stream.CHANGES, DataBatchSubmitted, broadcast=True)(on_each)
    with pytest.raises(ValueError, match="batch handler"):
        batches_first.handles(Stream.CHANGES, DataBatchSubmitted)(on_each)
    with pytest.raises(ValueError, match="batch handler"):
        batches_first.handles_batch(Stream.CHANGES, TaxonomyChanged)(on_batches)

    records_first = create_app(settings(tmp_path), "component")
    records_first.handles(Stream.CHANGES, DataBatchSubmitted)(on_each)
    with pytest.raises(ValueError, match="per-record handlers"):
        records_first.handles_batch(Stream.CHANGES, TaxonomyChanged)(on_batches)
    with pytest.raises(ValueError, match="retrain"):
        records_first.handles_batch(Stream.CHANGES, RetrainRequested)
    with pytest.raises(ValueError, match="max_wait_ms"):
        records_first.handles_batch(Stream.FEEDBACK, FeedbackSubmitted, max_wait_ms=0)
    with pytest.raises(ValueError, match="max_records"):
        records_first.handles_batch(Stream.FEEDBACK, FeedbackSubmitted, max_records=0)


@pytest.mark.parametrize("mode", ["record", "batch", "exactly-once"])
async def test_a_handled_ce_id_with_another_body_is_dead_lettered_as_a_conflict(
    tmp_path: Path, mode: str
) -> None:
    exactly_once = (Stream.CHANGES,) if mode == "exactly-once" else ()
    app = create_app(settings(tmp_path), "component", exactly_once=exactly_once)
    letters = letters_of(app)
    handled: list[str] = []

    if mode == "batch":

        @app.handles_batch(Stream.CHANGES, DataBatchSubmitted)
        async def on_batches(deliveries: Sequence[Delivery[DataBatchSubmitted]]) -> None:
            handled.extend(delivery.event.batch_id for delivery in deliveries)

    else:

        @app.handles(Stream.CHANGES, DataBatchSubmitted)
        async def on_batch(event: DataBatchSubmitted, context: EventContext) -> None:
            handled.append(event.batch_id)

    async with TestKafkaBroker(app.broker):
        first = await app.publish(batch("b1"))
        for body in (batch("b1"), batch("b1-changed"), batch("b1")):
            await app.broker.publish(
                encode_event(body),
                topic_name(Stream.CHANGES),
                key=b"fin-news",
                headers=first.header_texts(),
            )
    # The exact redeliveries are dropped silently; the changed body is not handled, and says so.
    assert handled == ["b1"]
    [letter] = letters
    assert letter.reason_code == "conflict"
    digest = hashlib.sha256(encode_event(batch("b1"))).hexdigest()
    changed = hashlib.sha256(encode_event(batch("b1-changed"))).hexdigest()
    assert letter.reason.startswith(
        f"ce_id {first.id!r} was already handled with a different body (sha256 {digest}; "
        f"this body: sha256 {changed})"
    )
    assert base64.b64decode(letter.original_value_b64 or "") == encode_event(batch("b1-changed"))
