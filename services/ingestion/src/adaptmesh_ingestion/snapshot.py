"""From a domain's state to the immutable dataset document, and back. Pure.

The snapshot (`adaptmesh_schemas.documents.DatasetSnapshot`) is written as canonical JSON —
sorted keys, no whitespace, examples sorted by id, cases by (rule, case) — so the same content
always has the same bytes, hence the same sha256 and the same dataset version id.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence

from adaptmesh_ingestion.domain import DomainState, Example
from adaptmesh_schemas.documents import DatasetExample, DatasetSnapshot
from adaptmesh_schemas.events import DatasetCounts
from adaptmesh_schemas.values import SplitName

VERSION_PREFIX = "ds-"
VERSION_DIGEST_CHARS = 12


def split_of(example_id: str, eval_fraction: float) -> SplitName:
    """train or eval, from the example id alone: an example never changes sides between
    versions (unless the recipe's eval fraction changes)."""
    position = int(hashlib.sha256(example_id.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    return "eval" if position < eval_fraction else "train"


def snapshot_of(
    state: DomainState, *, parent_version: str | None, cause_event_ids: Sequence[str]
) -> DatasetSnapshot:
    """The dataset document for `state`, in canonical order."""
    eval_fraction = state.recipe.data.eval_fraction
    return DatasetSnapshot(
        domain=state.domain,
        parent_version=parent_version,
        recipe=state.recipe,
        base_model=state.base_model,
        taxonomy_version=state.taxonomy_version,
        labels=state.labels,
        examples=tuple(
            DatasetExample(
                example_id=example.example_id,
                text=example.text,
                label=example.label,
                split=split_of(example.example_id, eval_fraction),
                source_event_id=example.source_event_id,
                source=example.source,
                source_name=example.source_name,
            )
            for example in sorted(state.examples, key=lambda e: e.example_id)
        ),
        must_pass=tuple(sorted(state.must_pass, key=lambda c: (c.rule_id, c.case_id))),
        cause_event_ids=tuple(cause_event_ids),
        taxonomy_history=state.taxonomy_history,
    )


def canonical_json(snapshot: DatasetSnapshot) -> bytes:
    """The snapshot's bytes: equal content, equal bytes."""
    return json.dumps(
        snapshot.model_dump(mode="json"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


def dataset_version_id(sha256: str) -> str:
    """The dataset version named by its snapshot's digest."""
    return VERSION_PREFIX + sha256[:VERSION_DIGEST_CHARS]


def counts_of(snapshot: DatasetSnapshot) -> DatasetCounts:
    """Split sizes, must-pass cases and examples per label (every label, zeros included)."""
    splits = Counter(example.split for example in snapshot.examples)
    per_label = Counter(example.label for example in snapshot.examples)
    return DatasetCounts(
        train=splits["train"],
        eval=splits["eval"],
        must_pass=len(snapshot.must_pass),
        per_label={label: per_label[label] for label in snapshot.labels},
    )


def state_of(snapshot: DatasetSnapshot, recency: Sequence[str]) -> DomainState:
    """The state a snapshot was made from, given its example ids oldest first.

    The snapshot is sorted by id, so arrival order (which `max_examples_per_label` needs to keep
    the newest) travels beside it.
    """
    by_id = {example.example_id: example for example in snapshot.examples}
    if len(recency) != len(by_id) or set(recency) != by_id.keys():
        raise ValueError(
            f"the recorded example order of domain {snapshot.domain!r} does not match its "
            f"snapshot ({len(recency)} ids recorded, {len(by_id)} examples in the snapshot)"
        )
    return DomainState(
        domain=snapshot.domain,
        recipe=snapshot.recipe,
        base_model=snapshot.base_model,
        taxonomy_version=snapshot.taxonomy_version,
        labels=snapshot.labels,
        examples=tuple(
            Example(
                example_id=example.example_id,
                text=example.text,
                label=example.label,
                source_event_id=example.source_event_id,
                source=example.source,
                source_name=example.source_name,
            )
            for example in (by_id[example_id] for example_id in recency)
        ),
        must_pass=snapshot.must_pass,
        taxonomy_history=snapshot.taxonomy_history,
    )
