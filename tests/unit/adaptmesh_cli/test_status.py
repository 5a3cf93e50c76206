"""`adaptmesh status`'s view, built from a recorded flow, and how it is drawn."""

from __future__ import annotations

import dataclasses
import io
from datetime import timedelta

from rich.console import Console

from adaptmesh_cli.status import (
    GroupLag,
    MeshStatus,
    build_status,
    render_status,
    trace_id_of,
)
from adaptmesh_schemas.events import ModelReady, TrainingProgress, TrainingStarted
from tests.unit.adaptmesh_cli.mesh_flow import (
    DOMAIN,
    NOW,
    OTHER,
    T0,
    Recorder,
    recorded_flow,
)


def drawn(status: MeshStatus) -> str:
    console = Console(file=io.StringIO(), width=132, color_system=None)
    console.print(render_status(status))
    output = console.file
    assert isinstance(output, io.StringIO)
    return output.getvalue()


def test_each_domain_shows_its_production_model_last_decision_drift_and_replicas() -> None:
    status = build_status(recorded_flow(), NOW)
    assert [d.domain for d in status.domains] == [DOMAIN, OTHER]
    fin, ops = status.domains
    assert fin.production is not None
    assert (fin.production.model_version, fin.production.promotion) == ("m-1", 1)
    assert fin.production.since == T0 + timedelta(minutes=7)
    assert fin.production.labels == 2
    assert fin.last_decision is not None
    assert (fin.last_decision.verdict, fin.last_decision.model_version) == ("approved", "m-1")
    assert fin.drift is not None
    assert (fin.drift.detector, fin.drift.action, fin.drift.on_production) == (
        "label-chi2",
        "retrain-requested",
        True,
    )
    assert (fin.replicas_on_production, fin.replicas_alive) == (1, 1)
    assert ops.production is None
    assert ops.runs == ()  # its run failed


def test_only_runs_without_an_outcome_are_in_flight_with_an_eta_from_their_step_rate() -> None:
    status = build_status(recorded_flow(), NOW)
    [run] = status.runs
    assert (run.run_id, run.dataset_version, run.step, run.total_steps) == (
        "run-2",
        "ds-3",
        30,
        120,
    )
    # 20 steps between the reports at minutes 17 and 19: 1/6 step a second, 90 steps to go.
    assert run.steps_per_second is not None
    assert abs(run.steps_per_second - 1 / 6) < 1e-9
    assert run.eta == timedelta(minutes=9)


def test_a_single_report_is_timed_from_the_start_and_a_run_without_one_has_no_eta() -> None:
    records = [r for r in recorded_flow() if r.envelope.id != "run-2.progress-10"]
    [run] = build_status(records, NOW).runs
    # 30 steps in the 5 minutes since the start at minute 14.
    assert run.eta == timedelta(seconds=90 / (30 / 300))
    records = [r for r in records if not isinstance(r.event, TrainingProgress)]
    [run] = build_status(records, NOW).runs
    assert run.eta is None
    assert "starting" in drawn(build_status(records, NOW))


def test_a_later_record_with_a_lower_promotion_does_not_replace_production() -> None:
    records = recorded_flow()
    ready = next(r.event for r in records if isinstance(r.event, ModelReady))
    stale = ready.model_copy(update={"model_version": "m-0", "promotion": None})
    log = Recorder()
    log.add(stale, "ready-m-0", 19, trace=None, correlation="x")
    production = build_status(records + log.records, NOW).domains[0].production
    assert production is not None
    assert production.model_version == "m-1"


def test_a_replica_silent_for_three_intervals_no_longer_counts() -> None:
    later = NOW + timedelta(seconds=3 * 30 + 1)
    fin = build_status(recorded_flow(), later).domains[0]
    assert (fin.replicas_on_production, fin.replicas_alive) == (0, 0)


def test_the_drawing_shows_the_production_model_the_progress_bar_eta_and_lag() -> None:
    status = dataclasses.replace(
        build_status(recorded_flow(), NOW),
        lag=(
            GroupLag("adaptmesh.training", {"mesh.retrain.v1": 0, "mesh.datasets.v1": 0}),
            GroupLag("adaptmesh.drift-sensing", {"mesh.inference.v1": 7}),
        ),
    )
    text = drawn(status)
    assert "adaptmesh status at 2026-12-03 09:20:00Z" in text
    assert "promotion 1, 2 labels" in text
    assert "since 2026-12-03 09:07:00Z" in text
    assert "approved (this model)" in text
    assert "label-chi2 alarmed" in text
    assert "-> retrain-requested" in text
    assert "1/1 replicas" in text
    assert "30/120 (25%)" in text
    assert "9m00s" in text  # the ETA
    assert "6m00s" in text  # elapsed since the start at minute 14
    assert "━" in text  # the progress bar
    [drift_line] = [line for line in text.splitlines() if "adaptmesh.drift-sensing" in line]
    assert "7" in drift_line
    assert "mesh.inference.v1 7" in drift_line


def test_long_run_ids_are_shortened_and_model_versions_never_cut() -> None:
    log = Recorder()
    run_id = "d22cddacc802446cba887c79e21b876c"
    version = "m-20261203123824-d22cdd"
    for record in recorded_flow():
        event = record.event
        if isinstance(event, TrainingStarted | TrainingProgress) and event.run_id == "run-2":
            event = event.model_copy(update={"run_id": run_id})
        if isinstance(event, ModelReady):
            event = event.model_copy(update={"model_version": version})
        log.records.append(dataclasses.replace(record, event=event))
    text = drawn(build_status(log.records, NOW))
    assert "d22cddacc802…" in text
    assert run_id not in text
    assert version in text


def test_trace_id_comes_from_the_traceparent_header() -> None:
    header = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_id_of([("ce_id", b"x"), ("traceparent", header)]) == (
        "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert trace_id_of([("ce_id", b"x")]) is None
    assert trace_id_of([("traceparent", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01")]) is None
