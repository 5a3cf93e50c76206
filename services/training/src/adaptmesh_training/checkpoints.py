"""A run's checkpoints in the artifact store: durable, digest-verified, written by the worker.

A checkpoint is a small JSON document naming the run, its step and position, and the
content-addressed blobs of the `TrainingState` files (trainable weights, optimizer and RNG
state, the loop's numbers). The run ledger keeps the document's `ArtifactRef`; resuming reads
it back and every blob is checked against its digest, so a damaged checkpoint fails the run
with a reason instead of training on from corrupted weights.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from adaptmesh_kit import ArtifactStore
from adaptmesh_ml import TrainingState
from adaptmesh_schemas.values import ArtifactRef


class CheckpointDocument(BaseModel):
    """Where a run stood, and the blobs to go on from there."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format: Literal["adaptmesh.checkpoint/1"] = Field(
        default="adaptmesh.checkpoint/1", description="Document format."
    )
    run_id: str = Field(description="The run.")
    step: int = Field(ge=0, description="Optimiser steps done.")
    epoch: int = Field(ge=1, description="1-based epoch the next step belongs to.")
    batches_done: int = Field(ge=0, description="Batches of that epoch already done.")
    files: dict[str, ArtifactRef] = Field(description="The state's files by name.")


def store_checkpoint(store: ArtifactStore, run_id: str, state: TrainingState) -> ArtifactRef:
    """Write `state` (blobs first, then the document naming them) and return its ref."""
    files = {name: store.put_bytes(data) for name, data in sorted(state.files.items())}
    document = CheckpointDocument(
        run_id=run_id,
        step=state.step,
        epoch=state.epoch,
        batches_done=state.batches_done,
        files=files,
    )
    return store.put_document(document)


def load_checkpoint(store: ArtifactStore, run_id: str, ref: ArtifactRef) -> TrainingState:
    """The state behind `ref`, every blob verified; raises `ArtifactError` (or its
    `ArtifactIntegrityError`) when anything is missing, damaged or of another run."""
    document = store.get_document(ref, CheckpointDocument)
    if document.run_id != run_id:
        raise ValueError(f"checkpoint {ref.uri} belongs to run {document.run_id}, not {run_id}")
    return TrainingState(
        step=document.step,
        epoch=document.epoch,
        batches_done=document.batches_done,
        files={name: store.get_bytes(blob) for name, blob in document.files.items()},
    )
