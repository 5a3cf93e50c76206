"""The ingestion service on FastStream's in-memory broker: changes in, dataset versions out."""

from __future__ import annotations

from pathlib import Path

from faststream.kafka import TestKafkaBroker

from adaptmesh_ingestion.app import build_app
from adaptmesh_ingestion.settings import IngestionSettings
from adaptmesh_kit import MeshApp
from adaptmesh_schemas import Stream, topic_name
from adaptmesh_schemas.documents import DatasetSnapshot
from adaptmesh_schemas.events import DatasetVersioned, DeadLetterRecorded, LabelAdded
from tests.unit.adaptmesh_ingestion.factories import (
    DOMAIN,
    batch,
    example,
    feedback,
    recipe,
    taxonomy,
)


def settings(tmp_path: Path) -> IngestionSettings:
    return IngestionSettings(
        artifact_root=f"file://{tmp_path}/artifacts",
        state_dir=tmp_path / "state",
        provision_topics=False,
    )


class Outputs:
    """What the service published, collected by plain subscribers."""

    def __init__(self, app: MeshApp) -> None:
        self.versions: list[DatasetVersioned] = []
        self.letters: list[DeadLetterRecorded] = []

        @app.broker.subscriber(topic_name(Stream.DATASETS))
        async def on_version(body: dict[str, object]) -> None:
            self.versions.append(DatasetVersioned.model_validate(body))

        @app.broker.subscriber(topic_name(Stream.DEADLETTER))
        async def on_letter(body: dict[str, object]) -> None:
            self.letters.append(DeadLetterRecorded.model_validate(body))


async def test_recipe_batch_and_taxonomy_make_three_chained_versions(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    out = Outputs(app)
    examples = [example(f"wheat report {n}", "grain") for n in range(8)]
    examples += [example(f"crude report {n}", "crude") for n in range(4)]
    async with TestKafkaBroker(app.broker):
        sent = [
            await app.publish(recipe()),
            await app.publish(batch(*examples)),
            await app.publish(taxonomy(LabelAdded(op="add", label="ship"))),
        ]
    assert out.letters == []
    first, second, third = out.versions
    assert [v.parent_version for v in out.versions] == [
        None,
        first.dataset_version,
        second.dataset_version,
    ]
    assert [v.change_kind for v in out.versions] == ["recipe", "data", "taxonomy"]
    assert [v.cause_event_ids for v in out.versions] == [(e.id,) for e in sent]
    assert first.counts.train + first.counts.eval == 0
    assert second.counts.per_label == {"grain": 8, "crude": 4, "trade": 0}
    assert second.counts.train + second.counts.eval == 12
    assert third.counts.per_label == {"grain": 8, "crude": 4, "trade": 0, "ship": 0}
    assert third.labels == ("grain", "crude", "trade", "ship")
    assert third.taxonomy_version == "t2"
    assert all(v.domain == DOMAIN for v in out.versions)

    snapshot = app.artifacts.get_document(third.artifact, DatasetSnapshot)
    assert snapshot.parent_version == second.dataset_version
    assert snapshot.labels == third.labels
    assert sum(e.split == "eval" for e in snapshot.examples) == third.counts.eval


async def test_a_batch_with_an_unknown_label_is_dead_lettered_with_the_reason(
    tmp_path: Path,
) -> None:
    app = build_app(settings(tmp_path))
    out = Outputs(app)
    async with TestKafkaBroker(app.broker):
        await app.publish(recipe())
        await app.publish(batch(("gold price jumped", "metals"), ("corn", "grain"), batch_id="bad"))
        await app.publish(batch(("corn", "grain"), batch_id="good"))
    [letter] = out.letters
    assert letter.reason_code == "rejected"
    assert letter.service == "ingestion"
    assert "batch 'bad'" in letter.reason
    assert "unknown 'metals'" in letter.reason
    assert "'gold price jumped' -> 'metals'" in letter.reason
    assert "taxonomy version 'r1'" in letter.reason
    first, good = out.versions
    assert good.parent_version == first.dataset_version
    assert good.counts.per_label["grain"] == 1


async def test_a_change_before_any_recipe_is_dead_lettered(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    out = Outputs(app)
    async with TestKafkaBroker(app.broker):
        await app.publish(batch(("corn", "grain")))
    assert out.versions == []
    [letter] = out.letters
    assert letter.reason_code == "rejected"
    assert "no recipe yet" in letter.reason


async def test_feedback_makes_a_feedback_version(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    out = Outputs(app)
    async with TestKafkaBroker(app.broker):
        await app.publish(recipe())
        sent = await app.publish(feedback("oil output rose", "crude"))
    assert out.letters == []
    _, corrected = out.versions
    assert corrected.change_kind == "feedback"
    assert corrected.cause_event_ids == (sent.id,)
    assert corrected.counts.per_label["crude"] == 1
