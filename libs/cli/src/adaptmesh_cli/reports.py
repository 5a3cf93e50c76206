"""`adaptmesh report` and `adaptmesh audit`: the gate's decisions, read back from its topic.

`report DOMAIN|MODEL_VERSION` finds the decision (`gate.approved` / `gate.rejected`) about that
model version or, failing that, the latest one for that domain; prints a summary (decision,
versions, both macro-F1s, the paired interval of the difference, every check with ✓/✗ and its
reason) and writes the HTML report the gate stored beside the JSON one to a file. The JSON report
and the HTML page are read from the artifact store, digest-verified, through the claim checks
the event carries. A decision written before the gate stored HTML has none to write: the CLI
does not depend on the gate's package, so it does not render one itself and says so.

`audit DOMAIN` lists every decision about the domain in log order: approvals, rejections,
rollbacks and refused rollbacks, each with its time, versions, verdict and every reason line.

Both read `mesh.gate.v1` from the beginning to where it ends now, as a `read_committed`
consumer (`read_topic`): a decision whose transaction was aborted never happened.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Callable, Sequence
from datetime import UTC
from pathlib import Path

from adaptmesh_cli.logs import read_topic
from adaptmesh_kit import ArtifactError, ArtifactStore, MeshSettings
from adaptmesh_schemas import (
    Envelope,
    Stream,
    topic_name,
)
from adaptmesh_schemas.documents import GateReport
from adaptmesh_schemas.events import GateApproved, GateRejected, RollbackRefused, RolledBack
from adaptmesh_schemas.versioning import parse_dataschema

EXIT_FOUND, EXIT_FAILED, EXIT_NOT_FOUND = 0, 1, 2
"""Exit codes: a decision was found (and its HTML written, when it has one); an artifact could
not be read; nothing matched."""

GateDecision = GateApproved | GateRejected
GateRecord = GateApproved | GateRejected | RolledBack | RollbackRefused
Say = Callable[[str], None]


# --- reading ---------------------------------------------------------------------------------


async def read_gate_log(settings: MeshSettings) -> list[tuple[Envelope, GateRecord]]:
    """The gate's decisions, rollbacks and refused rollbacks, in log order."""
    return [
        (envelope, event)
        for envelope, event in await read_topic(settings, Stream.GATE)
        if isinstance(event, GateApproved | GateRejected | RolledBack | RollbackRefused)
    ]


# --- choosing --------------------------------------------------------------------------------


def find_decision(
    records: Sequence[tuple[Envelope, GateRecord]], target: str
) -> tuple[Envelope, GateDecision] | None:
    """The decision about model version `target` or, when no decision names that version, the
    latest decision for domain `target` (the last in log order, either way)."""
    decisions = [
        (envelope, event)
        for envelope, event in records
        if isinstance(event, GateApproved | GateRejected)
    ]
    for matches in (
        [pair for pair in decisions if pair[1].model_version == target],
        [pair for pair in decisions if pair[1].domain == target],
    ):
        if matches:
            return matches[-1]
    return None


def html_path_for(event: GateDecision) -> Path:
    """`./<domain>-<model_version>-gate-report.html`, with anything odd in the version made
    safe for a file name."""
    version = re.sub(r"[^A-Za-z0-9._-]", "_", event.model_version)
    return Path(f"{event.domain}-{version}-gate-report.html")


# --- formatting (pure) -----------------------------------------------------------------------


def when(envelope: Envelope) -> str:
    return envelope.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _verdict(event: GateDecision) -> str:
    return "APPROVED" if isinstance(event, GateApproved) else "REJECTED"


def summary_lines(envelope: Envelope, event: GateDecision, report: GateReport | None) -> list[str]:
    """What `adaptmesh report` prints about one decision.

    `report` is the stored JSON report, when it could be read: it adds the paired interval and
    the verdict of every check; without it the event's reason lines are printed as they are.
    """
    dataset = f" (dataset {report.dataset_version})" if report is not None else ""
    lines = [
        f"{event.domain}: {event.model_version} {_verdict(event)} at {when(envelope)}{dataset}",
        f"  candidate {event.model_version}: macro-F1 {_score(event.macro_f1)}",
        (
            f"  champion  {event.champion_version}: macro-F1 {_score(event.champion_macro_f1)}"
            if event.champion_version is not None
            else "  champion  none (first model of the domain)"
        ),
    ]
    comparison = report.comparison if report is not None else None
    if comparison is not None:
        interval = comparison.macro_f1_difference
        lines.append(
            f"  macro-F1 difference {interval.estimate:+.3f} "
            f"[{interval.low:+.3f}, {interval.high:+.3f}] "
            f"(each bound one-sided at {comparison.confidence * 100:.6g}%, paired bootstrap "
            f"over {comparison.examples} examples; resolution ±{comparison.resolution:.3f}); "
            "McNemar: candidate alone "
            f"right {comparison.candidate_only_right}, champion alone right "
            f"{comparison.champion_only_right}"
        )
        if comparison.too_small:
            lines.append(f"  ⚠ eval split too small: {comparison.too_small}")
    if event.must_pass_total:
        lines.append(f"  must-pass {event.must_pass_passed}/{event.must_pass_total}")
    if report is not None and report.checks:
        lines.extend(
            f"  {'✓' if check.passed else '✗'} {check.check}: {check.reason}"
            for check in report.checks
        )
    else:
        # Without per-check verdicts: an approval passed every check; a rejection's lines
        # mix passed and failed ones.
        mark = "✓" if isinstance(event, GateApproved) else "-"
        lines.extend(f"  {mark} {reason}" for reason in event.reasons)
    return lines


