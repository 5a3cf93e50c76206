"""A domain's current state and how each change moves it. Pure: no broker, no storage.

`apply_change(state, change, event_id)` returns the new state or raises `ChangeRejected` with a
reason meant for the person who sent the change. A change is accepted or rejected whole: an
example with an unknown label rejects its whole batch, so nothing is ever dropped silently.

The rules this module enforces (the service README repeats them for users):

* Only a recipe may start a domain; any other change for a domain without one is rejected.
* A recipe sets the base model and resets the taxonomy to its labels (the taxonomy version
  becomes the recipe version). For an existing domain that is refused when examples or must-pass
  cases carry labels the recipe lacks: retire or merge those labels first, so data never vanishes
  as a side effect of a recipe edit.
* Taxonomy operations apply in order to the head order of labels: `add` appends, `rename` keeps
  the position and relabels examples and cases, `merge` keeps `into` where it is (appended if
  new) and relabels the sources' examples and cases into it, `retire` removes the label with its
  examples and the must-pass cases that expect it. Unknown labels, renames onto an existing
  label and results with fewer than two labels are rejected.
* Examples are keyed by `example_id` (default: sha256 of the text); a later example with the same
  id replaces the earlier one and counts as the newest. Feedback becomes an example keyed by the
  sha256 of its text, so it corrects the label of a text already in the data.
* A regulation's documents become examples like a data batch. Its must-pass cases replace all
  cases of the same `rule_id` (a new rule version supersedes the old one's cases; documents
  already ingested stay, they are still labelled data).
* With `recipe.data.max_examples_per_label` set, only the newest examples per label are kept,
  after every change; older ones leave the domain for good.
* Every accepted recipe and taxonomy change appends a `TaxonomyStep` to the taxonomy history
  (its event id, the labels after it and, for a taxonomy change, its operations), so a trainer
  can map a champion's head onto today's labels; no other change touches the history.
* Residency: a domain's first recipe fixes where its data lives (`residency`, or none); a
  later recipe naming another residency is refused (the data already lies under the old one's
  root). A data batch, regulation or feedback tagged with a residency other than the domain's
  is refused — so is a tagged one for a domain without a residency, whose data lies in the
  default root. Untagged data is taken as the domain's own.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import assert_never

from adaptmesh_schemas.documents import MustPassRecord, TaxonomyStep
from adaptmesh_schemas.events import (
    BaseModelChanged,
    DataBatchSubmitted,
    FeedbackSubmitted,
    LabelAdded,
    LabelRenamed,
    LabelRetired,
    LabelsMerged,
    RecipeChanged,
    RegulationChanged,
    RetrainReason,
    TaxonomyChanged,
)
from adaptmesh_schemas.events.changes import TaxonomyOperation
from adaptmesh_schemas.values import BaseModelSpec, ExampleSource, LabelledExample

Change = (
    RecipeChanged
    | TaxonomyChanged
    | RegulationChanged
    | BaseModelChanged
    | DataBatchSubmitted
    | FeedbackSubmitted
)
"""Every event that moves a domain's dataset."""

CHANGE_EVENTS: tuple[type[Change], ...] = (
    RecipeChanged,
    TaxonomyChanged,
    RegulationChanged,
    BaseModelChanged,
    DataBatchSubmitted,
)
"""The `Change` events carried by `mesh.changes.v1` (feedback has its own stream)."""

MIN_LABELS = 2
MAX_LISTED_OFFENDERS = 10
TEXT_PREVIEW_CHARS = 40
ID_PREVIEW_CHARS = 16


class ChangeRejected(ValueError):  # noqa: N818  (it names the outcome, as RejectedEvent does)
    """A change that is well-formed but cannot apply to the domain as it stands."""


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled text in a domain's data."""

    example_id: str
    text: str
    label: str
    source_event_id: str
    source: ExampleSource | None = None
    """What kind of change brought it; the gate judges eval slices by it."""
    source_name: str | None = None
    """Which one: the data batch's id, the regulation's rule id (none for feedback)."""


@dataclass(frozen=True, slots=True)
class DomainState:
    """Everything a domain's next dataset version is made from."""

    domain: str
    recipe: RecipeChanged
    base_model: BaseModelSpec
    taxonomy_version: str
    labels: tuple[str, ...]
    """The taxonomy in head order: the order of the classifier's outputs."""
    examples: tuple[Example, ...] = ()
    """Unique by id, oldest first (a replaced example counts as new)."""
    must_pass: tuple[MustPassRecord, ...] = ()
    """Sorted by (rule_id, case_id)."""
    taxonomy_history: tuple[TaxonomyStep, ...] = ()
    """Every recipe and taxonomy change applied, oldest first."""


