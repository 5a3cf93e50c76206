"""The ingestion service on a real broker, fed as an outside producer would, across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from adaptmesh_ingestion.app import build_app
from adaptmesh_ingestion.settings import IngestionSettings
from adaptmesh_schemas import MeshEvent, Stream, topic_name
from adaptmesh_schemas.events import DatasetVersioned, DeadLetterRecorded, LabelAdded
from tests.meshtest import body_json, mesh_settings, read_records, record_of
from tests.unit.adaptmesh_ingestion.factories import DOMAIN, batch, example, recipe, taxonomy

pytestmark = pytest.mark.kafka


async def send(producer: AIOKafkaProducer, settings: IngestionSettings, event: MeshEvent) -> str:
    """Publish `event` with plain aiokafka; returns its ce_id."""
    headers, body, envelope = record_of(event)
    await producer.send_and_wait(
        topic_name(event.stream, settings.topic_prefix),
        body,
        key=event.domain.encode(),
        headers=headers,
    )
    return envelope.id


async def test_changes_become_chained_versions_that_survive_a_restart(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = IngestionSettings.model_validate(
        mesh_settings(
            kafka_bootstrap,
            unique_name,
            tmp_path,
            state_dir=tmp_path / "state",
            consumer_group=f"ingestion-{unique_name}",
        ).model_dump()
    )
    datasets = topic_name(Stream.DATASETS, settings.topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        async with build_app(settings):
            sent = [
                await send(producer, settings, recipe()),
                await send(producer, settings, batch(("wheat", "grain"), ("oil", "crude"))),
                await send(
                    producer, settings, batch(("gold", "metals"), ("corn", "grain"), batch_id="x")
                ),
                await send(producer, settings, taxonomy(LabelAdded(op="add", label="ship"))),
            ]
            records = await read_records(kafka_bootstrap, datasets, 3, timeout=60)
            [letter_record] = await read_records(
                kafka_bootstrap, topic_name(Stream.DEADLETTER, settings.topic_prefix), 1
            )
        versions = [DatasetVersioned.model_validate(body_json(r)) for r in records]
        assert [v.change_kind for v in versions] == ["recipe", "data", "taxonomy"]
        assert [v.cause_event_ids for v in versions] == [(sent[0],), (sent[1],), (sent[3],)]
        assert [v.parent_version for v in versions] == [
            None,
            versions[0].dataset_version,
            versions[1].dataset_version,
        ]
        assert versions[2].counts.per_label == {"grain": 1, "crude": 1, "trade": 0, "ship": 0}
        assert all(r.key == DOMAIN.encode() for r in records)
        headers = dict(records[1].headers)
        assert headers["ce_causationid"].decode() == sent[1]
        assert headers["ce_correlationid"].decode() == sent[1]

        letter = DeadLetterRecorded.model_validate(body_json(letter_record))
        assert letter.reason_code == "rejected"
        assert "batch 'x'" in letter.reason
        assert "unknown 'metals'" in letter.reason

        # A new process over the same state dir continues the chain where it stopped.
        async with build_app(settings):
            after = await send(producer, settings, batch(example("rice", "grain"), batch_id="y"))
            records = await read_records(kafka_bootstrap, datasets, 4, timeout=60)
            with pytest.raises(AssertionError, match="only 4 of 5"):
                # Nothing before the restart is handled again.
                await read_records(kafka_bootstrap, datasets, 5, timeout=3)
        resumed = DatasetVersioned.model_validate(body_json(records[3]))
        assert resumed.cause_event_ids == (after,)
        assert resumed.parent_version == versions[2].dataset_version
        assert resumed.labels == ("grain", "crude", "trade", "ship")
        assert resumed.counts.per_label == {"grain": 2, "crude": 1, "trade": 0, "ship": 0}
    finally:
        await producer.stop()
