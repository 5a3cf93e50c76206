"""The kit's handler discipline on FastStream's in-memory broker (no Kafka needed).

Fast feedback for handler logic; the same behaviours are shown on a real broker in
tests/integration/test_kit_on_kafka.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faststream.kafka import TestKafkaBroker

from adaptmesh_kit import EventContext, MeshSettings, create_app
from adaptmesh_schemas import Envelope, Stream, encode_event, topic_name
from adaptmesh_schemas.events import DataBatchSubmitted, DeadLetterRecorded, RetrainRequested
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
