"""`adaptmesh status`: the mesh at a glance, read from its topics alone.

Per domain: the production model (`mesh.models.ready.v1`, the highest promotion), the gate's
last decision, the last drift alarm, and how many live serving replicas serve the production
model; the training runs in flight (a `training.started` with neither `model.trained` nor
`training.failed` yet) with a progress bar and an ETA from the step rate the run's own progress
events show; and the lag of every service's consumer group on the mesh's topics.

Reading (`MeshLog`), the view (`build_status`, pure: records in, `MeshStatus` out) and drawing
(`render_status`, rich) are apart, so the view is tested on recorded events without a broker.
Topics are read from their beginning as a `read_committed` consumer without a group: an aborted
transaction's records never count, and the command changes no group's offsets.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from adaptmesh_cli.logs import history_reader
from adaptmesh_kit import MeshSettings, kafka_client_kwargs
from adaptmesh_kit.topic_ends import log_bounds
from adaptmesh_schemas import (
    FLEET_DOMAIN,
    DecodeError,
    Envelope,
    MeshEvent,
    Stream,
    decode_event,
    read_envelope,
    topic_name,
)
from adaptmesh_schemas.events import (
    DriftDetected,
    GateApproved,
    GateRejected,
    ModelLoaded,
    ModelLoadFailed,
    ModelReady,
    ModelTrained,
    ReplicaStatus,
    RolledBack,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)

log = logging.getLogger(__name__)

STATUS_STREAMS = (
    Stream.MODELS_READY,
    Stream.TRAINING,
    Stream.GATE,
    Stream.DRIFT,
    Stream.ROLLOUT,
)
"""What `status` reads. Not the inference, feedback or change topics: they are the big ones and
say nothing the view shows."""

SILENT_INTERVALS = 3
"""A replica silent for this many of its heartbeat intervals counts as gone (as `watch
rollout` counts it)."""

POLL_MS = 500
READ_TIMEOUT_SECONDS = 120.0
WATCH_REFRESH_SECONDS = 2.0
RUN_ID_SHOWN = 12
PLAIN_WIDTH = 132
"""Columns when the output is not a terminal (a pipe, a file, a test): wide enough that the
tables do not wrap, so what is captured reads like what a terminal shows."""


# --- reading ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class MeshRecord:
    """One decoded record with what the envelope does not carry: its trace and log position."""

    envelope: Envelope
    event: MeshEvent
    trace_id: str | None
    topic: str
    partition: int
    offset: int


def trace_id_of(headers: Sequence[tuple[str, bytes]]) -> str | None:
    """The trace id of a W3C `traceparent` header (`00-<trace id>-<span id>-<flags>`)."""
    for key, value in headers:
        if key == "traceparent":
            parts = value.decode("ascii", errors="replace").split("-")
            if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
                return parts[1]
    return None


class MeshLog:
    """The records of some mesh topics, read from their beginning and then as they come.

    One consumer without a group, assigned every partition of the topics, `read_committed`.
    `catch_up` reads to where each partition ends now; `read_new` takes what arrived since.
    """

    def __init__(self, settings: MeshSettings, streams: Iterable[Stream]) -> None:
        self._settings = settings
        self.topics = [topic_name(stream, settings.topic_prefix) for stream in streams]
        self.records: list[MeshRecord] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> MeshLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def catch_up(self) -> list[MeshRecord]:
        """Read every topic up to where it ends now; returns every record read so far."""
        bounds = await asyncio.gather(*(log_bounds(self._settings, topic) for topic in self.topics))
        ends = {
            TopicPartition(topic, partition): end
            for topic, partitions in zip(self.topics, bounds, strict=True)
            for partition, (_first, end) in partitions.items()
        }
        consumer = await self._started(list(ends))
        remaining = {tp: end for tp, end in ends.items() if await consumer.position(tp) < end}
        try:
            async with asyncio.timeout(READ_TIMEOUT_SECONDS):
                while remaining:
                    await self._fetch(consumer, list(remaining))
                    for tp in list(remaining):
                        if await consumer.position(tp) >= remaining[tp]:
                            del remaining[tp]
        except TimeoutError:
            raise RuntimeError(
                f"could not read the mesh topics to their end within {READ_TIMEOUT_SECONDS:g} s "
                f"(still waiting on {sorted(f'{tp.topic}[{tp.partition}]' for tp in remaining)})"
            ) from None
        return self.records

    async def read_new(self) -> list[MeshRecord]:
        """Take what arrived since the last read; returns every record read so far."""
        if self._consumer is not None:
            await self._fetch(self._consumer, list(self._consumer.assignment()))
        return self.records

    async def _started(self, partitions: list[TopicPartition]) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = history_reader(self._settings)
            await consumer.start()
            consumer.assign(partitions)
            if partitions:
                await consumer.seek_to_beginning(*partitions)
            self._consumer = consumer
        return self._consumer

    async def _fetch(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        batch = await consumer.getmany(*partitions, timeout_ms=POLL_MS)
        for tp, records in batch.items():
            for record in records:
                try:
                    envelope = read_envelope(record.headers)
                    event = decode_event(envelope, record.value)
                except DecodeError as error:
                    # Its consumers dead-lettered it; it changed nothing the view shows.
                    log.info("skipping an undecodable record of %s: %s", tp.topic, error)
                    continue
                self.records.append(
                    MeshRecord(
                        envelope,
                        event,
                        trace_id_of(record.headers),
                        tp.topic,
                        tp.partition,
                        record.offset,
                    )
                )


async def read_mesh(settings: MeshSettings, streams: Iterable[Stream]) -> list[MeshRecord]:
    """Every decodable record of `streams`' topics, from their beginning to where they end now."""
    async with MeshLog(settings, streams) as mesh_log:
        return list(await mesh_log.catch_up())