def default_example_id(text: str) -> str:
    """The id of an example that does not bring one: the sha256 of its text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def change_kind(change: Change) -> str:
    """The `change_kind` of the dataset version a change makes (a `RetrainReason` value)."""
    match change:
        case RecipeChanged():
            reason = RetrainReason.RECIPE
        case TaxonomyChanged():
            reason = RetrainReason.TAXONOMY
        case RegulationChanged():
            reason = RetrainReason.REGULATION
        case BaseModelChanged():
            reason = RetrainReason.BASE_MODEL
        case DataBatchSubmitted():
            reason = RetrainReason.DATA
        case FeedbackSubmitted():
            reason = RetrainReason.FEEDBACK
        case _:
            assert_never(change)
    return reason.value


def apply_change(state: DomainState | None, change: Change, event_id: str) -> DomainState:
    """The domain's state after `change` (whose envelope id is `event_id`).

    Raises `ChangeRejected` when the change cannot apply; `state` is never modified.
    """
    if isinstance(change, RecipeChanged):
        return _capped(_apply_recipe(state, change, event_id))
    if state is None:
        raise ChangeRejected(
            f"{_subject(change)}: the domain has no recipe yet; publish a change.recipe for "
            f"{change.domain!r} first (nothing was ingested)"
        )
    if isinstance(change, DataBatchSubmitted | RegulationChanged | FeedbackSubmitted):
        _require_residency(state, change)
    match change:
        case TaxonomyChanged():
            new_state = _apply_taxonomy(state, change, event_id)
        case RegulationChanged():
            new_state = _apply_regulation(state, change, event_id)
        case BaseModelChanged():
            new_state = replace(state, base_model=change.base_model)
        case DataBatchSubmitted():
            new_state = _apply_examples(
                state, change, change.examples, event_id, ("data-batch", change.batch_id)
            )
        case FeedbackSubmitted():
            feedback = LabelledExample(
                text=change.text,
                label=change.true_label,
                example_id=default_example_id(change.text),
            )
            new_state = _apply_examples(state, change, (feedback,), event_id, ("feedback", None))
        case _:
            assert_never(change)
    return _capped(new_state)


# -- recipe ------------------------------------------------------------------------------------


def _apply_recipe(state: DomainState | None, recipe: RecipeChanged, event_id: str) -> DomainState:
    subject = _subject(recipe)
    repeated = _repeated(recipe.labels)
    if repeated:
        raise ChangeRejected(f"{subject}: labels repeat: {_quoted(repeated)}")
    step = TaxonomyStep(
        step_id=event_id,
        kind="recipe",
        taxonomy_version=recipe.recipe_version,
        labels=recipe.labels,
    )
    if state is None:
        return DomainState(
            domain=recipe.domain,
            recipe=recipe,
            base_model=recipe.base_model,
            taxonomy_version=recipe.recipe_version,
            labels=recipe.labels,
            taxonomy_history=(step,),
        )
    if recipe.residency != state.recipe.residency:
        raise ChangeRejected(
            f"{subject}: it would move the domain's residency from "
            f"{_residency(state.recipe.residency)} to {_residency(recipe.residency)}, but its "
            "data and models already lie under the first one's artifact root; a domain's "
            "residency is fixed by its first recipe"
        )
    kept = set(recipe.labels)
    orphaned_examples = Counter(e.label for e in state.examples if e.label not in kept)
    orphaned_cases = Counter(
        c.expected_label for c in state.must_pass if c.expected_label not in kept
    )
    if orphaned_examples or orphaned_cases:
        orphans = ", ".join(
            f"{label!r} ({orphaned_examples[label]} examples, {orphaned_cases[label]} must-pass "
            "cases)"
            for label in sorted(orphaned_examples.keys() | orphaned_cases.keys())
        )
        raise ChangeRejected(
            f"{subject}: it would reset the taxonomy to [{', '.join(recipe.labels)}], but the "
            f"domain holds data for labels the recipe lacks: {orphans}; retire or merge those "
            "labels with a change.taxonomy first, or keep them in the recipe's labels"
        )
    return replace(
        state,
        recipe=recipe,
        base_model=recipe.base_model,
        taxonomy_version=recipe.recipe_version,
        labels=recipe.labels,
        taxonomy_history=(*state.taxonomy_history, step),
    )


def _require_residency(
    state: DomainState, change: DataBatchSubmitted | RegulationChanged | FeedbackSubmitted
) -> None:
    domain_residency = state.recipe.residency
    if change.residency is None or change.residency == domain_residency:
        return
    raise ChangeRejected(
        f"{_subject(change)}: residency mismatch: the data is tagged residency "
        f"{change.residency!r} but domain {state.domain!r} keeps its data in "
        f"{_residency(domain_residency)}; nothing was ingested"
    )


def _residency(residency: str | None) -> str:
    return repr(residency) if residency else "no residency (the default artifact root)"


# -- taxonomy ----------------------------------------------------------------------------------


def _apply_taxonomy(state: DomainState, change: TaxonomyChanged, event_id: str) -> DomainState:
    subject = _subject(change)
    labels = list(state.labels)
    # What each label of the current taxonomy becomes; None once retired.
    fate: dict[str, str | None] = {label: label for label in state.labels}
    for number, operation in enumerate(change.operations, start=1):
        where = f"{subject}: operation {number} ({operation.op})"
        _apply_operation(operation, labels, fate, where)
    if len(labels) < MIN_LABELS:
        raise ChangeRejected(
            f"{subject}: the taxonomy would be left with {len(labels)} label(s) "
            f"[{', '.join(labels)}]; a classifier needs at least {MIN_LABELS}"
        )
    examples = tuple(
        replace(e, label=new_label)
        for e in state.examples
        if (new_label := fate[e.label]) is not None
    )
    must_pass = tuple(
        case.model_copy(update={"expected_label": new_label})
        for case in state.must_pass
        if (new_label := fate[case.expected_label]) is not None
    )
    step = TaxonomyStep(
        step_id=event_id,
        kind="taxonomy",
        taxonomy_version=change.taxonomy_version,
        labels=tuple(labels),
        operations=change.operations,
    )
    return replace(
        state,
        taxonomy_version=change.taxonomy_version,
        labels=tuple(labels),
        examples=examples,
        must_pass=must_pass,
        taxonomy_history=(*state.taxonomy_history, step),
    )


def _apply_operation(
    operation: TaxonomyOperation, labels: list[str], fate: dict[str, str | None], where: str
) -> None:
    """Edit `labels` (head order) and `fate` in place, or reject."""

    def relabel(old: str, new: str | None) -> None:
        for original, current in fate.items():
            if current == old:
                fate[original] = new

    match operation:
        case LabelAdded(label=label):
            if label in labels:
                raise ChangeRejected(f"{where}: {label!r} already exists")
            labels.append(label)
        case LabelRenamed(from_label=old, to_label=new):
            _require_present([old], labels, where)
            if new in labels:
                raise ChangeRejected(
                    f"{where}: cannot rename {old!r} to {new!r}, which already exists; "
                    f"merge {old!r} into {new!r} instead"
                )
            labels[labels.index(old)] = new
            relabel(old, new)
        case LabelsMerged(sources=sources, into=into):
            repeated = _repeated(sources)
            if repeated:
                raise ChangeRejected(f"{where}: sources repeat: {_quoted(repeated)}")
            _require_present(sources, labels, where)
            if into not in labels:
                labels.append(into)
            for source in sources:
                if source != into:
                    labels.remove(source)
                    relabel(source, into)
        case LabelRetired(label=label):
            _require_present([label], labels, where)
            labels.remove(label)
            relabel(label, None)
        case _:
            assert_never(operation)


def _require_present(wanted: Sequence[str], labels: list[str], where: str) -> None:
    missing = [label for label in wanted if label not in labels]
    if missing:
        raise ChangeRejected(
            f"{where}: {_quoted(missing)} not in the taxonomy [{', '.join(labels)}]"
        )


# -- examples and must-pass cases --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Labelled:
    """Anything carrying a label, for the unknown-label check and its message."""

    ref: str
    text: str
    label: str


def _apply_examples(
    state: DomainState,
    change: Change,
    incoming: Sequence[LabelledExample],
    event_id: str,
    source: tuple[ExampleSource, str | None],
) -> DomainState:
    examples = _examples_from(incoming, event_id, source)
    _require_known_labels(state, change, [_labelled_example(e) for e in examples], "examples")
    return replace(state, examples=_merged(state.examples, examples))


def _apply_regulation(state: DomainState, change: RegulationChanged, event_id: str) -> DomainState:
    rule = change.regulation
    repeated = _repeated([case.case_id for case in change.must_pass])
    if repeated:
        raise ChangeRejected(f"{_subject(change)}: must-pass case ids repeat: {_quoted(repeated)}")
    documents = _examples_from(change.documents, event_id, ("regulation", rule.rule_id))
    cases = [
        MustPassRecord(
            rule_id=rule.rule_id,
            rule_version=rule.rule_version,
            case_id=case.case_id,
            text=case.text,
            expected_label=case.expected_label,
        )
        for case in change.must_pass
    ]
    _require_known_labels(
        state,
        change,
        [_labelled_example(e) for e in documents]
        + [
            _Labelled(f"must-pass case {c.rule_id}/{c.case_id}", c.text, c.expected_label)
            for c in cases
        ],
        "documents and must-pass cases",
    )
    must_pass = sorted(
        [case for case in state.must_pass if case.rule_id != rule.rule_id] + cases,
        key=lambda case: (case.rule_id, case.case_id),
    )
    return replace(state, examples=_merged(state.examples, documents), must_pass=tuple(must_pass))


def _examples_from(
    incoming: Sequence[LabelledExample],
    event_id: str,
    source: tuple[ExampleSource, str | None],
) -> list[Example]:
    kind, name = source
    return [
        Example(
            example_id=example.example_id or default_example_id(example.text),
            text=example.text,
            label=example.label,
            source_event_id=event_id,
            source=kind,
            source_name=name,
        )
        for example in incoming
    ]


def _labelled_example(example: Example) -> _Labelled:
    return _Labelled(f"example {_short(example.example_id)}", example.text, example.label)


def _merged(existing: Sequence[Example], incoming: Sequence[Example]) -> tuple[Example, ...]:
    """`existing` then `incoming`; a later example replaces an earlier one with its id and
    takes the newest place."""
    by_id = {example.example_id: example for example in existing}
    for example in incoming:
        by_id.pop(example.example_id, None)
        by_id[example.example_id] = example
    return tuple(by_id.values())


def _require_known_labels(
    state: DomainState, change: Change, items: Sequence[_Labelled], what: str
) -> None:
    known = set(state.labels)
    offenders = [item for item in items if item.label not in known]
    if not offenders:
        return
    unknown = list(dict.fromkeys(item.label for item in offenders))
    listed = "; ".join(
        f"{item.ref} {_preview(item.text)!r} -> {item.label!r}"
        for item in offenders[:MAX_LISTED_OFFENDERS]
    )
    more = len(offenders) - MAX_LISTED_OFFENDERS
    if more > 0:
        listed += f"; and {more} more"
    raise ChangeRejected(
        f"{_subject(change)}: {len(offenders)} of {len(items)} {what} have labels not in "
        f"taxonomy version {state.taxonomy_version!r} [{', '.join(state.labels)}]: unknown "
        f"{_quoted(unknown)}. Offending: {listed}. Nothing from this change was ingested; add "
        "the labels with a change.taxonomy first, or correct the labels"
    )


# -- the per-label cap -------------------------------------------------------------------------


def _capped(state: DomainState) -> DomainState:
    """Keep only the newest `max_examples_per_label` examples of each label."""
    cap = state.recipe.data.max_examples_per_label
    if cap is None:
        return state
    kept: Counter[str] = Counter()
    newest_first: list[Example] = []
    for example in reversed(state.examples):
        if kept[example.label] < cap:
            kept[example.label] += 1
            newest_first.append(example)
    if len(newest_first) == len(state.examples):
        return state
    return replace(state, examples=tuple(reversed(newest_first)))


# -- wording -----------------------------------------------------------------------------------


def _subject(change: Change) -> str:
    """How a rejection names the change it refuses."""
    match change:
        case RecipeChanged():
            what = f"recipe version {change.recipe_version!r}"
        case TaxonomyChanged():
            what = f"to taxonomy version {change.taxonomy_version!r}"
        case RegulationChanged():
            rule = change.regulation
            what = f"rule {rule.rule_id!r} version {rule.rule_version!r}"
        case BaseModelChanged():
            what = f"to {change.base_model.model_id!r}"
        case DataBatchSubmitted():
            what = f"batch {change.batch_id!r}"
        case FeedbackSubmitted():
            what = f"for prediction {change.prediction_id!r}"
        case _:
            assert_never(change)
    return f"{change.event_name} {what} of domain {change.domain!r} rejected"


def _repeated(values: Sequence[str]) -> list[str]:
    return [value for value, count in Counter(values).items() if count > 1]


def _quoted(values: Sequence[str]) -> str:
    return ", ".join(repr(value) for value in values)


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= TEXT_PREVIEW_CHARS:
        return flat
    return flat[: TEXT_PREVIEW_CHARS - 1] + "…"


def _short(example_id: str) -> str:
    if len(example_id) <= ID_PREVIEW_CHARS:
        return example_id
    return example_id[: ID_PREVIEW_CHARS - 4] + "…"
