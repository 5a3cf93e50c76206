"""`adaptmesh lineage DOMAIN [MODEL_VERSION]`: where a model came from, as the log records it.

A tree from the model back to the change events that caused it:

    model.ready (version, promotion, artifact digest)
    └── gate decision (verdict, report)           same cause as the model.ready: the candidate
        └── model.trained (run, parent model, base model digest, dataset digest)
            ├── training.started (run id, when)
            └── retrain.requested (reason)        the model.trained's causation id
                └── dataset.versioned (digest, parent version)   the lineage's dataset version
                    ├── change events (type, ce_id, time, source)  the dataset's cause_event_ids
                    └── parent dataset version ... (and so on, to the domain's first version)

Every edge is a link an event carries — a causation id, a `cause_event_ids` entry, a run id, the
lineage's dataset version, a rollback's request id — never a guess by time. Each node shows the
trace id from its record's `traceparent`, so one change's trace can be found in a tracing UI.
A rollback's model.ready leads to its `gate.rolled_back` and `change.rollback`, then to the
approval of the model it put back. The building (`build_lineage`, pure) and the drawing
(`render_lineage`, rich) are apart, so the tree is tested on recorded events.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Sequence

from rich.console import Console, Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from adaptmesh_cli.status import MeshRecord, make_console, read_mesh, utc_text
from adaptmesh_kit import MeshSettings
from adaptmesh_schemas import Stream
from adaptmesh_schemas.events import (
    DataBatchSubmitted,
    DatasetVersioned,
    GateApproved,
    GateRejected,
    ModelReady,
    ModelTrained,
    RetrainRequested,
    RolledBack,
    TrainingStarted,
)
from adaptmesh_schemas.versioning import CE_TYPE_PREFIX

LINEAGE_STREAMS = (
    Stream.CHANGES,
    Stream.FEEDBACK,
    Stream.DATASETS,
    Stream.RETRAIN,
    Stream.TRAINING,
    Stream.GATE,
    Stream.MODELS_READY,
)
MAX_ANCESTORS = 20
"""Dataset versions followed back through their parents; a long-lived domain has many, and the
oldest say least about the model."""
MAX_CAUSES_SHOWN = 12
"""Change events listed under one dataset version (feedback can fold in hundreds)."""

EXIT_FOUND, EXIT_NOT_FOUND = 0, 2


@dataclasses.dataclass
class LineageNode:
    """One event of the tree: a title line, detail lines, and what it came from."""

    kind: str
    title: str
    details: list[str] = dataclasses.field(default_factory=list)
    trace_id: str | None = None
    children: list[LineageNode] = dataclasses.field(default_factory=list)

    def walk(self) -> Iterable[LineageNode]:
        yield self
        for child in self.children:
            yield from child.walk()


def _short(digest: str | None) -> str:
    return f"sha256:{digest[:16]}…" if digest else "unknown"


def _when(record: MeshRecord) -> str:
    return utc_text(record.envelope.time)


def _event_type(record: MeshRecord) -> str:
    return record.envelope.type.removeprefix(CE_TYPE_PREFIX)


class _Log:
    """The records, indexed by the keys events link each other with."""

    def __init__(self, records: Sequence[MeshRecord]) -> None:
        self.by_id: dict[str, MeshRecord] = {}
        self.by_cause: dict[str, list[MeshRecord]] = {}
        self.ready: list[MeshRecord] = []
        self.decisions: list[MeshRecord] = []
        self.trained: dict[str, MeshRecord] = {}
        self.started: dict[str, MeshRecord] = {}
        self.datasets: dict[tuple[str, str], MeshRecord] = {}
        for record in records:
            event = record.event
            self.by_id[record.envelope.id] = record
            if record.envelope.causationid is not None:
                self.by_cause.setdefault(record.envelope.causationid, []).append(record)
            if isinstance(event, ModelReady):
                self.ready.append(record)
            elif isinstance(event, GateApproved | GateRejected):
                self.decisions.append(record)
            elif isinstance(event, ModelTrained):
                self.trained[event.model_version] = record
            elif isinstance(event, TrainingStarted):
                self.started[event.run_id] = record
            elif isinstance(event, DatasetVersioned):
                self.datasets[(event.domain, event.dataset_version)] = record


def _production(log: _Log, domain: str) -> MeshRecord | None:
    """The domain's model.ready with the highest promotion (the last such in log order)."""
    best: MeshRecord | None = None
    for record in log.ready:
        event = record.event
        assert isinstance(event, ModelReady)
        if event.domain != domain:
            continue
        if best is None:
            best = record
            continue
        known = best.event
        assert isinstance(known, ModelReady)
        if (event.promotion or 0) >= (known.promotion or 0):
            best = record
    return best


