"""`adaptmesh`: the command line of the mesh.

adaptmesh demo                 the backbone round trip on an embedded broker
adaptmesh publish FILE         publish a change event (JSON body) to the mesh
adaptmesh watch [STREAM]       print events from a mesh topic as they arrive (`watch rollout`:
                               how many serving replicas serve each domain's production model)
adaptmesh release-base         move every domain on one base model to another
adaptmesh replay               rebuild every dataset version from the log, check the digests
adaptmesh rebuild DOMAIN VER   retrain a model from its recorded inputs, compare bytes and metrics
adaptmesh report DOMAIN|VER    a gate decision: summary, checks, and its HTML report (--html PATH)
adaptmesh audit DOMAIN         every gate decision, rollback and refused rollback, with reasons
adaptmesh rollback DOMAIN      serve an earlier approved model again (--to VERSION --reason TEXT)
adaptmesh status               per domain the production model, runs in flight, drift, serving;
                               consumer lag per service (--watch: live, --domain D)
adaptmesh lineage DOMAIN [VER] change events -> dataset -> run -> gate -> model.ready, with digests
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from adaptmesh_cli.demo import run_demo
from adaptmesh_cli.lineage import add_lineage_command, run_lineage
from adaptmesh_cli.rebuild import run_rebuild
from adaptmesh_cli.replay import run_replay
from adaptmesh_cli.reports import add_report_commands, run_audit, run_report
from adaptmesh_cli.rollback import add_rollback_command, request_of, run_rollback
from adaptmesh_cli.rollout import watch_rollout
from adaptmesh_cli.scenario import run_scenario
from adaptmesh_cli.status import add_status_command, run_status
from adaptmesh_cli.up import run_up
from adaptmesh_kit import MeshSettings, create_app, kafka_client_kwargs
from adaptmesh_schemas import (
    EVENT_TYPES,
    FLEET_DOMAIN,
    DecodeError,
    Envelope,
    MeshEvent,
    Stream,
    decode_event,
    read_envelope,
    topic_name,
)
from adaptmesh_schemas.events import BaseModelReleased, DriftDetected
from adaptmesh_schemas.values import BaseModelSpec, DriftEvidence
from adaptmesh_schemas.versioning import CE_TYPE_PREFIX


async def publish(path: Path, event_name: str, settings: MeshSettings) -> None:
    event_class = EVENT_TYPES.get(CE_TYPE_PREFIX + event_name)
    if event_class is None:
        names = ", ".join(sorted(t.removeprefix(CE_TYPE_PREFIX) for t in EVENT_TYPES))
        raise SystemExit(f"unknown event type {event_name!r}; one of: {names}")
    text = sys.stdin.read() if str(path) == "-" else await asyncio.to_thread(path.read_text)
    event = event_class.model_validate_json(text)  # the same validation consumers apply
    async with create_app(settings, "cli") as app:
        envelope = await app.publish(event)
    topic = topic_name(event.stream, settings.topic_prefix)
    print(f"published {envelope.type} id={envelope.id} to {topic}")


async def release_base(release: BaseModelReleased, settings: MeshSettings) -> None:
    async with create_app(settings, "cli") as app:
        envelope = await app.publish(release)
    topic = topic_name(release.stream, settings.topic_prefix)
    which = ", ".join(release.domains) or "every domain on it"
    print(
        f"published {envelope.type} id={envelope.id} to {topic}: "
        f"{release.old_base.model_id} -> {release.new_base.model_id} ({which})"
    )


def release_of(args: argparse.Namespace) -> BaseModelReleased:
    """The release the `release-base` arguments describe, under the fleet key."""
    return BaseModelReleased(
        domain=FLEET_DOMAIN,
        old_base=BaseModelSpec(
            model_id=args.old, revision=args.old_revision, gguf_file=args.old_gguf
        ),
        new_base=BaseModelSpec(
            model_id=args.new, revision=args.new_revision, gguf_file=args.new_gguf
        ),
        domains=tuple(args.domain),
        reason=args.reason,
    )


async def watch(stream: Stream, settings: MeshSettings, *, from_beginning: bool) -> None:
    topic = topic_name(stream, settings.topic_prefix)
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_kwargs(settings),
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    print(f"watching {topic} (Ctrl-C to stop)", flush=True)
    try:
        async for record in consumer:
            try:
                envelope = read_envelope(record.headers)
                event = decode_event(envelope, record.value)
            except DecodeError as error:
                print(f"[{record.partition}@{record.offset}] undecodable: {error}", flush=True)
                continue
            print(describe_record(record.partition, record.offset, envelope, event), flush=True)
    finally:
        await consumer.stop()


def describe_record(partition: int, offset: int, envelope: Envelope, event: MeshEvent) -> str:
    """What `watch` prints for one record.

    A drift alarm is read by people deciding what to do, so it gets a summary line and one
    indented line per detector; every other event is one JSON line, for grep and jq.
    """
    where = f"[{partition}@{offset}] {envelope.type}"
    if not isinstance(event, DriftDetected):
        return f"{where} {envelope.subject} {event.model_dump_json()}"
    action = f"{event.action}: {event.action_detail}" if event.action_detail else event.action
    lines = [
        f"{where} {event.domain} model {event.model_version} (dataset "
        f"{event.dataset_version}): {event.detector} fired -> {action}",
        *(f"    {_describe_evidence(evidence)}" for evidence in event.evidence),
    ]
    if event.to_label is not None:
        lines.append(f"    to label: {event.to_label.uri}")
    return "\n".join(lines)


def _describe_evidence(evidence: DriftEvidence) -> str:
    drifted = {True: "yes", False: "no", None: "n/a"}[evidence.drifted]
    ert = "n/a" if evidence.ert is None else f"{evidence.ert:g}"
    p_value = "" if evidence.p_value is None else f" (p {evidence.p_value:.3g})"
    detail = f" - {evidence.detail}" if evidence.detail else ""
    return (
        f"{evidence.detector}: {evidence.statistic:.4g} vs threshold {evidence.threshold:.4g}"
        f"{p_value}, drifted {drifted}, ERT {ert}, window {evidence.window_size}{detail}"
    )


def build_parser() -> argparse.ArgumentParser:
    """Every `adaptmesh` command and its arguments."""
    parser = argparse.ArgumentParser(
        prog="adaptmesh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up_cmd = commands.add_parser("up", help="run the embedded mesh in the foreground")
    up_cmd.add_argument("--work-dir", type=Path, default=Path(".mesh/up"))
    up_cmd.add_argument(
        "--serving-port",
        type=int,
        default=None,
        help="default: the last start's on this work directory, else 8080 if free",
    )
    up_cmd.add_argument(
        "--kafka-port",
        type=int,
        default=None,
        help="embedded broker's port; default: the last start's on this work directory",
    )
    up_cmd.add_argument(
        "--secure",
        action="store_true",
        help="Kafka over TLS with a SCRAM user per service and ACLs; prints how to connect",
    )
    up_cmd.add_argument(
        "--jaeger",
        action="store_true",
        help="start Jaeger v2 (built once with Go into ~/.cache/adaptmesh) and trace into it",
    )
    commands.add_parser("demo", help="the main scenario on the embedded mesh")
    commands.add_parser("demo-backbone", help="the event backbone round trip only")
    publish_cmd = commands.add_parser(
        "publish", help="publish an event from a JSON file, - = stdin"
    )
    publish_cmd.add_argument("file", type=Path)
    publish_cmd.add_argument(
        "--type", required=True, help="event name, e.g. change.recipe or change.data_batch"
    )
    watch_cmd = commands.add_parser("watch", help="print events of a mesh topic")
    watch_cmd.add_argument(
        "stream", nargs="?", default=Stream.MODELS_READY.value, choices=[s.value for s in Stream]
    )
    watch_cmd.add_argument("--from-beginning", action="store_true")
    release_cmd = commands.add_parser(
        "release-base",
        help="move every domain on the old base model (or only --domain ones) to the new one",
    )
    release_cmd.add_argument("--old", required=True, metavar="MODEL_ID")
    release_cmd.add_argument("--new", required=True, metavar="MODEL_ID")
    release_cmd.add_argument("--old-revision", metavar="REV")
    release_cmd.add_argument("--new-revision", metavar="REV")
    release_cmd.add_argument("--old-gguf", metavar="FILE")
    release_cmd.add_argument("--new-gguf", metavar="FILE")
    release_cmd.add_argument(
        "--domain", action="append", default=[], help="only this domain (repeatable)"
    )
    release_cmd.add_argument("--reason", default="", help="why, for the audit trail")
    replay_cmd = commands.add_parser(
        "replay", help="rebuild every dataset version from the log; exit 1 if a digest differs"
    )
    replay_cmd.add_argument("--domain", help="only this domain")
    replay_cmd.add_argument(
        "--store", type=Path, help="artifact store directory to keep (default: a temporary one)"
    )
    rebuild_cmd = commands.add_parser(
        "rebuild",
        help="retrain a model from its recorded inputs; exit 0 when adapter and metrics match",
    )
    rebuild_cmd.add_argument("domain")
    rebuild_cmd.add_argument("model_version")
    rebuild_cmd.add_argument(
        "--scratch", type=Path, help="artifact store for the rebuilt model (default: temporary)"
    )
    add_report_commands(commands)
    add_rollback_command(commands)
    add_status_command(commands)
    add_lineage_command(commands)
    return parser


def _run_on_mesh(args: argparse.Namespace, settings: MeshSettings) -> int:
    """The commands that talk to a running mesh; returns the exit code."""
    code = 0
    match args.command:
        case "publish":
            asyncio.run(publish(args.file, args.type, settings))
        case "release-base":
            asyncio.run(release_base(release_of(args), settings))
        case "replay":
            code = asyncio.run(run_replay(settings, domain=args.domain, store=args.store))
        case "rebuild":
            code = run_rebuild(settings, args.domain, args.model_version, scratch=args.scratch)
        case "report":
            code = asyncio.run(run_report(settings, args.target, html=args.html))
        case "audit":
            code = asyncio.run(run_audit(settings, args.domain))
        case "rollback":
            code = asyncio.run(run_rollback(settings, request_of(args), wait=args.wait))
        case "status":
            code = asyncio.run(run_status(settings, domain=args.domain, watch=args.watch))
        case "lineage":
            code = asyncio.run(run_lineage(settings, args.domain, args.model_version))
        case "watch" if args.stream == Stream.ROLLOUT.value:
            asyncio.run(watch_rollout(settings))
        case _:
            asyncio.run(watch(Stream(args.stream), settings, from_beginning=args.from_beginning))
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            otlp = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            return run_up(
                args.work_dir,
                serving_port=args.serving_port,
                kafka_port=args.kafka_port,
                otlp_endpoint=otlp,
                jaeger=args.jaeger,
                secure=args.secure,
            )
        if args.command == "demo":
            return run_scenario()
        if args.command == "demo-backbone":
            return asyncio.run(run_demo())
        return _run_on_mesh(args, MeshSettings())
    except KeyboardInterrupt:
        return 130