@dataclasses.dataclass(frozen=True, slots=True)
class GroupLag:
    """How far one consumer group is behind on the mesh's topics."""

    group: str
    lag_by_topic: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.lag_by_topic.values())


async def read_consumer_lag(settings: MeshSettings) -> list[GroupLag]:
    """Per consumer group with offsets on this mesh's topics: records left to read, per topic.

    Lag is the readable end of each partition (where a `read_committed` reader stops: past the
    last committed record, not the commit marker after it) less the group's committed offset;
    a group that committed past the marker is not behind.
    """
    mesh_topics = {topic_name(stream, settings.topic_prefix) for stream in Stream}
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
    await admin.start()
    try:
        groups = sorted(str(group[0]) for group in await admin.list_consumer_groups())
        committed_by_group = {
            group: {
                tp: meta.offset
                for tp, meta in (await admin.list_consumer_group_offsets(group)).items()
                if tp.topic in mesh_topics and meta.offset >= 0
            }
            for group in groups
        }
    finally:
        await admin.close()
    topics = sorted({tp.topic for committed in committed_by_group.values() for tp in committed})
    bounds = await asyncio.gather(*(log_bounds(settings, topic) for topic in topics))
    ends = {
        (topic, partition): end
        for topic, partitions in zip(topics, bounds, strict=True)
        for partition, (_first, end) in partitions.items()
    }
    lags: list[GroupLag] = []
    for group, committed in committed_by_group.items():
        if not committed:
            continue
        by_topic: dict[str, int] = {}
        for tp, offset in committed.items():
            behind = max(0, ends.get((tp.topic, tp.partition), offset) - offset)
            by_topic[tp.topic] = by_topic.get(tp.topic, 0) + behind
        lags.append(GroupLag(group, dict(sorted(by_topic.items()))))
    return lags


# --- the view (pure) -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Production:
    model_version: str
    promotion: int | None
    since: datetime
    labels: int
    rolled_back_from: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    verdict: str
    model_version: str
    at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class DriftVerdict:
    at: datetime
    model_version: str
    detector: str
    action: str
    on_production: bool


@dataclasses.dataclass(frozen=True, slots=True)
class RunInFlight:
    domain: str
    run_id: str
    dataset_version: str
    started_at: datetime
    step: int
    total_steps: int
    epoch: int | None
    loss: float | None
    last_report: datetime
    steps_per_second: float | None

    @property
    def eta(self) -> timedelta | None:
        """Time left at the observed step rate; unknown until two points give a rate."""
        if self.steps_per_second is None or self.steps_per_second <= 0:
            return None
        return timedelta(seconds=max(0, self.total_steps - self.step) / self.steps_per_second)