def build_lineage(
    records: Sequence[MeshRecord], domain: str, model_version: str | None = None
) -> LineageNode | None:
    """The lineage tree of `model_version` (default: the domain's production model), or None
    when the log knows no such model of the domain."""
    log = _Log(records)
    if model_version is None:
        production = _production(log, domain)
        return _ready_node(log, production) if production is not None else None
    readies = [
        r
        for r in log.ready
        if r.event.domain == domain
        and isinstance(r.event, ModelReady)
        and r.event.model_version == model_version
    ]
    if readies:
        return _ready_node(log, readies[-1])
    decisions = [
        r
        for r in log.decisions
        if r.event.domain == domain
        and isinstance(r.event, GateApproved | GateRejected)
        and r.event.model_version == model_version
    ]
    if decisions:
        return _decision_node(log, decisions[-1])
    trained = log.trained.get(model_version)
    if trained is not None and trained.event.domain == domain:
        return _trained_node(log, trained)
    return None


def _ready_node(log: _Log, record: MeshRecord) -> LineageNode:
    event = record.event
    assert isinstance(event, ModelReady)
    promotion = f" promotion {event.promotion}" if event.promotion else ""
    node = LineageNode(
        "model.ready",
        f"model.ready  {event.model_version}{promotion}",
        [
            f"artifact {_short(event.artifact.sha256)}",
            f"  {event.artifact.uri}",
            f"{len(event.labels)} labels; at {_when(record)}; ce_id {record.envelope.id}",
            f"correlation id {record.envelope.correlationid}",
        ],
        record.trace_id,
    )
    if event.rollback is not None:
        # A rollback's promotion is caused by the change.rollback; the model it puts back has
        # its own approval, found by the version the rollback names.
        rollback = event.rollback
        node.details.append(
            f"rollback of {rollback.replaced_version or 'nothing'}, asked by "
            f"{rollback.requested_by}: {rollback.reason}"
        )
        for sibling in log.by_cause.get(record.envelope.causationid or "", []):
            if isinstance(sibling.event, RolledBack):
                node.children.append(_rolled_back_node(log, sibling))
        approvals = [
            r
            for r in log.decisions
            if isinstance(r.event, GateApproved)
            and r.event.domain == event.domain
            and r.event.model_version == event.model_version
        ]
        if approvals:
            node.children.append(_decision_node(log, approvals[-1]))
        return node
    cause = record.envelope.causationid
    decisions = [
        r
        for r in log.by_cause.get(cause or "", [])
        if isinstance(r.event, GateApproved) and r.event.model_version == event.model_version
    ]
    if decisions:
        node.children.append(_decision_node(log, decisions[-1]))
    elif cause in log.by_id:
        node.children.append(_trained_node(log, log.by_id[cause]))
    else:
        node.children.append(_missing("the gate decision and the model.trained", cause))
    return node


def _rolled_back_node(log: _Log, record: MeshRecord) -> LineageNode:
    event = record.event
    assert isinstance(event, RolledBack)
    node = LineageNode(
        "gate.rolled_back",
        f"gate.rolled_back  to {event.model_version}, replacing "
        f"{event.rollback.replaced_version or 'nothing'}",
        [f"at {_when(record)}; ce_id {record.envelope.id}"],
        record.trace_id,
    )
    request = log.by_id.get(event.rollback.request_id)
    if request is not None:
        node.children.append(_change_node(request))
    return node


