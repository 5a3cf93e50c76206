"""Data residency at ingestion (FastStream's in-memory broker): data tagged with another
residency is dead-lettered and the domain is unchanged; a domain's dataset versions lie under
its residency's root only; a residency without a root starts no domain."""

from __future__ import annotations

from pathlib import Path

from faststream.kafka import TestKafkaBroker

from adaptmesh_ingestion.app import build_app
from adaptmesh_ingestion.settings import IngestionSettings
from adaptmesh_schemas.events import FeedbackSubmitted
from tests.component.adaptmesh_ingestion.test_ingestion_in_memory import Outputs
from tests.unit.adaptmesh_ingestion.factories import DOMAIN, batch, recipe


def resident_settings(tmp_path: Path) -> IngestionSettings:
    return IngestionSettings(
        artifact_root=f"file://{tmp_path}/default",
        artifact_roots={"eu": f"file://{tmp_path}/eu", "us": f"file://{tmp_path}/us"},
        state_dir=tmp_path / "state",
        provision_topics=False,
    )


def files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


async def test_data_tagged_with_another_residency_is_dead_lettered(tmp_path: Path) -> None:
    app = build_app(resident_settings(tmp_path))
    out = Outputs(app)
    async with TestKafkaBroker(app.broker):
        await app.publish(recipe().model_copy(update={"residency": "eu"}))
        await app.publish(
            batch(("wheat exports fell", "grain")).model_copy(update={"residency": "us"})
        )
        await app.publish(
            FeedbackSubmitted(
                domain=DOMAIN, prediction_id="p1", text="oil", true_label="crude", residency="us"
            )
        )
        await app.publish(recipe(version="r2").model_copy(update={"residency": "us"}))
        tagged = await app.publish(
            batch(("oil output rose", "crude"), batch_id="b2").model_copy(
                update={"residency": "eu"}
            )
        )
        untagged = await app.publish(batch(("trade talks", "trade"), batch_id="b3"))

    mismatch_batch, mismatch_feedback, moved_recipe = out.letters
    assert [letter.reason_code for letter in out.letters] == ["rejected"] * 3
    assert "batch 'b1'" in mismatch_batch.reason
    for letter in (mismatch_batch, mismatch_feedback):
        assert (
            "residency mismatch: the data is tagged residency 'us' but domain 'fin-news' keeps "
            "its data in 'eu'; nothing was ingested"
        ) in letter.reason
    assert "move the domain's residency from 'eu' to 'us'" in moved_recipe.reason
    # The refused changes left no version: the accepted ones chain on the recipe's.
    first, second, third = out.versions
    assert second.parent_version == first.dataset_version
    assert second.cause_event_ids == (tagged.id,)
    assert third.cause_event_ids == (untagged.id,)
    assert second.counts.train + second.counts.eval == 1
    assert {version.residency for version in out.versions} == {"eu"}
    # Every dataset version of the eu domain is under the eu root, none anywhere else.
    for version in out.versions:
        assert version.artifact.uri.startswith(f"file://{tmp_path}/eu/")
    assert len(files_under(tmp_path / "eu")) == 3
    assert files_under(tmp_path / "us") == []
    assert files_under(tmp_path / "default") == []


async def test_a_residency_without_an_artifact_root_starts_no_domain(tmp_path: Path) -> None:
    app = build_app(resident_settings(tmp_path))
    out = Outputs(app)
    async with TestKafkaBroker(app.broker):
        await app.publish(recipe().model_copy(update={"residency": "ch"}))
        await app.publish(
            batch(("wheat exports fell", "grain")).model_copy(update={"residency": "ch"})
        )
    assert out.versions == []
    no_root, no_recipe = out.letters
    assert no_root.reason_code == "rejected"
    assert "no artifact root is configured for residency 'ch' (configured: eu, us" in (
        no_root.reason
    )
    assert "has no recipe yet" in no_recipe.reason
    assert files_under(tmp_path / "default") == []


async def test_tagged_data_for_a_domain_without_residency_is_refused(tmp_path: Path) -> None:
    app = build_app(resident_settings(tmp_path))
    out = Outputs(app)
    async with TestKafkaBroker(app.broker):
        await app.publish(recipe())
        await app.publish(
            batch(("wheat exports fell", "grain")).model_copy(update={"residency": "eu"})
        )
    (letter,) = out.letters
    assert "keeps its data in no residency (the default artifact root)" in letter.reason
    (version,) = out.versions
    assert version.residency is None
    assert version.artifact.uri.startswith(f"file://{tmp_path}/default/")