@dataclasses.dataclass(frozen=True, slots=True)
class DomainStatus:
    domain: str
    production: Production | None
    last_decision: Decision | None
    drift: DriftVerdict | None
    replicas_on_production: int
    replicas_alive: int
    runs: tuple[RunInFlight, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class MeshStatus:
    at: datetime
    domains: tuple[DomainStatus, ...]
    lag: tuple[GroupLag, ...] = ()

    @property
    def runs(self) -> list[RunInFlight]:
        return [run for domain in self.domains for run in domain.runs]


@dataclasses.dataclass
class _Run:
    started: TrainingStarted
    started_at: datetime
    progress: list[tuple[datetime, TrainingProgress]] = dataclasses.field(default_factory=list)


def _rate(run: _Run) -> float | None:
    """Steps per second between the first and the latest point the run has shown.

    The start counts as step 0 when no progress came before: that includes the time to load
    the data and the base model, so the first ETA errs long rather than short.
    """
    points = [(run.started_at, 0)] + [(at, event.step) for at, event in run.progress]
    if len(run.progress) >= 2:
        points = points[1:]
    (first_at, first_step), (last_at, last_step) = points[0], points[-1]
    seconds = (last_at - first_at).total_seconds()
    if seconds <= 0 or last_step <= first_step:
        return None
    return (last_step - first_step) / seconds


def _run_view(run: _Run) -> RunInFlight:
    latest = run.progress[-1][1] if run.progress else None
    return RunInFlight(
        domain=run.started.domain,
        run_id=run.started.run_id,
        dataset_version=run.started.dataset_version,
        started_at=run.started_at,
        step=latest.step if latest else 0,
        total_steps=latest.total_steps if latest else 0,
        epoch=latest.epoch if latest else None,
        loss=latest.loss if latest else None,
        last_report=run.progress[-1][0] if run.progress else run.started_at,
        steps_per_second=_rate(run),
    )


class _Folded:
    """What the records say so far, per domain, run and replica (the latest word wins)."""

    def __init__(self) -> None:
        self.domains: set[str] = set()
        self.ready: dict[str, tuple[datetime, ModelReady]] = {}
        self.decisions: dict[str, Decision] = {}
        self.drift: dict[str, tuple[datetime, DriftDetected]] = {}
        self.runs: dict[str, _Run] = {}
        self.replica_heard: dict[str, tuple[datetime, float]] = {}
        self.replica_serves: dict[tuple[str, str], tuple[datetime, str | None]] = {}

    def apply(self, event: MeshEvent, at: datetime) -> None:
        if event.domain != FLEET_DOMAIN:
            self.domains.add(event.domain)
        match event:
            case ModelReady():
                known = self.ready.get(event.domain)
                if known is None or (event.promotion or 0) >= (known[1].promotion or 0):
                    self.ready[event.domain] = (at, event)
            case GateApproved() | GateRejected():
                verdict = "approved" if isinstance(event, GateApproved) else "rejected"
                self.decisions[event.domain] = Decision(verdict, event.model_version, at)
            case RolledBack():
                self.decisions[event.domain] = Decision("rolled back to", event.model_version, at)
            case DriftDetected():
                self.drift[event.domain] = (at, event)
            case TrainingStarted() | TrainingProgress() | ModelTrained() | TrainingFailed():
                self._apply_training(event, at)
            case ReplicaStatus() | ModelLoaded() | ModelLoadFailed():
                self._apply_rollout(event, at)
            case _:
                pass

    def _apply_training(
        self,
        event: TrainingStarted | TrainingProgress | ModelTrained | TrainingFailed,
        at: datetime,
    ) -> None:
        if isinstance(event, TrainingStarted):
            self.runs[event.run_id] = _Run(event, at)
        elif isinstance(event, TrainingProgress):
            if event.run_id in self.runs:
                self.runs[event.run_id].progress.append((at, event))
        else:
            self.runs.pop(event.run_id, None)

    def _apply_rollout(
        self, event: ReplicaStatus | ModelLoaded | ModelLoadFailed, at: datetime
    ) -> None:
        if isinstance(event, ReplicaStatus):
            self.replica_heard[event.replica_id] = (at, event.interval_seconds)
            for domain, version in event.serving.items():
                self._serves(event.replica_id, domain, at, version)
        elif isinstance(event, ModelLoaded):
            self._serves(event.replica_id, event.domain, at, event.model_version)
        else:
            self._serves(event.replica_id, event.domain, at, event.still_serving)

    def _serves(self, replica: str, domain: str, at: datetime, version: str | None) -> None:
        known = self.replica_serves.get((replica, domain))
        if known is None or at >= known[0]:
            self.replica_serves[(replica, domain)] = (at, version)

    def alive(self, now: datetime) -> list[str]:
        """Replicas heard from within three of their heartbeat intervals."""
        return [
            replica
            for replica, (at, interval) in self.replica_heard.items()
            if now - at <= timedelta(seconds=SILENT_INTERVALS * interval)
        ]

    def production(self, domain: str) -> Production | None:
        if domain not in self.ready:
            return None
        since, model = self.ready[domain]
        return Production(
            model.model_version,
            model.promotion,
            since,
            len(model.labels),
            model.rollback.replaced_version if model.rollback else None,
        )

    def drift_verdict(self, domain: str, production: Production | None) -> DriftVerdict | None:
        if domain not in self.drift:
            return None
        at, alarm = self.drift[domain]
        return DriftVerdict(
            at,
            alarm.model_version,
            alarm.detector,
            alarm.action,
            production is not None and alarm.model_version == production.model_version,
        )

    def view(self, domain: str, now: datetime) -> DomainStatus:
        production = self.production(domain)
        alive = self.alive(now)
        on_production = [
            replica
            for replica in alive
            if production is not None
            and self.replica_serves.get((replica, domain), (now, None))[1]
            == production.model_version
        ]
        return DomainStatus(
            domain=domain,
            production=production,
            last_decision=self.decisions.get(domain),
            drift=self.drift_verdict(domain, production),
            replicas_on_production=len(on_production),
            replicas_alive=len(alive),
            runs=tuple(
                _run_view(run) for run in self.runs.values() if run.started.domain == domain
            ),
        )


def build_status(records: Iterable[MeshRecord], now: datetime) -> MeshStatus:
    """The view of the mesh the records (in log order per partition) describe at `now`."""
    folded = _Folded()
    for record in records:
        folded.apply(record.event, record.envelope.time)
    return MeshStatus(now, tuple(folded.view(domain, now) for domain in sorted(folded.domains)))


# --- drawing ---------------------------------------------------------------------------------


def utc_text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _duration(span: timedelta) -> str:
    seconds = max(0, round(span.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _production_text(domain: DomainStatus) -> Text:
    production = domain.production
    if production is None:
        return Text("none yet", style="dim")
    text = Text(production.model_version, style="bold")
    promotion = f"promotion {production.promotion}, " if production.promotion else ""
    text.append(f"\n{promotion}{production.labels} labels\nsince {utc_text(production.since)}")
    if production.rolled_back_from is not None:
        text.append(f"\nrolled back from {production.rolled_back_from}", style="yellow")
    return text


def _decision_text(domain: DomainStatus) -> Text:
    decision = domain.last_decision
    if decision is None:
        return Text("none", style="dim")
    style = {"approved": "green", "rejected": "red"}.get(decision.verdict, "yellow")
    text = Text(decision.verdict, style=style)
    production = domain.production
    if production is not None and decision.model_version == production.model_version:
        text.append(" (this model)")
    else:
        text.append(f"\n{decision.model_version}")
    text.append(f"\n{utc_text(decision.at)}")
    return text


def _drift_text(domain: DomainStatus) -> Text:
    drift = domain.drift
    if drift is None:
        return Text("no alarm", style="green")
    if not drift.on_production:
        return Text(
            f"no alarm on this model\n(last: {drift.model_version},\n{utc_text(drift.at)})",
            style="green",
        )
    text = Text(f"{drift.detector} alarmed", style="bold red")
    text.append(f"\n-> {drift.action}\n{utc_text(drift.at)}")
    return text


def domains_table(status: MeshStatus) -> Table:
    table = Table(title="Domains", title_justify="left", expand=False)
    # Folded, never cut with an ellipsis: a model version is what one greps for.
    for column in ("domain", "production model", "serving", "last gate decision", "last drift"):
        table.add_column(column, overflow="fold")
    for domain in status.domains:
        table.add_row(
            domain.domain,
            _production_text(domain),
            f"{domain.replicas_on_production}/{domain.replicas_alive} replicas",
            _decision_text(domain),
            _drift_text(domain),
        )
    return table


def _short_run_id(run_id: str) -> str:
    """The head of a run id: unique enough to tell runs apart and leave room for the bar
    (`adaptmesh lineage` shows it whole)."""
    return run_id if len(run_id) <= RUN_ID_SHOWN + 1 else run_id[:RUN_ID_SHOWN] + "…"


def runs_table(status: MeshStatus) -> RenderableType:
    runs = status.runs
    if not runs:
        return Text("Runs in flight: none", style="italic")
    table = Table(title="Runs in flight", title_justify="left")
    for column in (
        "domain",
        "run",
        "dataset",
        "progress",
        "step",
        "epoch",
        "loss",
        "elapsed",
        "ETA",
    ):
        table.add_column(column, overflow="fold")
    for run in runs:
        if run.total_steps:
            bar: RenderableType = ProgressBar(total=run.total_steps, completed=run.step, width=20)
            share = f"{run.step}/{run.total_steps} ({100 * run.step / run.total_steps:.0f}%)"
        else:
            bar, share = Text("starting", style="dim"), "-"
        eta = run.eta
        table.add_row(
            run.domain,
            _short_run_id(run.run_id),
            run.dataset_version,
            bar,
            share,
            "-" if run.epoch is None else str(run.epoch + 1),
            "-" if run.loss is None else f"{run.loss:.3f}",
            _duration(status.at - run.started_at),
            "-" if eta is None else _duration(eta),
        )
    return table


def lag_table(status: MeshStatus) -> RenderableType:
    if not status.lag:
        return Text("Consumer lag: no consumer group has committed offsets", style="italic")
    table = Table(title="Consumer lag", title_justify="left")
    table.add_column("consumer group")
    table.add_column("lag", justify="right")
    table.add_column("behind on")
    for group in status.lag:
        behind = ", ".join(f"{topic} {lag}" for topic, lag in group.lag_by_topic.items() if lag)
        table.add_row(
            group.group,
            Text(str(group.total), style="red" if group.total else "green"),
            behind or "-",
        )
    return table


def render_status(status: MeshStatus) -> RenderableType:
    """The whole view: domains, runs in flight, consumer lag."""
    heading = Text(f"adaptmesh status at {utc_text(status.at)}", style="bold")
    if not status.domains:
        body: RenderableType = Text("no domain has events on the mesh yet", style="italic")
    else:
        body = domains_table(status)
    return Group(heading, body, runs_table(status), lag_table(status))


# --- the command -----------------------------------------------------------------------------


def add_status_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="per domain the production model, runs in flight, drift, serving; consumer lag",
    )
    status.add_argument("--domain", help="only this domain")
    status.add_argument(
        "--watch",
        action="store_true",
        help="refresh live until Ctrl-C (on a terminal; otherwise print once)",
    )


def make_console() -> Console:
    """A console for stdout; wider than the default when stdout is not a terminal."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, PLAIN_WIDTH))
    return console


def _only(status: MeshStatus, domain: str | None) -> MeshStatus:
    if domain is None:
        return status
    return dataclasses.replace(
        status, domains=tuple(d for d in status.domains if d.domain == domain)
    )


async def run_status(
    settings: MeshSettings,
    *,
    domain: str | None = None,
    watch: bool = False,
    console: Console | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Print the mesh's status once, or (`watch`, on a terminal) keep it live until Ctrl-C."""
    console = console or make_console()
    async with MeshLog(settings, STATUS_STREAMS) as mesh_log:
        records = await mesh_log.catch_up()

        async def snapshot() -> MeshStatus:
            status = build_status(records, clock())
            lag = await read_consumer_lag(settings)
            return _only(dataclasses.replace(status, lag=tuple(lag)), domain)

        status = await snapshot()
        if domain is not None and not status.domains:
            console.print(f"no events for domain {domain!r} on the mesh's topics")
            return 2
        if not (watch and console.is_terminal):
            console.print(render_status(status))
            return 0
        with Live(render_status(status), console=console, auto_refresh=False) as live:
            while True:
                await asyncio.sleep(WATCH_REFRESH_SECONDS)
                records = await mesh_log.read_new()
                live.update(render_status(await snapshot()), refresh=True)
