"""Documents that live in the artifact store and are referenced by events (claim checks).

They are contracts just like events: ingestion writes dataset snapshots that training and the
gate read; training writes model manifests that the gate and serving read; the gate writes
reports. Like events they ignore unknown fields, so producers can add to them compatibly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from adaptmesh_schemas.events.changes import RecipeChanged, TaxonomyOperation
from adaptmesh_schemas.events.gate import LabelMetrics
from adaptmesh_schemas.values import (
    ArtifactRef,
    BaseModelSpec,
    DriftPolicy,
    ExampleSource,
    GatePolicy,
    Label,
    Lineage,
    Sha256,
    SliceThreshold,
    SplitName,
    Value,
)


class DatasetExample(Value):
    example_id: str = Field(description="Stable id (sha256 of the text unless given).")
    text: str = Field(description="The text.")
    label: Label = Field(description="Its label in this version's taxonomy.")
    split: SplitName = Field(description="train or eval, from a hash of example_id.")
    source_event_id: str = Field(description="ce_id of the event that brought it.")
    source: ExampleSource | None = Field(
        default=None,
        description="What kind of change brought it (unset in snapshots written before the "
        "field existed); the gate judges slices by it.",
    )
    source_name: str | None = Field(
        default=None,
        description="Which one: the data batch's `batch_id`, the regulation's `rule_id`; "
        "unset for feedback.",
    )

    @property
    def slices(self) -> tuple[str, ...]:
        """The eval slices this example belongs to: its source kind and `<kind>:<name>`."""
        if self.source is None:
            return ()
        if self.source_name is None:
            return (self.source,)
        return (self.source, f"{self.source}:{self.source_name}")


class MustPassRecord(Value):
    rule_id: str = Field(description="Rule the case belongs to.")
    rule_version: str = Field(description="Version of that rule.")
    case_id: str = Field(description="Case id within the rule.")
    text: str = Field(description="Input.")
    expected_label: Label = Field(description="Label the model must give.")


class TaxonomyStep(Value):
    """One change to a domain's taxonomy: a recipe (a reset) or a taxonomy change.

    A trainer warm-starting from a champion replays the steps made after the champion's to map
    the champion's head rows onto the current labels (`adaptmesh_ml.head_mapping`).
    """

    step_id: str = Field(description="ce_id of the change event that made the step.")
    kind: Literal["recipe", "taxonomy"] = Field(
        description="recipe: the labels were reset to the recipe's; taxonomy: operations applied."
    )
    taxonomy_version: str = Field(description="Taxonomy version after the step.")
    labels: tuple[Label, ...] = Field(description="Labels after the step, in head order.")
    operations: tuple[TaxonomyOperation, ...] = Field(
        default=(),
        description="The operations of a taxonomy change, in order; empty for a recipe step.",
    )


class DatasetSnapshot(Value):
    """One immutable dataset version: everything needed to train and judge a model."""

    format: Literal["adaptmesh.dataset/1"] = Field(
        default="adaptmesh.dataset/1", description="Format."
    )
    domain: str = Field(description="Domain.")
    parent_version: str | None = Field(default=None, description="Version it derives from.")
    recipe: RecipeChanged = Field(description="Recipe in force (labels field superseded).")
    base_model: BaseModelSpec = Field(description="Base model in force.")
    taxonomy_version: str = Field(description="Taxonomy version in force.")
    labels: tuple[Label, ...] = Field(description="Labels, in head order.")
    examples: tuple[DatasetExample, ...] = Field(description="All examples with their split.")
    must_pass: tuple[MustPassRecord, ...] = Field(default=(), description="Cases in force.")
    cause_event_ids: tuple[str, ...] = Field(default=(), description="Events folded in.")
    taxonomy_history: tuple[TaxonomyStep, ...] = Field(
        default=(),
        description="Every recipe and taxonomy change applied to the domain, oldest first; the "
        "last step's labels (if any) are `labels`. A recipe step resets the labels to the "
        "recipe's. Empty in snapshots written before the field existed.",
    )


class ModelFile(Value):
    path: str = Field(description="Path inside the model directory.")
    sha256: Sha256 = Field(description="Digest of the file.")
    size_bytes: int = Field(ge=0, description="Size.")


class ModelManifest(Value):
    """The manifest of a model directory: its files with digests, and where it came from."""

    format: Literal["adaptmesh.model/1"] = Field(
        default="adaptmesh.model/1", description="Document format and version."
    )
    domain: str = Field(description="Domain.")
    model_version: str = Field(description="Id of the model.")
    task: Literal["sequence-classification"] = Field(description="Task head.")
    labels: tuple[Label, ...] = Field(description="Head labels, in order.")
    files: tuple[ModelFile, ...] = Field(description="Adapter, head, label map, ...")
    lineage: Lineage = Field(description="Dataset, recipe, base model, parent, code, seed.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Training metrics.")


class MustPassOutcome(Value):
    rule_id: str = Field(description="Rule.")
    case_id: str = Field(description="Case.")
    expected_label: Label = Field(description="Expected.")
    predicted_label: Label = Field(description="What the candidate said.")
    passed: bool = Field(description="Whether they agree.")


class ModelEvaluation(Value):
    model_version: str = Field(description="Model evaluated.")
    macro_f1: float = Field(description="Macro-F1 over labels with support.")
    accuracy: float = Field(description="Accuracy.")
    per_label: dict[str, LabelMetrics] = Field(description="Per-label metrics.")
    confusion: dict[str, dict[str, int]] = Field(description="true label -> predicted -> count.")
    must_pass: tuple[MustPassOutcome, ...] = Field(default=(), description="Must-pass outcomes.")


class Interval(Value):
    """An estimate with its confidence bounds."""

    estimate: float = Field(description="The point estimate.")
    low: float = Field(description="Lower confidence bound.")
    high: float = Field(description="Upper confidence bound.")


class PairedComparison(Value):
    """Candidate against champion on the same eval examples (differences are candidate minus
    champion)."""

    examples: int = Field(ge=0, description="Eval examples both were scored on.")
    confidence: float = Field(
        description="Confidence of each bound, one-sided (the policy's): the difference is at "
        "least `low`, and at most `high`, each with this confidence; together `[low, high]` is "
        "a two-sided interval at 2 x confidence - 1 (90% for 0.95)."
    )
    bootstrap_samples: int = Field(ge=0, description="Bootstrap resamples drawn.")
    seed: int = Field(description="Seed of the resampling (fixed per candidate and dataset).")
    macro_f1_difference: Interval = Field(description="Difference in macro-F1.")
    accuracy_difference: Interval = Field(description="Difference in accuracy.")
    candidate_only_right: int = Field(
        ge=0, description="Examples the candidate got right and the champion wrong (McNemar b)."
    )
    champion_only_right: int = Field(
        ge=0, description="Examples the champion got right and the candidate wrong (McNemar c)."
    )
    mcnemar_p_worse: float = Field(
        ge=0,
        le=1,
        description="Exact one-sided McNemar p-value that the candidate is less "
        "accurate than the champion.",
    )
    mcnemar_p_better: float = Field(
        ge=0,
        le=1,
        description="Exact one-sided McNemar p-value that the candidate is more "
        "accurate than the champion.",
    )
    per_label_confidence: float = Field(
        description="Confidence of each per-label bound, one-sided: Bonferroni over the k "
        "labels compared, 1 - (1 - confidence) / k."
    )
    per_label: dict[str, Interval] = Field(
        default_factory=dict, description="Difference in F1 per label both models know."
    )
    resolution: float = Field(
        ge=0,
        description="Half-width of the macro-F1 difference's interval: differences smaller "
        "than this cannot be told from noise on this eval split.",
    )
    too_small: str | None = Field(
        default=None,
        description="Set when the eval split is too small to decide what the policy asks "
        "(e.g. the interval is wider than the margin): says so and what would help.",
    )


class SliceResult(Value):
    """Both models on one slice of the eval split."""

    slice: str = Field(description="Slice name, e.g. `regulation` or `data-batch:b-17`.")
    examples: int = Field(ge=0, description="Eval examples in the slice.")
    candidate_accuracy: float | None = Field(default=None, description="None without examples.")
    champion_accuracy: float | None = Field(default=None, description="None without a champion.")
    accuracy_difference: Interval | None = Field(
        default=None, description="Candidate minus champion accuracy, when both are known."
    )
    threshold: SliceThreshold | None = Field(
        default=None, description="The policy's threshold for it, if any."
    )
    passed: bool | None = Field(default=None, description="None when not judged (no threshold).")


class CheckResult(Value):
    """One check of the policy and its verdict."""

    check: str = Field(
        description="floor, non-inferiority, superiority, label-regression, "
        "label-floor, slice, must-pass, or info (a line that judges nothing)."
    )
    passed: bool = Field(description="Whether it passed (info lines always do).")
    reason: str = Field(description="One line for people.")


class ReportedModel(Value):
    """Which model a report speaks of and where it came from."""

    model_version: str = Field(description="Model.")
    artifact: ArtifactRef | None = Field(default=None, description="Its manifest.")
    labels: tuple[Label, ...] = Field(default=(), description="Head labels.")
    lineage: Lineage | None = Field(default=None, description="Its lineage.")


class GateReport(Value):
    """Why a candidate was approved or rejected."""

    format: Literal["adaptmesh.gate-report/1"] = Field(
        default="adaptmesh.gate-report/1", description="Format."
    )
    domain: str = Field(description="Domain.")
    dataset_version: str = Field(description="Dataset whose eval split and cases were used.")
    candidate: ModelEvaluation = Field(description="The candidate's evaluation.")
    champion: ModelEvaluation | None = Field(default=None, description="The champion's, if any.")
    approved: bool = Field(description="The decision.")
    reasons: tuple[str, ...] = Field(description="One line per check, passed or failed.")
    # Added with the paired statistics (all optional: older reports lack them).
    decided_at: datetime | None = Field(default=None, description="When the gate decided.")
    policy: GatePolicy | None = Field(default=None, description="The policy applied.")
    checks: tuple[CheckResult, ...] = Field(
        default=(), description="Each check with its verdict (`reasons` are their lines)."
    )
    comparison: PairedComparison | None = Field(
        default=None, description="The paired statistics, when there is a champion."
    )
    slices: tuple[SliceResult, ...] = Field(default=(), description="Every slice present.")
    candidate_model: ReportedModel | None = Field(
        default=None, description="The candidate's artifact and lineage."
    )
    champion_model: ReportedModel | None = Field(
        default=None, description="The champion's artifact and lineage."
    )


class ReferenceExample(Value):
    """How a model answered one example of its eval split."""

    example_id: str = Field(description="The dataset example.")
    label: Label = Field(description="Its true label.")
    predicted: Label = Field(description="What the model said.")
    confidence: float = Field(ge=0, le=1, description="Probability of the predicted label.")
    margin: float = Field(ge=0, le=1, description="Top probability minus the runner-up's.")
    embedding_sketch: tuple[float, ...] = Field(
        description="The same fixed projection of the embedding serving logs."
    )


class ReferenceProfile(Value):
    """A production model's behaviour on its own eval split: what drift is measured against.

    Written by the gate when it promotes the model (it has just scored the eval split);
    drift-sensing derives every detector's reference from it — the embedding sample, the
    predicted-label mix, the confidence calibration and the accuracy — and calibrates each
    detector by simulating no-drift streams drawn from it.
    """

    format: Literal["adaptmesh.reference-profile/1"] = Field(
        default="adaptmesh.reference-profile/1", description="Format."
    )
    domain: str = Field(description="Domain.")
    model_version: str = Field(description="The model profiled.")
    dataset_version: str = Field(description="Dataset whose eval split was used.")
    labels: tuple[Label, ...] = Field(description="The model's head labels, in order.")
    sketch_dimensions: int = Field(ge=0, description="Length of every embedding sketch.")
    accuracy: float = Field(ge=0, le=1, description="Accuracy on the eval split.")
    drift: DriftPolicy = Field(
        default_factory=DriftPolicy,
        description="The recipe's drift policy in force for the dataset the model was trained on.",
    )
    examples: tuple[ReferenceExample, ...] = Field(description="One per eval example.")


class LabelingItem(Value):
    prediction_id: str = Field(description="Send feedback for this id with the true label.")
    text: str = Field(description="The input.")
    predicted: Label = Field(description="What the model said.")
    confidence: float = Field(ge=0, le=1, description="Probability of the predicted label.")
    margin: float | None = Field(default=None, description="Top minus runner-up probability.")


class LabelingSample(Value):
    """The most uncertain recent inputs of a drifting domain, for people to label."""

    format: Literal["adaptmesh.labeling-sample/1"] = Field(
        default="adaptmesh.labeling-sample/1", description="Format."
    )
    domain: str = Field(description="Domain.")
    model_version: str = Field(description="Model that answered.")
    items: tuple[LabelingItem, ...] = Field(description="Least certain first.")
