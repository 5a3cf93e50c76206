"""`adaptmesh report` and `adaptmesh audit` on a real broker.

Gate events go on a private `mesh.gate.v1` with their JSON and HTML reports in a temporary
artifact store: an older rejection without an HTML report, an approval, a rollback, a refused
rollback, a decision about another domain, a decision in a transaction that was aborted (which
a read_committed reader never sees) and, last, a rejection written in a committed transaction
(so the log ends with a commit marker, an offset no record has).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from adaptmesh_cli.main import main
from adaptmesh_gate.report_html import render_report
from adaptmesh_kit import ArtifactStore, create_app
from adaptmesh_schemas import MeshEvent, Stream, topic_name
from adaptmesh_schemas.documents import GateReport
from adaptmesh_schemas.events import GateApproved, GateRejected, RollbackRefused, RolledBack
from adaptmesh_schemas.values import ArtifactRef, Rollback
from tests.meshtest import mesh_settings, record_of
from tests.unit.adaptmesh_gate.test_report_html import legacy_report, realistic_report

pytestmark = pytest.mark.kafka


def decision(
    report: GateReport, store: ArtifactStore, *, html: bool
) -> GateApproved | GateRejected:
    """The event the gate publishes about `report`, with its reports stored in `store`."""
    kind = GateApproved if report.approved else GateRejected
    champion = report.champion
    return kind(
        domain=report.domain,
        model_version=report.candidate.model_version,
        champion_version=champion.model_version if champion else None,
        macro_f1=report.candidate.macro_f1,
        champion_macro_f1=champion.macro_f1 if champion else None,
        must_pass_passed=sum(o.passed for o in report.candidate.must_pass),
        must_pass_total=len(report.candidate.must_pass),
        per_label=report.candidate.per_label,
        reasons=report.reasons,
        report=store.put_document(report),
        report_html=store.put_bytes(render_report(report).encode()) if html else None,
    )


async def run_cli(*argv: str) -> int:
    # main() runs its own event loop: off this one.
    return await asyncio.to_thread(main, list(argv))


async def test_report_and_audit_read_the_gate_topic_and_the_stored_reports(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mesh = mesh_settings(kafka_bootstrap, unique_name, tmp_path)
    for name, value in (
        ("MESH_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap),
        ("MESH_TOPIC_PREFIX", mesh.topic_prefix),
        ("MESH_ARTIFACT_ROOT", mesh.artifact_root),
    ):
        monkeypatch.setenv(name, value)
    store = ArtifactStore(mesh.artifact_root)
    domain = f"fin-{unique_name}"

    first = legacy_report().model_copy(update={"domain": domain, "approved": False})
    approved = realistic_report(approved=True).model_copy(
        update={"domain": domain, "checks": (), "comparison": None}
    )
    approved = approved.model_copy(
        update={"candidate": approved.candidate.model_copy(update={"model_version": "m-0008"})}
    )
    latest = realistic_report().model_copy(update={"domain": domain})
    rollback = RolledBack(
        domain=domain,
        model_version="m-0005",
        artifact=ArtifactRef(uri=f"{mesh.artifact_root}/m-0005/manifest.json", sha256="c" * 64),
        rollback=Rollback(
            replaced_version="m-0008", requested_by="alice", reason="trade labels", request_id="r1"
        ),
        promotion=3,
    )
    refused = RollbackRefused(
        domain=domain,
        requested_version="m-0001",
        current_version="m-0005",
        requested_by="bob",
        request_reason="back to the first",
        request_id="r2",
        reasons=("m-0001 was never approved",),
    )
    other = decision(
        realistic_report().model_copy(update={"domain": f"x-{unique_name}"}), store, html=True
    )
    ghost = decision(approved, store, html=True).model_copy(update={"model_version": "m-ghost"})

    async with create_app(mesh, "gate-test") as app:
        for event in (
            decision(first, store, html=False),
            decision(approved, store, html=True),
            rollback,
            refused,
            other,
        ):
            await app.publish(event)
    topic = topic_name(Stream.GATE, mesh.topic_prefix)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"gate-test-{unique_name}"
    )
    await producer.start()
    try:

        async def send(event: MeshEvent) -> None:
            headers, body, _ = record_of(event)
            await producer.send_and_wait(topic, body, key=domain.encode(), headers=headers)

        await producer.begin_transaction()
        await send(ghost)
        await producer.abort_transaction()
        async with producer.transaction():
            await send(decision(latest, store, html=True))
    finally:
        await producer.stop()
    capsys.readouterr()

    # The domain's latest decision, its HTML written where asked.
    page = tmp_path / "out" / "latest.html"
    assert await run_cli("report", domain, "--html", str(page)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{domain}: m-0007 REJECTED at ")
    assert out[0].endswith("(dataset ds-0012)")
    assert out[3].startswith("  macro-F1 difference -0.011 [-0.048, +0.026] (each bound one-sided ")
    assert "  ✗ label-regression: label trade: F1 difference upper bound -0.031 < -0.020" in out
    assert "  ✓ floor: macro-F1 0.835 >= floor 0.500" in out
    assert out[-1] == f"HTML report written to {page}"
    assert page.read_text(encoding="utf-8") == render_report(latest)

    # A model version, the page at the default path in the working directory.
    monkeypatch.chdir(tmp_path)
    assert await run_cli("report", "m-0008") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{domain}: m-0008 APPROVED at ")
    assert out[-1] == f"HTML report written to {domain}-m-0008-gate-report.html"
    assert (tmp_path / f"{domain}-m-0008-gate-report.html").read_text() == render_report(approved)

    # An older decision without a page.
    assert await run_cli("report", "m-0001") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{domain}: m-0001 REJECTED at ")
    # Published with today's gate.rejected, only its page left out.
    version = GateRejected.schema_version()
    assert out[-1].startswith(f"this decision (gate.rejected {version}) has no HTML report")

    # What was aborted never happened; what matches nothing says so.
    assert await run_cli("report", "m-ghost") == 2
    assert capsys.readouterr().out == (
        f"no gate decision about a model version or domain 'm-ghost' on {topic}\n"
    )

    assert await run_cli("audit", domain) == 0
    lines = capsys.readouterr().out.splitlines()
    headlines = [line for line in lines if not line.startswith("    - ")]
    assert [line.split("  ")[1:3] for line in headlines] == [
        ["gate.rejected", "m-0001"],
        ["gate.approved", "m-0008"],
        ["gate.rolled_back", "m-0005"],
        ["gate.rollback_refused", "requested m-0001"],
        ["gate.rejected", "m-0007"],
    ]
    assert "    - requested by alice: trade labels" in lines
    assert "    - m-0001 was never approved" in lines
    for reason in (*first.reasons, *latest.reasons):
        assert f"    - {reason}" in lines
    assert not any("m-ghost" in line for line in lines)

    assert await run_cli("audit", f"nobody-{unique_name}") == 2
    assert (
        capsys.readouterr().out
        == f"no gate decision for domain 'nobody-{unique_name}' on {topic}\n"
    )
