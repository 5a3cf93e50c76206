"""The one place that builds Kafka topic names.

Every topic is `<prefix>mesh.<stream>.v<major>`. The prefix is empty in production and lets a
test (or a tenant sharing a cluster) get a private set of topics; the major version changes only
when the topic's keying or partitioning contract breaks, not when one event's schema evolves
(event schema versions travel in `ce_dataschema`, see `versioning.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Stream(StrEnum):
    """The mesh's streams; each maps to exactly one topic with one owning producer."""

    CHANGES = "changes"
    FEEDBACK = "feedback"
    DATASETS = "datasets"
    INFERENCE = "inference"
    DRIFT = "drift"
    RETRAIN = "retrain"
    TRAINING = "training"
    GATE = "gate"
    MODELS_READY = "models.ready"
    ROLLOUT = "rollout"
    DEADLETTER = "deadletter"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """What a stream's topic is for and how it must be provisioned."""

    stream: Stream
    major: int
    producer: str
    consumers: tuple[str, ...]
    description: str
    compacted: bool = False
    kept_forever: bool = False
    """No time-based retention: the topic is an audit trail (and the gate's memory of which
    models it approved, for rollbacks)."""


TOPIC_SPECS: dict[Stream, TopicSpec] = {
    spec.stream: spec
    for spec in (
        TopicSpec(
            Stream.CHANGES,
            1,
            "users, CLI",
            ("ingestion", "evaluation-gate"),
            "Regulation, taxonomy, recipe, base-model and data-batch changes for a domain "
            "(ingestion); rollbacks (the gate); fleet-wide base-model releases (key "
            "`mesh.fleet`).",
        ),
        TopicSpec(
            Stream.FEEDBACK,
            1,
            "users, apps",
            ("ingestion", "drift-sensing"),
            "Ground truth for served predictions.",
        ),
        TopicSpec(
            Stream.DATASETS,
            1,
            "ingestion",
            ("drift-sensing", "training", "evaluation-gate", "ingestion"),
            "A new immutable dataset version exists (ingestion reads it back by broadcast to "
            "know every domain's base model).",
        ),
        TopicSpec(
            Stream.INFERENCE,
            1,
            "serving",
            ("drift-sensing",),
            "Sampled inference records: label, confidence, embedding sketch, text.",
        ),
        TopicSpec(
            Stream.DRIFT,
            1,
            "drift-sensing",
            ("users", "CLI"),
            "A domain's production model no longer fits what it sees: evidence per detector "
            "and a sample of uncertain inputs to label.",
        ),
        TopicSpec(
            Stream.RETRAIN,
            1,
            "drift-sensing",
            ("training",),
            "A domain must be retrained, with the reason and evidence.",
        ),
        TopicSpec(
            Stream.TRAINING,
            1,
            "training",
            ("evaluation-gate", "CLI"),
            "Training run lifecycle: started, progress, trained, failed.",
        ),
        TopicSpec(
            Stream.GATE,
            1,
            "evaluation-gate",
            ("evaluation-gate", "CLI", "audit"),
            "Gate decisions (approved or rejected, with JSON and HTML report references) and "
            "rollbacks (carried out or refused); the audit trail, kept without time limit.",
            kept_forever=True,
        ),
        TopicSpec(
            Stream.MODELS_READY,
            1,
            "evaluation-gate",
            ("serving", "drift-sensing", "users"),
            "The production model per domain, with its reference profile; log-compacted, "
            "key = domain.",
            compacted=True,
        ),
        TopicSpec(
            Stream.ROLLOUT,
            1,
            "serving",
            ("users", "CLI"),
            "What each serving replica has loaded (or failed to load) and that it is alive: a "
            "rollout is complete when every live replica reports the new model.",
        ),
        TopicSpec(
            Stream.DEADLETTER,
            1,
            "every service",
            ("operators",),
            "Records no consumer could decode or handle: original bytes, headers, reason, origin.",
        ),
    )
}


def topic_name(stream: Stream, prefix: str = "") -> str:
    """The Kafka topic for `stream`, e.g. `mesh.models.ready.v1`."""
    return f"{prefix}mesh.{stream.value}.v{TOPIC_SPECS[stream].major}"


def all_topic_names(prefix: str = "") -> list[str]:
    """Every mesh topic, in a stable order."""
    return [topic_name(stream, prefix) for stream in Stream]
