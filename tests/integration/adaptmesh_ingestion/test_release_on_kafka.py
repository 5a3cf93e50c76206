"""A fleet-wide base-model release on a real broker: fanned out to the domains on the old base,
applied per domain, not repeated on redelivery, and complete right after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from adaptmesh_ingestion.app import build_app
from adaptmesh_ingestion.settings import IngestionSettings
from adaptmesh_schemas import FLEET_DOMAIN, Stream, topic_name
from adaptmesh_schemas.events import BaseModelChanged, BaseModelReleased, DatasetVersioned
from adaptmesh_schemas.values import BaseModelSpec
from tests.integration.adaptmesh_ingestion.test_ingestion_on_kafka import send
from tests.meshtest import body_json, mesh_settings, read_records, record_of
from tests.unit.adaptmesh_ingestion.base_model_files import cached_hub_models
from tests.unit.adaptmesh_ingestion.factories import recipe

pytestmark = pytest.mark.kafka

A = BaseModelSpec(model_id="org/base-a")
B = BaseModelSpec(model_id="org/base-b")
C = BaseModelSpec(model_id="org/base-c")
MOVE_TYPE = BaseModelChanged.ce_type().encode()


@pytest.fixture(autouse=True)
def base_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingestion admits only base models that resolve: A, B and C are in a local cache."""
    cached_hub_models(tmp_path / "models", monkeypatch, A, B, C)


async def test_a_release_moves_the_domains_on_the_old_base_once(
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
    changes = topic_name(Stream.CHANGES, settings.topic_prefix)
    datasets = topic_name(Stream.DATASETS, settings.topic_prefix)
    a1, a2, b1 = (f"{name}-{unique_name}" for name in ("a1", "a2", "b1"))

    def moves(record: ConsumerRecord[bytes, bytes]) -> bool:
        return ("ce_type", MOVE_TYPE) in record.headers

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        async with build_app(settings):
            for domain, base in ((a1, A), (a2, A), (b1, B)):
                await send(producer, settings, recipe(domain=domain, base_model=base))
            await read_records(kafka_bootstrap, datasets, 3, timeout=60)

            headers, body, envelope = record_of(
                BaseModelReleased(old_base=A, new_base=C, reason="faster")
            )
            for _ in range(2):  # the second is a redelivery: same record, same ce_id
                await producer.send_and_wait(
                    changes, body, key=FLEET_DOMAIN.encode(), headers=headers
                )
            move_records = await read_records(kafka_bootstrap, changes, 2, where=moves)
            records = await read_records(kafka_bootstrap, datasets, 5, timeout=60)
            with pytest.raises(AssertionError, match="only 2 of 3"):
                await read_records(kafka_bootstrap, changes, 3, where=moves, timeout=3)
            with pytest.raises(AssertionError, match="only 5 of 6"):
                await read_records(kafka_bootstrap, datasets, 6, timeout=3)

        published = [BaseModelChanged.model_validate(body_json(r)) for r in move_records]
        assert sorted(m.domain for m in published) == sorted([a1, a2])
        assert all(m.base_model == C for m in published)
        assert published[0].reason == f"base model release {envelope.id}: faster"
        for record in move_records:
            headers_of = {k: v.decode() for k, v in record.headers}
            assert record.key == headers_of["ce_subject"].encode()
            assert headers_of["ce_id"] == f"{envelope.id}/{headers_of['ce_subject']}"
            assert headers_of["ce_causationid"] == envelope.id
            assert headers_of["ce_correlationid"] == envelope.id
        versions = [DatasetVersioned.model_validate(body_json(r)) for r in records]
        moved = versions[3:]
        assert sorted(v.domain for v in moved) == sorted([a1, a2])
        assert all(v.base_model == C and v.change_kind == "base-model" for v in moved)
        assert [v.base_model for v in versions if v.domain == b1] == [B]

        # Right after a restart the fleet index is rebuilt from the datasets topic before a
        # release fans out, so the domain on B is found.
        async with build_app(settings):
            await send(producer, settings, BaseModelReleased(old_base=B, new_base=C))
            records = await read_records(kafka_bootstrap, datasets, 6, timeout=60)
        last = DatasetVersioned.model_validate(body_json(records[5]))
        assert (last.domain, last.base_model) == (b1, C)
    finally:
        await producer.stop()