def audit_lines(records: Sequence[tuple[Envelope, GateRecord]]) -> list[str]:
    """What `adaptmesh audit` prints: one line per record, then its reasons indented."""
    lines: list[str] = []
    for envelope, event in records:
        at = when(envelope)
        if isinstance(event, GateApproved | GateRejected):
            champion = event.champion_version or "none"
            lines.append(
                f"{at}  {event.event_name}  {event.model_version}  "
                f"champion {champion}  {_verdict(event)}  macro-F1 {_score(event.macro_f1)} vs "
                f"{_score(event.champion_macro_f1)}, must-pass "
                f"{event.must_pass_passed}/{event.must_pass_total}"
            )
            lines.extend(f"    - {reason}" for reason in event.reasons)
        elif isinstance(event, RolledBack):
            rollback = event.rollback
            lines.append(
                f"{at}  gate.rolled_back  {event.model_version}  replaced "
                f"{rollback.replaced_version or 'none'}  ROLLED BACK  promotion {event.promotion}"
            )
            lines.append(f"    - requested by {rollback.requested_by}: {rollback.reason}")
        else:
            lines.append(
                f"{at}  gate.rollback_refused  requested "
                f"{event.requested_version or 'the previous champion'}  current "
                f"{event.current_version or 'none'}  REFUSED"
            )
            lines.append(f"    - requested by {event.requested_by}: {event.request_reason}")
            lines.extend(f"    - {reason}" for reason in event.reasons)
    return lines


# --- the commands ----------------------------------------------------------------------------


def add_report_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `report` and `audit` subcommands of `adaptmesh`."""
    report = commands.add_parser(
        "report",
        help="summarise the gate's decision about a model version (or a domain's latest) and "
        "write its HTML report",
    )
    report.add_argument("target", metavar="DOMAIN|MODEL_VERSION")
    report.add_argument(
        "--html",
        type=Path,
        metavar="PATH",
        help="where to write the HTML report (default: ./<domain>-<version>-gate-report.html)",
    )
    audit = commands.add_parser(
        "audit", help="every gate decision, rollback and refused rollback of a domain"
    )
    audit.add_argument("domain")


async def run_report(
    settings: MeshSettings, target: str, *, html: Path | None = None, say: Say = print
) -> int:
    """Print the decision about `target` (a model version or a domain) and write its HTML."""
    records = await read_gate_log(settings)
    found = find_decision(records, target)
    topic = topic_name(Stream.GATE, settings.topic_prefix)
    if found is None:
        say(f"no gate decision about a model version or domain {target!r} on {topic}")
        return EXIT_NOT_FOUND
    envelope, event = found
    store = ArtifactStore(settings.artifact_root, residency_roots=settings.artifact_roots)
    report: GateReport | None = None
    try:
        report = await asyncio.to_thread(store.get_document, event.report, GateReport)
    except ArtifactError as error:
        say(f"(the JSON report could not be read, summary from the event only: {error})")
    for line in summary_lines(envelope, event, report):
        say(line)
    say(f"JSON report: {event.report.uri}")
    if event.report_html is None:
        name, major, minor = parse_dataschema(envelope.dataschema)
        say(
            f"this decision ({name} {major}.{minor}) has no HTML report stored (gates before "
            "gate events 1.1 wrote none), and this command does not render one"
        )
        return EXIT_FOUND
    try:
        page = await asyncio.to_thread(store.get_bytes, event.report_html)
    except ArtifactError as error:
        say(f"the HTML report could not be read: {error}")
        return EXIT_FAILED
    path = html if html is not None else html_path_for(event)
    await asyncio.to_thread(_write, path, page)
    say(f"HTML report written to {path}")
    return EXIT_FOUND


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def run_audit(settings: MeshSettings, domain: str, *, say: Say = print) -> int:
    """Print every decision, rollback and refused rollback of `domain`, in log order."""
    records = [pair for pair in await read_gate_log(settings) if pair[1].domain == domain]
    if not records:
        topic = topic_name(Stream.GATE, settings.topic_prefix)
        say(f"no gate decision for domain {domain!r} on {topic}")
        return EXIT_NOT_FOUND
    for line in audit_lines(records):
        say(line)
    return EXIT_FOUND
