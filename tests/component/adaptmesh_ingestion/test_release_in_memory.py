"""A fleet-wide base-model release on FastStream's in-memory broker: fanned out per domain,
each move applied as an ordinary `change.base_model`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from faststream.kafka import TestKafkaBroker

from adaptmesh_ingestion.app import build_app
from adaptmesh_ingestion.settings import IngestionSettings
from adaptmesh_schemas import FLEET_DOMAIN
from adaptmesh_schemas.events import BaseModelChanged, BaseModelReleased
from adaptmesh_schemas.values import BaseModelSpec
from tests.component.adaptmesh_ingestion.test_ingestion_in_memory import Outputs
from tests.unit.adaptmesh_ingestion.base_model_files import cached_hub_models
from tests.unit.adaptmesh_ingestion.factories import recipe

A = BaseModelSpec(model_id="org/base-a")
B = BaseModelSpec(model_id="org/base-b")
C = BaseModelSpec(model_id="org/base-c", revision="2")


@pytest.fixture(autouse=True)
def base_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingestion admits only base models that resolve: A, B and C are in a local cache."""
    cached_hub_models(tmp_path / "models", monkeypatch, A, B, C)


def settings(tmp_path: Path) -> IngestionSettings:
    return IngestionSettings(
        artifact_root=f"file://{tmp_path}/artifacts",
        state_dir=tmp_path / "state",
        provision_topics=False,
        ingestion_fleet_sync_seconds=0,  # no log to measure in memory
    )


def release(*domains: str, reason: str = "newer base") -> BaseModelReleased:
    return BaseModelReleased(old_base=A, new_base=C, domains=domains, reason=reason)


async def test_a_release_moves_every_domain_on_the_old_base(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    out = Outputs(app)
    async with TestKafkaBroker(app.broker):
        for domain, base in (("d1", A), ("d2", A), ("d3", B)):
            await app.publish(recipe(domain=domain, base_model=base))
        sent = await app.publish(release())
    assert out.letters == []
    recipes, moved = out.versions[:3], out.versions[3:]
    assert sorted(v.domain for v in moved) == ["d1", "d2"]
    for v in moved:
        assert v.base_model == C
        assert v.change_kind == "base-model"
        assert v.cause_event_ids == (f"{sent.id}/{v.domain}",)
        [parent] = [r for r in recipes if r.domain == v.domain]
        assert v.parent_version == parent.dataset_version
        assert v.labels == parent.labels


async def test_a_selector_moves_only_the_named_domains_on_the_old_base(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = build_app(settings(tmp_path))
    out = Outputs(app)
    caplog.set_level(logging.WARNING, logger="adaptmesh_ingestion")
    async with TestKafkaBroker(app.broker):
        for domain, base in (("d1", A), ("d2", A), ("d3", B)):
            await app.publish(recipe(domain=domain, base_model=base))
        await app.publish(release("d1", "d3", "nowhere"))
    assert out.letters == []
    [moved] = out.versions[3:]
    assert moved.domain == "d1"
    assert moved.base_model == C
    logged = caplog.text
    assert "passes over d3: on org/base-b, not org/base-a" in logged
    assert "passes over nowhere: no such domain" in logged


async def test_a_release_matching_nothing_is_dead_lettered_with_the_reason(
    tmp_path: Path,
) -> None:
    app = build_app(settings(tmp_path))
    out = Outputs(app)
    async with TestKafkaBroker(app.broker):
        await app.publish(recipe(domain="d3", base_model=B))
        await app.publish(release())
        await app.publish(release("d3", "nowhere"))
    assert len(out.versions) == 1
    everyone, selected = out.letters
    assert everyone.reason_code == selected.reason_code == "rejected"
    assert "matches no domain" in everyone.reason
    assert "org/base-a is not the base model of any of the 1 known domains" in everyone.reason
    assert "d3: on org/base-b, not org/base-a; nowhere: no such domain" in selected.reason


async def test_republished_moves_are_dropped_and_the_fleet_key_names_no_domain(
    tmp_path: Path,
) -> None:
    app = build_app(settings(tmp_path))
    out = Outputs(app)
    async with TestKafkaBroker(app.broker):
        await app.publish(recipe(domain="d1", base_model=A))
        sent = await app.publish(release())
        # What a redelivered release publishes: the same move (byte for byte), with the same id.
        move = BaseModelChanged(
            domain="d1", base_model=C, reason=f"base model release {sent.id}: newer base"
        )
        await app.publish(move, event_id=f"{sent.id}/d1")
        await app.publish(recipe(domain=FLEET_DOMAIN))
    assert [v.change_kind for v in out.versions] == ["recipe", "base-model"]
    [letter] = out.letters
    assert letter.reason_code == "rejected"
    assert "reserved for fleet-wide events" in letter.reason
