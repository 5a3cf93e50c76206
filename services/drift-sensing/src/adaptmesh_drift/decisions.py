"""What a retrain request says: its reason, its dataset, its causes, and when there is none."""

from __future__ import annotations

import logging

from adaptmesh_schemas.events import DatasetVersioned, RetrainReason, RetrainRequested
from adaptmesh_schemas.values import ArtifactRef, DriftEvidence

log = logging.getLogger(__name__)

REASON_BY_CHANGE_KIND: dict[str, RetrainReason] = {
    "recipe": RetrainReason.RECIPE,
    "taxonomy": RetrainReason.TAXONOMY,
    "regulation": RetrainReason.REGULATION,
    "base-model": RetrainReason.BASE_MODEL,
    "data": RetrainReason.DATA,
    "feedback": RetrainReason.FEEDBACK,
}
"""`DatasetVersioned.change_kind` → the reason training is told."""

MIN_LABELS_WITH_EXAMPLES = 2  # a classifier over one label learns nothing


def untrainable_because(dataset: DatasetVersioned) -> str | None:
    """Why no model can be trained on this dataset version, or None when one can."""
    if dataset.counts.train <= 0:
        return "its train split is empty"
    labelled = sorted(label for label, count in dataset.counts.per_label.items() if count > 0)
    if len(labelled) < MIN_LABELS_WITH_EXAMPLES:
        having = f" ({', '.join(labelled)})" if labelled else ""
        return (
            f"only {len(labelled)} label(s) have examples{having}; "
            f"at least {MIN_LABELS_WITH_EXAMPLES} are needed"
        )
    return None


def reason_for(change_kind: str) -> RetrainReason:
    """The reason for a change kind; a kind this service does not know still means new data."""
    reason = REASON_BY_CHANGE_KIND.get(change_kind)
    if reason is None:
        log.warning("unknown change kind %r: requesting retraining for new data", change_kind)
        return RetrainReason.DATA
    return reason


def explicit_request(dataset: DatasetVersioned, dataset_event_id: str) -> RetrainRequested:
    """Retrain on `dataset`, made by an explicit change (the caller checked it is trainable)."""
    counts = dataset.counts
    labelled = sum(1 for count in counts.per_label.values() if count > 0)
    parent = f" from {dataset.parent_version}" if dataset.parent_version else ""
    return RetrainRequested(
        domain=dataset.domain,
        reason=reason_for(dataset.change_kind),
        detail=(
            f"{dataset.change_kind} change made dataset version {dataset.dataset_version}{parent}: "
            f"{counts.train} train / {counts.eval} eval examples over {labelled} labels, "
            f"{counts.must_pass} must-pass cases; taxonomy {dataset.taxonomy_version}, "
            f"recipe {dataset.recipe_version}"
        ),
        dataset_version=dataset.dataset_version,
        dataset=dataset.artifact,
        cause_event_ids=_unique((*dataset.cause_event_ids, dataset_event_id)),
    )


def drift_request(
    *,
    domain: str,
    dataset_version: str,
    dataset: ArtifactRef,
    evidence: DriftEvidence,
    detail: str,
    drift_event_id: str,
) -> RetrainRequested:
    """Retrain on the domain's latest dataset version because its model drifted; the
    `drift.detected` event it answers is its cause."""
    return RetrainRequested(
        domain=domain,
        reason=RetrainReason.DRIFT,
        detail=detail,
        dataset_version=dataset_version,
        dataset=dataset,
        evidence=evidence,
        cause_event_ids=(drift_event_id,),
    )


def _unique(ids: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))
