"""Carrying a champion's classification head over a taxonomy change, for a warm-started retrain.

Two pure steps. `map_labels` replays the taxonomy steps made since the champion's dataset
(`DatasetSnapshot.taxonomy_history`) and says, for every label of the new head, which of the
champion's ("parent") labels its row is built from. `map_head` builds the new head's weight and
bias from the parent's rows accordingly. No model, no files: the trainer loads and saves.

How each kind of label is initialised, and why:

* **kept or renamed** (one source): the parent's row and bias are copied. A rename changes the
  name, not the class; the learned decision boundary survives unchanged.
* **merged** (several sources): weight = the mean of the source rows, bias = logsumexp of the
  source biases. The merged class should get the probability mass of its sources together,
  p(merged) = sum of p(source), i.e. its logit should be logsumexp of the sources' logits
  z_i = w_i.h + b_i. That is not linear in h, so a linear row can only approximate it: with
  w = mean(w_i) and b = logsumexp(b_i) the logit is exact whenever the sources' weight terms
  w_i.h agree (then logsumexp_i(w_i.h + b_i) = w.h + logsumexp_i(b_i)). It equals the textbook
  "mean bias + log k" when the source biases are equal, and otherwise exceeds it by the Jensen
  gap, so a dominant source keeps its mass instead of being averaged down to the others'.
  Without a bias term the log k cannot be added: the merged class starts somewhat under-weighted
  and training corrects it.
* **added** (no source): the row comes from `fresh_weight`, the base model's own head
  initialisation, so new rows are small and not all identical (identical rows would get
  identical gradients); its bias is the mean bias of the rows copied from the parent (of all the
  parent's rows when none is copied), so the new class starts neither favoured nor suppressed
  relative to a typical learned class.
* **retired**: no row; its examples left the dataset with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import assert_never

import torch

from adaptmesh_schemas.documents import TaxonomyStep
from adaptmesh_schemas.events import LabelAdded, LabelRenamed, LabelRetired, LabelsMerged

HeadMapping = dict[str, tuple[str, ...]]
"""New label -> the parent (champion) labels its row is built from; () = a new row.
Keys are in the new head's order."""


def map_labels(
    parent_labels: Sequence[str],
    parent_step_id: str | None,
    history: Sequence[TaxonomyStep],
    labels: Sequence[str],
) -> HeadMapping:
    """Which parent rows each of `labels` (the new head, in order) is built from.

    `parent_step_id` is the id of the last taxonomy step of the parent's dataset (the
    `step_id` of its snapshot's last `taxonomy_history` entry; None when that history is empty)
    and `history` the current dataset's. The steps of `history` after it are replayed over the
    parent's labels, starting from {label: (label,)}:

    * `add` x: x maps to () (a new class);
    * `rename` a -> b: b takes a's sources, a goes;
    * `merge` sources -> into: into takes the union, in order and without repeats, of its own
      sources (if it existed) and the sources'; the sources go;
    * `retire` x: x goes;
    * a recipe step resets the labels to the recipe's, each keeping the sources of the label of
      the same name and () otherwise.

    With `parent_step_id` None (the parent's dataset predates the history) every step is
    replayed. With an id the history does not hold, nothing can be replayed and labels are
    matched by name: a label keeps the parent row of the same name, else it is new.

    The result's keys are exactly `labels`, in order. A label the replay did not produce maps to
    () — a fresh row is always safe. Operations naming labels the replay does not hold (the
    parent's labels disagree with the history) contribute nothing and are otherwise ignored.
    What matters is a learned class being lost without a step that retires it: `ValueError` when
    the replay ends with a label built from parent rows that `labels` lacks, since then the
    history does not lead to `labels` and mapping rows by it would be a guess.
    """
    _require_unique(parent_labels, "parent labels")
    _require_unique(labels, "labels")
    step_ids = [step.step_id for step in history]
    if parent_step_id is not None and parent_step_id not in step_ids:
        parent = set(parent_labels)
        return {label: (label,) if label in parent else () for label in labels}
    start = 0 if parent_step_id is None else step_ids.index(parent_step_id) + 1
    replayed = history[start:]
    sources: HeadMapping = {label: (label,) for label in parent_labels}
    for step in replayed:
        sources = _replayed(sources, step)
    wanted = set(labels)
    lost = {label: rows for label, rows in sources.items() if rows and label not in wanted}
    if lost:
        since = (
            "in the whole history" if parent_step_id is None else f"after step {parent_step_id!r}"
        )
        ends = ", ".join(f"{label!r} (from {', '.join(rows)})" for label, rows in lost.items())
        raise ValueError(
            f"the taxonomy history does not lead to the labels [{', '.join(labels)}]: replaying "
            f"the {len(replayed)} step(s) {since} over the parent's labels "
            f"[{', '.join(parent_labels)}] keeps {ends}, which the labels lack and no step "
            "retires"
        )
    return {label: sources.get(label, ()) for label in labels}


