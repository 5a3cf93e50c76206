"""`adaptmesh replay` on a real broker: the versions ingestion announced are rebuilt from the
changes and feedback in the log, digest for digest; a tampered announcement is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from adaptmesh_cli.replay import run_replay
from adaptmesh_ingestion.app import build_app
from adaptmesh_ingestion.settings import IngestionSettings
from adaptmesh_kit import create_app
from adaptmesh_schemas import Stream, topic_name
from adaptmesh_schemas.events import DatasetVersioned, LabelAdded
from tests.integration.adaptmesh_ingestion.test_ingestion_on_kafka import send
from tests.meshtest import body_json, mesh_settings, read_records
from tests.unit.adaptmesh_ingestion.factories import batch, feedback, recipe, taxonomy

pytestmark = pytest.mark.kafka


async def test_replay_rebuilds_every_version_and_reports_a_tampered_one(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    mesh = mesh_settings(
        kafka_bootstrap, unique_name, tmp_path, consumer_group=f"ingestion-{unique_name}"
    )
    settings = IngestionSettings.model_validate(mesh.model_dump())
    datasets = topic_name(Stream.DATASETS, settings.topic_prefix)
    domain, other = f"news-{unique_name}", f"other-{unique_name}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        async with build_app(settings):
            for change in (
                recipe(domain=domain),
                recipe(domain=other, labels=("up", "down")),
                batch(("wheat rose", "grain"), ("oil fell", "crude"), domain=domain),
                batch(("gold rose", "metals"), batch_id="bad", domain=domain),  # rejected
                taxonomy(LabelAdded(op="add", label="ship"), domain=domain),
                batch(("shares up", "up"), domain=other),
            ):
                await send(producer, settings, change)
            await read_records(kafka_bootstrap, datasets, 5, timeout=60)
            # Feedback travels on its own topic: sent once its label exists.
            await send(producer, settings, feedback("tanker sank", "ship", domain=domain))
            records = await read_records(kafka_bootstrap, datasets, 6, timeout=60)
    finally:
        await producer.stop()

    lines: list[str] = []
    store = tmp_path / "replayed"
    assert await run_replay(mesh, store=store, say=lines.append) == 0
    assert lines == [
        *sorted(
            [
                f"{domain}: 4 versions rebuilt, 4 matched, 0 mismatched, 1 skipped",
                f"{other}: 2 versions rebuilt, 2 matched, 0 mismatched, 0 skipped",
            ]
        ),
        "replay: 6 versions, 6 matched, 0 mismatched",
    ]
    assert len([p for p in store.rglob("*") if p.is_file()]) == 6

    # Someone announces a version of the domain that its cause does not make.
    last = DatasetVersioned.model_validate(body_json(records[-1]))
    assert (last.domain, last.change_kind) == (domain, "feedback")
    forged = last.model_copy(
        update={
            "dataset_version": "ds-000000000000",
            "artifact": last.artifact.model_copy(update={"sha256": "0" * 64}),
        }
    )
    async with create_app(mesh, "forger") as app:
        await app.publish(forged)
    lines.clear()
    assert await run_replay(mesh, domain=domain, say=lines.append) == 1
    assert lines[0] == f"{domain}: 5 versions rebuilt, 4 matched, 1 mismatched, 1 skipped"
    assert lines[1].startswith("  mismatch: ds-000000000000 (sha256 000000000000…) rebuilt as ")
    assert lines[-1] == "replay: 5 versions, 4 matched, 1 mismatched"
