"""`adaptmesh report` and `adaptmesh audit`: choosing the decision, what is printed, and what
is written (the topic is replaced by a list here; tests/integration reads a real one)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adaptmesh_cli import reports
from adaptmesh_cli.reports import (
    EXIT_FAILED,
    EXIT_FOUND,
    EXIT_NOT_FOUND,
    GateRecord,
    add_report_commands,
    audit_lines,
    find_decision,
    html_path_for,
    run_audit,
    run_report,
    summary_lines,
)
from adaptmesh_kit import ArtifactStore, MeshSettings
from adaptmesh_schemas import Envelope
from adaptmesh_schemas.documents import GateReport
from adaptmesh_schemas.events import GateApproved, GateRejected, RollbackRefused, RolledBack
from adaptmesh_schemas.values import ArtifactRef, Rollback
from tests.unit.adaptmesh_gate.test_report_html import legacy_report, realistic_report

REF = ArtifactRef(uri="file:///store/sha256/ab/report.json", sha256="b" * 64)


def at(event: GateRecord, minute: int, *, version: str | None = None) -> Envelope:
    envelope = Envelope.for_event(event, source="urn:test:gate")
    update: dict[str, object] = {"time": datetime(2025, 3, 14, 9, minute, 5, tzinfo=UTC)}
    if version is not None:
        update["dataschema"] = f"urn:adaptmesh:schema:{event.event_name}:{version}"
    return envelope.model_copy(update=update)


def rejected(
    report: GateReport, ref: ArtifactRef = REF, html: ArtifactRef | None = None
) -> GateRejected:
    assert report.champion is not None
    return GateRejected(
        domain=report.domain,
        model_version=report.candidate.model_version,
        champion_version=report.champion.model_version,
        macro_f1=report.candidate.macro_f1,
        champion_macro_f1=report.champion.macro_f1,
        must_pass_passed=sum(o.passed for o in report.candidate.must_pass),
        must_pass_total=len(report.candidate.must_pass),
        reasons=report.reasons,
        report=ref,
        report_html=html,
    )


APPROVED = GateApproved(
    domain="fin-news",
    model_version="m-0005",
    champion_version=None,
    macro_f1=0.848,
    must_pass_passed=2,
    must_pass_total=2,
    reasons=("macro-F1 0.848 >= floor 0.500", "no champion for this domain"),
    report=REF,
)
ROLLED_BACK = RolledBack(
    domain="fin-news",
    model_version="m-0005",
    artifact=ArtifactRef(uri="file:///store/models/m-0005/manifest.json", sha256="c" * 64),
    rollback=Rollback(
        replaced_version="m-0008",
        requested_by="alice",
        reason="complaints about trade labels",
        request_id="req-1",
    ),
    promotion=4,
)
REFUSED = RollbackRefused(
    domain="fin-news",
    requested_version="m-0003",
    current_version="m-0005",
    requested_by="bob",
    request_reason="try the old one",
    request_id="req-2",
    reasons=("m-0003 was never approved for fin-news",),
)


def test_a_decision_is_found_by_model_version_else_the_domains_latest() -> None:
    first = rejected(realistic_report())
    later = first.model_copy(update={"model_version": "m-0009"})
    other = first.model_copy(update={"domain": "other", "model_version": "m-0010"})
    records: list[tuple[Envelope, GateRecord]] = [
        (at(APPROVED, 1), APPROVED),
        (at(first, 2), first),
        (at(ROLLED_BACK, 3), ROLLED_BACK),
        (at(later, 4), later),
        (at(other, 5), other),
    ]
    assert find_decision(records, "m-0007") == records[1]
    assert find_decision(records, "m-0005") == records[0]  # a rollback is not a decision
    assert find_decision(records, "fin-news") == records[3]
    assert find_decision(records, "other") == records[4]
    assert find_decision(records, "nobody") is None
    # A version named like a domain is still found as the version first.
    named_like = APPROVED.model_copy(update={"model_version": "other"})
    with_it = [(at(named_like, 0), named_like), *records]
    assert find_decision(with_it, "other") == with_it[0]


def test_the_summary_shows_both_scores_the_paired_interval_and_every_check() -> None:
    report = realistic_report()
    event = rejected(report)
    lines = summary_lines(at(event, 26), event, report)
    assert report.champion is not None
    assert lines == [
        "fin-news: m-0007 REJECTED at 2025-03-14 09:26:05Z (dataset ds-0012)",
        f"  candidate m-0007: macro-F1 {report.candidate.macro_f1:.3f}",
        f"  champion  m-0005: macro-F1 {report.champion.macro_f1:.3f}",
        "  macro-F1 difference -0.011 [-0.048, +0.026] (each bound one-sided at 95%, paired "
        "bootstrap over 66 examples; resolution ±0.037); McNemar: candidate alone right 5, "
        "champion alone right 5",
        "  ⚠ eval split too small: the macro-F1 interval (±0.037) is wider than the margin "
        "0.020: about 230 eval examples would decide it",
        "  must-pass 1/2",
        "  ✓ floor: macro-F1 0.835 >= floor 0.500",
        "  ✗ non-inferiority: macro-F1 difference -0.011 [-0.048, +0.026]: lower bound below "
        "-margin 0.020",
        "  ✗ label-regression: label trade: F1 difference upper bound -0.031 < -0.020",
        "  ✓ label-floor: grain F1 0.950 >= 0.600",
        "  ✓ slice: slice regulation: accuracy 0.857 >= 0.800",
        "  ✗ must-pass: must-pass 1/2: case trade-2 (rule MiFID-II/Art-24) expected trade, "
        "got money-fx",
        "  ✓ info: 4 labels compared",
    ]


def test_without_the_stored_report_the_events_reasons_are_printed() -> None:
    event = rejected(realistic_report())
    lines = summary_lines(at(event, 26), event, None)
    assert lines[0] == "fin-news: m-0007 REJECTED at 2025-03-14 09:26:05Z"
    assert [line for line in lines if line.startswith("  - ")] == [
        f"  - {reason}" for reason in event.reasons
    ]
    approved = summary_lines(at(APPROVED, 1), APPROVED, legacy_report())
    assert approved[2] == "  champion  none (first model of the domain)"
    assert approved[-2:] == ["  ✓ macro-F1 0.848 >= floor 0.500", "  ✓ no champion for this domain"]


def test_the_audit_lists_every_record_with_its_reasons() -> None:
    event = rejected(realistic_report())
    lines = audit_lines(
        [
            (at(APPROVED, 1), APPROVED),
            (at(event, 2), event),
            (at(ROLLED_BACK, 3), ROLLED_BACK),
            (at(REFUSED, 4), REFUSED),
        ]
    )
    assert lines[:3] == [
        "2025-03-14 09:01:05Z  gate.approved  m-0005  champion none  APPROVED  macro-F1 0.848 "
        "vs n/a, must-pass 2/2",
        "    - macro-F1 0.848 >= floor 0.500",
        "    - no champion for this domain",
    ]
    assert lines[3].startswith("2025-03-14 09:02:05Z  gate.rejected  m-0007  champion m-0005  ")
    assert "REJECTED" in lines[3]
    assert lines[4 : 4 + len(event.reasons)] == [f"    - {r}" for r in event.reasons]
    assert lines[4 + len(event.reasons) :] == [
        "2025-03-14 09:03:05Z  gate.rolled_back  m-0005  replaced m-0008  ROLLED BACK  promotion 4",
        "    - requested by alice: complaints about trade labels",
        "2025-03-14 09:04:05Z  gate.rollback_refused  requested m-0003  current m-0005  REFUSED",
        "    - requested by bob: try the old one",
        "    - m-0003 was never approved for fin-news",
    ]


def test_the_default_html_path_names_domain_and_version_safely() -> None:
    assert html_path_for(APPROVED) == Path("fin-news-m-0005-gate-report.html")
    odd = APPROVED.model_copy(update={"model_version": "../m 1/x"})
    assert html_path_for(odd) == Path("fin-news-.._m_1_x-gate-report.html")


def test_the_commands_parse_their_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_report_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", "fin-news", "--html", "out/r.html"])
    assert (args.command, args.target, args.html) == ("report", "fin-news", Path("out/r.html"))
    args = parser.parse_args(["report", "m-0007"])
    assert args.html is None
    assert parser.parse_args(["audit", "fin-news"]).domain == "fin-news"


@pytest.fixture
def settings(tmp_path: Path) -> MeshSettings:
    return MeshSettings(artifact_root=(tmp_path / "artifacts").as_uri(), topic_prefix="t.")


def _serve(monkeypatch: pytest.MonkeyPatch, records: list[tuple[Envelope, GateRecord]]) -> None:
    async def read_gate_log(_settings: MeshSettings) -> list[tuple[Envelope, GateRecord]]:
        return records

    monkeypatch.setattr(reports, "read_gate_log", read_gate_log)


async def test_report_writes_the_stored_html_to_the_default_path(
    settings: MeshSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(settings.artifact_root)
    report = realistic_report()
    page = b"<!DOCTYPE html><title>the stored page</title>"
    event = rejected(report, store.put_document(report), store.put_bytes(page))
    _serve(monkeypatch, [(at(event, 26), event)])
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    assert await run_report(settings, "fin-news", say=lines.append) == EXIT_FOUND
    assert (tmp_path / "fin-news-m-0007-gate-report.html").read_bytes() == page
    assert lines[0] == "fin-news: m-0007 REJECTED at 2025-03-14 09:26:05Z (dataset ds-0012)"
    assert lines[-1] == "HTML report written to fin-news-m-0007-gate-report.html"
    assert "  ✗ label-regression: label trade: F1 difference upper bound -0.031 < -0.020" in lines

    lines.clear()
    target = tmp_path / "reports" / "x.html"
    assert await run_report(settings, "m-0007", html=target, say=lines.append) == EXIT_FOUND
    assert target.read_bytes() == page
    assert lines[-1] == f"HTML report written to {target}"


async def test_report_of_an_older_decision_says_it_has_no_html(
    settings: MeshSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = APPROVED  # its report ref points at nothing in this store
    _serve(monkeypatch, [(at(event, 1, version="1.0"), event)])
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    assert await run_report(settings, "m-0005", say=lines.append) == EXIT_FOUND
    assert lines[0].startswith("(the JSON report could not be read, summary from the event only")
    assert lines[1] == "fin-news: m-0005 APPROVED at 2025-03-14 09:01:05Z"
    assert lines[-1] == (
        "this decision (gate.approved 1.0) has no HTML report stored (gates before gate events "
        "1.1 wrote none), and this command does not render one"
    )
    assert await asyncio.to_thread(lambda: list(tmp_path.glob("*.html"))) == []


async def test_a_tampered_html_report_is_refused(
    settings: MeshSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(settings.artifact_root)
    report = realistic_report()
    html = store.put_bytes(b"<p>real</p>")
    event = rejected(
        report, store.put_document(report), html.model_copy(update={"sha256": "0" * 64})
    )
    _serve(monkeypatch, [(at(event, 26), event)])
    lines: list[str] = []
    target = tmp_path / "r.html"
    assert await run_report(settings, "fin-news", html=target, say=lines.append) == EXIT_FAILED
    assert lines[-1].startswith("the HTML report could not be read: artifact ")
    assert not target.exists()


async def test_nothing_to_report_or_audit_exits_non_zero_with_a_message(
    settings: MeshSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve(monkeypatch, [(at(ROLLED_BACK, 3), ROLLED_BACK)])
    lines: list[str] = []
    assert await run_report(settings, "fin-news", say=lines.append) == EXIT_NOT_FOUND
    assert lines == [
        "no gate decision about a model version or domain 'fin-news' on t.mesh.gate.v1"
    ]
    lines.clear()
    assert await run_audit(settings, "other", say=lines.append) == EXIT_NOT_FOUND
    assert lines == ["no gate decision for domain 'other' on t.mesh.gate.v1"]
    lines.clear()
    assert await run_audit(settings, "fin-news", say=lines.append) == EXIT_FOUND
    assert lines[0].startswith("2025-03-14 09:03:05Z  gate.rolled_back  m-0005")
