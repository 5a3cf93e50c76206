"""`mesh.changes.v1`: what users tell the mesh about their domain."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from adaptmesh_schemas.topics import Stream
from adaptmesh_schemas.values import (
    BaseModelSpec,
    DataSelection,
    DriftPolicy,
    GatePolicy,
    Label,
    LabelledExample,
    LoraSettings,
    MustPassCase,
    RegulationRef,
    Residency,
    TrainingSettings,
    Value,
)
from adaptmesh_schemas.versioning import FLEET_DOMAIN, Domain, MeshEvent, event


@event("change.recipe", stream=Stream.CHANGES, version="1.4")
class RecipeChanged(MeshEvent):
    """Registers or replaces a domain's recipe: how its model is built and judged.

    1.4 (additive): `residency` — where the domain's data and models may live.

    1.3 (additive): the gate policy compares candidate and champion with paired statistics
    (`gate.test`, `margin`, `confidence`, `bootstrap_samples`), per-label F1 floors and
    thresholds per slice; `max_regression` is judged on a confidence bound, not a point.

    1.2 (additive): `drift` — the target false-alarm rate (ERT), window and what an alarm does.
    1.1 (additive): training defaults that train without tuning (early stopping, lr 2e-3,
    batch 16), warm starts from the champion (`training.init`, replay share), and LoRA target
    modules resolved per architecture when the recipe names none.
    """

    recipe_version: str = Field(min_length=1, description="User-chosen version of this recipe.")
    base_model: BaseModelSpec = Field(description="Pretrained model to adapt.")
    task: Literal["sequence-classification"] = Field(
        default="sequence-classification", description="The task head to train."
    )
    labels: tuple[Label, ...] = Field(min_length=2, description="The initial label taxonomy.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="Adapter settings.")
    training: TrainingSettings = Field(
        default_factory=TrainingSettings, description="Optimisation settings."
    )
    gate: GatePolicy = Field(default_factory=GatePolicy, description="Promotion policy.")
    data: DataSelection = Field(default_factory=DataSelection, description="Data selection.")
    drift: DriftPolicy = Field(
        default_factory=DriftPolicy, description="How drift is detected and what it leads to."
    )
    residency: Residency | None = Field(
        default=None,
        description="Where the domain's data and models may live, e.g. `eu`: every artifact "
        "lands under that residency's root, data tagged with another residency is refused and "
        "training runs only on Ray nodes offering it. Unset = no constraint. Fixed by the "
        "domain's first recipe: a later recipe may not change it.",
    )


# `op` is required, with no default: a discriminated union reads the tag from the input, so a
# body without `op` was never accepted, and a default would only make the generated JSON Schema
# say otherwise (`{"label": "x"}` would then match both `add` and `retire`). Every body written
# by these models has always carried `op`, so this changes no record on the wire.
_OP_DESCRIPTION = "Which operation this is; required, it selects the operation's fields."


class LabelAdded(Value):
    op: Literal["add"] = Field(description=_OP_DESCRIPTION)
    label: Label = Field(description="The new label.")
    description: str | None = Field(default=None, description="What the label means.")


class LabelRenamed(Value):
    op: Literal["rename"] = Field(description=_OP_DESCRIPTION)
    from_label: Label = Field(description="Existing label.")
    to_label: Label = Field(description="Its new name; existing examples are relabelled.")


class LabelsMerged(Value):
    op: Literal["merge"] = Field(description=_OP_DESCRIPTION)
    sources: tuple[Label, ...] = Field(min_length=1, description="Labels folded into `into`.")
    into: Label = Field(description="The surviving label (created if new).")


class LabelRetired(Value):
    op: Literal["retire"] = Field(description=_OP_DESCRIPTION)
    label: Label = Field(description="Label no longer predicted; its examples leave the dataset.")


TaxonomyOperation = Annotated[
    LabelAdded | LabelRenamed | LabelsMerged | LabelRetired, Field(discriminator="op")
]


@event("change.taxonomy", stream=Stream.CHANGES, version="1.0")
class TaxonomyChanged(MeshEvent):
    """Edits the label taxonomy; operations apply in order.

    Each operation names itself with `op`: `add`, `rename`, `merge` or `retire`. `op` is
    required; consumers have always refused an operation without it, so saying so in the schema
    (it used to show a default) changed no record and the version stays 1.0.
    """

    taxonomy_version: str = Field(min_length=1, description="Version after the change.")
    operations: tuple[TaxonomyOperation, ...] = Field(min_length=1, description="The edits.")


@event("change.regulation", stream=Stream.CHANGES, version="1.1")
class RegulationChanged(MeshEvent):
    """A rule changed: its documents become labelled data, its cases become gate conditions.

    1.1 (additive): `residency` tags where its documents may live.
    """

    regulation: RegulationRef = Field(description="Which rule, which version, from when.")
    title: str = Field(default="", description="Human-readable title.")
    documents: tuple[LabelledExample, ...] = Field(
        default=(), description="Labelled examples that illustrate the rule."
    )
    must_pass: tuple[MustPassCase, ...] = Field(
        default=(), description="Cases every promoted model must get right."
    )
    residency: Residency | None = Field(
        default=None,
        description="Where this data may live (1.1). Refused (dead-lettered) when the domain "
        "declares another residency; unset = the domain's own.",
    )


@event("change.base_model", stream=Stream.CHANGES, version="1.0")
class BaseModelChanged(MeshEvent):
    """Moves the domain to another base model; the adapter is retrained from scratch."""

    base_model: BaseModelSpec = Field(description="The new base model.")
    reason: str = Field(default="", description="Why, for the audit trail.")


@event("change.base_model_released", stream=Stream.CHANGES, version="1.0")
class BaseModelReleased(MeshEvent):
    """A new base model replaces an old one across the fleet: every domain on `old_base` (or
    the selected ones among them) moves to `new_base` through its own `change.base_model`."""

    domain: Domain = Field(
        default=FLEET_DOMAIN,
        description=f"Always `{FLEET_DOMAIN}`, the reserved key of fleet-wide events (Kafka key "
        "and CloudEvents subject); the domains concerned are chosen by `old_base` and `domains`.",
    )
    old_base: BaseModelSpec = Field(
        description="The base model being replaced; a domain is on it when its model_id, "
        "revision and gguf_file are all equal."
    )
    new_base: BaseModelSpec = Field(description="The base model those domains move to.")
    domains: tuple[Domain, ...] = Field(
        default=(),
        description="Only these domains (each must be on `old_base`); empty = every domain on "
        "`old_base`.",
    )
    reason: str = Field(default="", description="Why, for the audit trail of every domain moved.")

    @field_validator("domain")
    @classmethod
    def _fleet_key(cls, domain: str) -> str:
        if domain != FLEET_DOMAIN:
            raise ValueError(f"a base-model release is fleet-wide: its domain is {FLEET_DOMAIN!r}")
        return domain


@event("change.data_batch", stream=Stream.CHANGES, version="1.1")
class DataBatchSubmitted(MeshEvent):
    """New labelled examples.

    1.1 (additive): `residency` tags where the examples may live.
    """

    batch_id: str = Field(min_length=1, description="Producer's id for the batch.")
    examples: tuple[LabelledExample, ...] = Field(min_length=1, description="The examples.")
    source: str = Field(default="", description="Where the data came from.")
    residency: Residency | None = Field(
        default=None,
        description="Where this data may live (1.1). Refused (dead-lettered) when the domain "
        "declares another residency; unset = the domain's own.",
    )


@event("change.rollback", stream=Stream.CHANGES, version="1.0")
class RollbackRequested(MeshEvent):
    """Puts an earlier approved model of the domain back into production, on purpose.

    The evaluation gate handles it: it re-promotes `to_version` (default: the model that served
    before the current one) after verifying its artifact, and the new `model.ready` says it is
    a rollback, of what, and who asked. A target the gate never approved, or whose files fail
    verification, is refused (`gate.rollback_refused` and a dead letter); serving is unchanged.
    """

    to_version: str | None = Field(
        default=None,
        min_length=1,
        description="The earlier approved model to serve again; unset = the previous champion.",
    )
    reason: str = Field(min_length=1, description="Why, for the audit trail.")
    requested_by: str = Field(
        default="", description="Who asks (a person or a system), for the audit trail."
    )