def _decision_node(log: _Log, record: MeshRecord) -> LineageNode:
    event = record.event
    assert isinstance(event, GateApproved | GateRejected)
    verdict = "APPROVED" if isinstance(event, GateApproved) else "REJECTED"
    champion = event.champion_version or "none"
    champion_f1 = "" if event.champion_macro_f1 is None else f" vs {event.champion_macro_f1:.3f}"
    node = LineageNode(
        _event_type(record),
        f"{_event_type(record)}  {event.model_version} {verdict}",
        [
            f"macro-F1 {event.macro_f1:.3f}{champion_f1} (champion {champion}); must-pass "
            f"{event.must_pass_passed}/{event.must_pass_total}",
            f"report {_short(event.report.sha256)}",
            f"  {event.report.uri}",
            f"at {_when(record)}; ce_id {record.envelope.id}",
        ],
        record.trace_id,
    )
    cause = record.envelope.causationid
    trained = log.by_id.get(cause or "")
    if trained is not None and isinstance(trained.event, ModelTrained):
        node.children.append(_trained_node(log, trained))
    else:
        node.children.append(_missing("the model.trained", cause))
    return node


def _trained_node(log: _Log, record: MeshRecord) -> LineageNode:
    event = record.event
    assert isinstance(event, ModelTrained)
    lineage = event.lineage
    base = lineage.base_model.model_id
    node = LineageNode(
        "model.trained",
        f"model.trained  {event.model_version}  run {event.run_id}",
        [
            f"artifact {_short(event.artifact.sha256)}",
            f"parent model {lineage.parent_model_version or 'none'} (init {lineage.init}); "
            f"recipe {lineage.recipe_version}; seed {lineage.seed}",
            f"base model {base} {_short(lineage.base_model_sha256)}",
            f"dataset {lineage.dataset_version} {_short(lineage.dataset_sha256)}",
            f"at {_when(record)}; ce_id {record.envelope.id}",
        ],
        record.trace_id,
    )
    started = log.started.get(event.run_id)
    if started is not None:
        started_event = started.event
        assert isinstance(started_event, TrainingStarted)
        node.children.append(
            LineageNode(
                "training.started",
                f"training.started  run {event.run_id}",
                [
                    f"{started_event.workers} worker(s); at {_when(started)}; "
                    f"ce_id {started.envelope.id}"
                ],
                started.trace_id,
            )
        )
    request = log.by_id.get(record.envelope.causationid or "")
    dataset = log.datasets.get((event.domain, lineage.dataset_version))
    if request is not None and isinstance(request.event, RetrainRequested):
        request_node = _retrain_node(request)
        node.children.append(request_node)
        parent = request_node
    else:
        parent = node
    if dataset is None:
        parent.children.append(_missing(f"dataset version {lineage.dataset_version}", None))
    else:
        dataset_node = _dataset_node(log, dataset, MAX_ANCESTORS)
        assert isinstance(dataset.event, DatasetVersioned)
        if dataset.event.artifact.sha256 != lineage.dataset_sha256:
            dataset_node.details.append(
                "⚠ its digest differs from the one the model's lineage records"
            )
        parent.children.append(dataset_node)
    return node


def _retrain_node(record: MeshRecord) -> LineageNode:
    event = record.event
    assert isinstance(event, RetrainRequested)
    detail = f": {event.detail}" if event.detail else ""
    return LineageNode(
        "retrain.requested",
        f"retrain.requested  reason {event.reason.value}{detail}",
        [f"at {_when(record)}; ce_id {record.envelope.id}"],
        record.trace_id,
    )