def _replayed(sources: HeadMapping, step: TaxonomyStep) -> HeadMapping:
    if step.kind == "recipe":
        return {label: sources.get(label, ()) for label in step.labels}
    result = dict(sources)
    for operation in step.operations:
        match operation:
            case LabelAdded(label=label):
                result[label] = ()
            case LabelRenamed(from_label=old, to_label=new):
                result[new] = result.pop(old, ())
            case LabelsMerged(sources=merged, into=into):
                union = [*result.get(into, ())]
                for source in merged:
                    union.extend(result.pop(source, ()) if source != into else ())
                result[into] = tuple(dict.fromkeys(union))
            case LabelRetired(label=label):
                result.pop(label, None)
            case _:
                assert_never(operation)
    return result


def map_head(  # noqa: PLR0917  (parent and fresh head side by side, as the trainer holds them)
    parent_weight: torch.Tensor,
    parent_bias: torch.Tensor | None,
    parent_labels: Sequence[str],
    mapping: HeadMapping,
    fresh_weight: torch.Tensor,
    fresh_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The new head's weight (new labels x hidden) and bias (new labels) from the parent's.

    `parent_weight` has one row per parent label (in `parent_labels` order); `fresh_weight` and
    `fresh_bias` are a freshly initialised head for the new labels (in `mapping` order), whose
    rows serve the labels without sources. One source copies its row; several (a merge) give the
    mean of the rows and the logsumexp of the biases; none gives the fresh row with the mean bias
    of the copied rows (see the module docstring for why). Both heads have a bias or neither.
    The result is new tensors (no autograd history) in the parent's dtype and device.
    Raises `ValueError` for mismatched shapes or a source that is not a parent label.
    """
    _require_unique(parent_labels, "parent labels")
    if parent_weight.dim() != 2 or parent_weight.shape[0] != len(parent_labels):
        raise ValueError(
            f"the parent weight must be (parent labels x hidden) = ({len(parent_labels)} x H), "
            f"got {tuple(parent_weight.shape)}"
        )
    hidden = parent_weight.shape[1]
    if tuple(fresh_weight.shape) != (len(mapping), hidden):
        raise ValueError(
            f"the fresh weight must be (new labels x hidden) = ({len(mapping)} x {hidden}), "
            f"got {tuple(fresh_weight.shape)}"
        )
    if (parent_bias is None) != (fresh_bias is None):
        raise ValueError(
            "the parent and the fresh head must both have a bias or both have none (parent: "
            f"{'bias' if parent_bias is not None else 'no bias'}, fresh: "
            f"{'bias' if fresh_bias is not None else 'no bias'})"
        )
    _require_vector(parent_bias, len(parent_labels), "parent bias")
    _require_vector(fresh_bias, len(mapping), "fresh bias")
    row_of = {label: row for row, label in enumerate(parent_labels)}
    for label, sources in mapping.items():
        unknown = [source for source in sources if source not in row_of]
        if unknown:
            raise ValueError(
                f"label {label!r} is mapped from {', '.join(map(repr, unknown))}, not among the "
                f"parent labels [{', '.join(parent_labels)}]"
            )
        _require_unique(sources, f"the sources of {label!r}")

    dtype, device = parent_weight.dtype, parent_weight.device
    with torch.no_grad():
        old_weight = parent_weight.detach()
        new_weight = fresh_weight.detach().to(dtype=dtype, device=device).clone()
        for row, sources in enumerate(mapping.values()):
            if sources:
                picked = [row_of[source] for source in sources]
                new_weight[row] = old_weight[picked].mean(dim=0)
        if parent_bias is None or fresh_bias is None:
            return new_weight, None
        old_bias = parent_bias.detach().to(dtype=dtype, device=device)
        new_bias = fresh_bias.detach().to(dtype=dtype, device=device).clone()
        copied = [row_of[sources[0]] for sources in mapping.values() if len(sources) == 1]
        neutral = old_bias[copied].mean() if copied else old_bias.mean()
        for row, sources in enumerate(mapping.values()):
            if not sources:
                new_bias[row] = neutral
            else:
                picked = [row_of[source] for source in sources]
                new_bias[row] = torch.logsumexp(old_bias[picked], dim=0)
    return new_weight, new_bias


def _require_unique(values: Sequence[str], what: str) -> None:
    repeated = [value for value, count in Counter(values).items() if count > 1]
    if repeated:
        raise ValueError(f"{what} repeat: {', '.join(map(repr, repeated))}")


def _require_vector(bias: torch.Tensor | None, size: int, what: str) -> None:
    if bias is not None and tuple(bias.shape) != (size,):
        raise ValueError(f"the {what} must have shape ({size},), got {tuple(bias.shape)}")