def _dataset_node(log: _Log, record: MeshRecord, ancestors: int) -> LineageNode:
    event = record.event
    assert isinstance(event, DatasetVersioned)
    counts = event.counts
    node = LineageNode(
        "dataset.versioned",
        f"dataset.versioned  {event.dataset_version}  ({event.change_kind})",
        [
            f"manifest {_short(event.artifact.sha256)}; parent {event.parent_version or 'none'}",
            f"{counts.train} train / {counts.eval} eval examples, {counts.must_pass} must-pass; "
            f"recipe {event.recipe_version}, taxonomy {event.taxonomy_version}",
            f"at {_when(record)}; ce_id {record.envelope.id}",
        ],
        record.trace_id,
    )
    shown = event.cause_event_ids[:MAX_CAUSES_SHOWN]
    for cause_id in shown:
        cause = log.by_id.get(cause_id)
        node.children.append(_change_node(cause) if cause else _missing("change", cause_id))
    if len(event.cause_event_ids) > len(shown):
        node.children.append(
            LineageNode("more", f"… and {len(event.cause_event_ids) - len(shown)} more causes")
        )
    if event.parent_version is not None:
        parent = log.datasets.get((event.domain, event.parent_version))
        if parent is None:
            node.children.append(_missing(f"dataset version {event.parent_version}", None))
        elif ancestors <= 0:
            node.children.append(
                LineageNode("more", f"… older dataset versions from {event.parent_version}")
            )
        else:
            node.children.append(_dataset_node(log, parent, ancestors - 1))
    return node


def _change_node(record: MeshRecord) -> LineageNode:
    event = record.event
    what = ""
    if isinstance(event, DataBatchSubmitted):
        what = f"  batch {event.batch_id}, {len(event.examples)} examples"
    return LineageNode(
        _event_type(record),
        f"{_event_type(record)}{what}",
        [f"ce_id {record.envelope.id}; at {_when(record)}; source {record.envelope.source}"],
        record.trace_id,
    )


def _missing(what: str, event_id: str | None) -> LineageNode:
    named = f" ({event_id})" if event_id else ""
    return LineageNode("missing", f"{what}{named}: not on the mesh's topics (compacted or lost)")


def trace_ids(root: LineageNode) -> list[str]:
    """Every distinct trace id in the tree, in the order first met from the model down."""
    seen: dict[str, None] = {}
    for node in root.walk():
        if node.trace_id is not None:
            seen.setdefault(node.trace_id)
    return list(seen)


# --- drawing ---------------------------------------------------------------------------------

_STYLES = {
    "model.ready": "bold green",
    "gate.approved": "green",
    "gate.rejected": "red",
    "gate.rolled_back": "yellow",
    "model.trained": "cyan",
    "training.started": "cyan",
    "retrain.requested": "magenta",
    "dataset.versioned": "blue",
    "missing": "red",
    "more": "dim",
}


def _label(node: LineageNode) -> Text:
    text = Text(node.title, style=_STYLES.get(node.kind, "bold"))
    for line in node.details:
        text.append(f"\n{line}", style="default")
    if node.trace_id is not None:
        text.append(f"\ntrace {node.trace_id}", style="dim")
    return text


def _add(tree: Tree, node: LineageNode) -> None:
    branch = tree.add(_label(node))
    for child in node.children:
        _add(branch, child)


def render_lineage(root: LineageNode, domain: str) -> RenderableType:
    tree = Tree(_label(root))
    for child in root.children:
        _add(tree, child)
    traces = trace_ids(root)
    summary = Text(f"lineage of {domain}: ", style="bold")
    summary.append(
        f"trace id {traces[0]}" if len(traces) == 1 else f"trace ids {', '.join(traces) or 'none'}"
    )
    return Group(summary, tree)


# --- the command -----------------------------------------------------------------------------


def add_lineage_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lineage = commands.add_parser(
        "lineage",
        help="the tree from change events through dataset version, run and gate decision to a "
        "model (default: the domain's production model)",
    )
    lineage.add_argument("domain")
    lineage.add_argument("model_version", nargs="?")


async def run_lineage(
    settings: MeshSettings,
    domain: str,
    model_version: str | None = None,
    *,
    console: Console | None = None,
) -> int:
    """Print the lineage tree of a model of `domain`; exit 2 when there is no such model."""
    console = console or make_console()
    records = await read_mesh(settings, LINEAGE_STREAMS)
    root = build_lineage(records, domain, model_version)
    if root is None:
        which = model_version or "production model"
        console.print(f"no {which} of domain {domain!r} on the mesh's topics")
        return EXIT_NOT_FOUND
    console.print(render_lineage(root, domain))
    return EXIT_FOUND
