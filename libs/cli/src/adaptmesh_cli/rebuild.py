"""`adaptmesh rebuild DOMAIN MODEL_VERSION`: retrain a model from its recorded inputs.

The model's lineage names everything its bytes depend on: the dataset snapshot (by digest), the
recipe inside it, the parent it was warm-started from, the base model's weights digest, the
library versions, and the determinism settings (torch threads, world size). A rebuild follows
those records back through the artifact store, trains again with `train_classifier` into a
scratch store, and says whether the adapter file and the eval metrics (on the snapshot's eval
split and must-pass cases) came out identical.

The model is found on `mesh.training.v1`: its `model.trained` event carries the manifest's ref.
The logic (`rebuild_model`) needs no Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adaptmesh_cli.logs import read_topic
from adaptmesh_kit import ArtifactError, ArtifactStore, MeshSettings
from adaptmesh_ml import (
    ADAPTER_WEIGHTS_FILE,
    BaseModelNotFoundError,
    Classifier,
    WarmStart,
    base_model_sha256,
    evaluate,
    library_versions,
    plan_warm_start,
    save_model,
    train_classifier,
)
from adaptmesh_schemas import Stream
from adaptmesh_schemas.documents import DatasetSnapshot, ModelEvaluation, ModelManifest
from adaptmesh_schemas.events import ModelTrained
from adaptmesh_schemas.values import ArtifactRef, Lineage

EXIT_MATCH, EXIT_DIFFERENT, EXIT_UNKNOWN_MODEL = 0, 1, 2


class RebuildError(RuntimeError):
    """The recorded inputs cannot be followed back (missing or tampered artifacts, a parent
    that no longer seeds the run as it did): no rebuild was attempted, or it was abandoned."""


@dataclass(frozen=True)
class RebuildReport:
    """What a rebuild found: both adapters' digests, both evaluations, and every reason the
    result may differ that was known before training (`warnings`)."""

    domain: str
    model_version: str
    original_adapter_sha256: str
    rebuilt_adapter_sha256: str
    original: ModelEvaluation
    rebuilt: ModelEvaluation
    rebuilt_manifest: ArtifactRef
    approximate: bool = False
    warnings: tuple[str, ...] = field(default=())

    @property
    def adapter_matches(self) -> bool:
        return self.original_adapter_sha256 == self.rebuilt_adapter_sha256

    @property
    def metrics_match(self) -> bool:
        return _scores(self.original) == _scores(self.rebuilt)

    @property
    def matches(self) -> bool:
        return self.adapter_matches and self.metrics_match

    def lines(self) -> list[str]:
        """The short report the command prints."""
        out = [f"rebuild of {self.domain}/{self.model_version} into {self.rebuilt_manifest.uri}"]
        out += [f"  warning: {warning}" for warning in self.warnings]
        out.append(
            f"  adapter sha256: original {self.original_adapter_sha256[:16]}, rebuilt "
            f"{self.rebuilt_adapter_sha256[:16]} -> "
            f"{'same' if self.adapter_matches else 'DIFFERENT'}"
        )
        for name, original, rebuilt in (
            ("macro-F1", self.original.macro_f1, self.rebuilt.macro_f1),
            ("accuracy", self.original.accuracy, self.rebuilt.accuracy),
        ):
            out.append(f"  {name}: original {original:.6f}, rebuilt {rebuilt:.6f}")
        differing = sorted(
            label
            for label in {*self.original.per_label, *self.rebuilt.per_label}
            if self.original.per_label.get(label) != self.rebuilt.per_label.get(label)
        )
        passed = (
            sum(o.passed for o in self.original.must_pass),
            sum(o.passed for o in self.rebuilt.must_pass),
        )
        per_label = "differ for " + ", ".join(differing) if differing else "same"
        out.append(
            f"  per-label metrics: {per_label}"
            f"; must-pass {passed[0]}/{len(self.original.must_pass)} vs "
            f"{passed[1]}/{len(self.rebuilt.must_pass)}"
        )
        if self.matches:
            verdict = "MATCH: same adapter bytes and the same metrics"
        elif self.metrics_match:
            verdict = "metrics match, adapter bytes DIFFER"
        else:
            verdict = "DIFFERENT: the metrics do not match"
        if self.approximate:
            verdict += " (approximate rebuild: see the warnings)"
        out.append(f"  {verdict}")
        return out


def rebuild_model(
    store: ArtifactStore,
    manifest_ref: ArtifactRef,
    scratch: ArtifactStore,
    *,
    say: Callable[[str], None] = print,
) -> RebuildReport:
    """Retrain the model behind `manifest_ref` (in `store`) from its recorded inputs, save it
    into `scratch` under the same domain and version, and compare the two.

    Raises `RebuildError` when an input is missing or fails its digest, or when the recorded
    warm start cannot be reproduced. Known reasons for a mismatch (a multi-worker original,
    other library versions, other base weights) are warnings in the report: it still runs.
    """
    try:
        original_model = Classifier.load(store, manifest_ref)
    except ArtifactError as error:
        raise RebuildError(f"the model at {manifest_ref.uri} cannot be read: {error}") from error
    manifest = original_model.manifest
    lineage = manifest.lineage
    snapshot = _recorded_snapshot(store, lineage)
    warnings, approximate = _known_differences(lineage)
    for warning in warnings:
        say(f"warning: {warning}")
    warm_start = _recorded_warm_start(store, snapshot, lineage)

    threads = lineage.determinism.get("torch_threads")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        warnings.append("the lineage records no torch thread count: using this machine's")
        threads = None
    say(
        f"training {manifest.domain}/{manifest.model_version} again "
        f"({'warm from ' + str(lineage.parent_model_version) if warm_start else 'from the base'}"
        f", {threads or 'default'} torch threads)"
    )
    with torch_threads(threads):
        trained = train_classifier(snapshot, warm_start=warm_start)
    if warm_start is not None and trained.parent_adapter_sha256 != lineage.parent_adapter_sha256:
        warnings.append(
            f"the parent adapter started from has sha256 {trained.parent_adapter_sha256}, the "
            f"lineage records {lineage.parent_adapter_sha256}"
        )
    rebuilt_lineage = lineage.model_copy(
        update={
            "library_versions": trained.library_versions,
            "determinism": trained.determinism,
        }
    )
    rebuilt_ref, rebuilt_manifest = save_model(
        scratch,
        trained,
        domain=manifest.domain,
        model_version=manifest.model_version,
        lineage=rebuilt_lineage,
    )
    evaluation_examples = [e for e in snapshot.examples if e.split == "eval"]
    original = evaluate(original_model, evaluation_examples, snapshot.must_pass)
    rebuilt = evaluate(
        Classifier.load(scratch, rebuilt_ref), evaluation_examples, snapshot.must_pass
    )
    return RebuildReport(
        domain=manifest.domain,
        model_version=manifest.model_version,
        original_adapter_sha256=_adapter_sha256(manifest),
        rebuilt_adapter_sha256=_adapter_sha256(rebuilt_manifest),
        original=original,
        rebuilt=rebuilt,
        rebuilt_manifest=rebuilt_ref,
        approximate=approximate,
        warnings=tuple(warnings),
    )


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` torch threads (None: leave them), restoring the setting afterwards.

    `OMP_NUM_THREADS` is set too: `train_classifier` keeps torch's count when it is set, and
    would otherwise take every core.
    """
    if threads is None:
        yield
        return
    before_threads = torch.get_num_threads()
    before_env = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before_threads)
        if before_env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before_env


def _recorded_snapshot(store: ArtifactStore, lineage: Lineage) -> DatasetSnapshot:
    try:
        ref = store.ref_for_digest(lineage.dataset_sha256)
        return store.get_document(ref, DatasetSnapshot)
    except ArtifactError as error:
        raise RebuildError(
            f"the dataset snapshot {lineage.dataset_version} (sha256 {lineage.dataset_sha256}) "
            f"the model was trained on cannot be used: {error}"
        ) from error


def _known_differences(lineage: Lineage) -> tuple[list[str], bool]:
    """Reasons, known before training, why the rebuild may not reproduce the bytes."""
    warnings: list[str] = []
    approximate = False
    world_size = lineage.determinism.get("world_size", 1)
    if world_size != 1:
        approximate = True
        warnings.append(
            f"the model was trained by {world_size} workers; a multi-worker model can only be "
            "rebuilt approximately (rebuilding on one worker, the data order and gradient sums "
            "differ)"
        )
    installed = library_versions()
    changed = {
        name: (recorded, installed.get(name, "not installed"))
        for name, recorded in sorted(lineage.library_versions.items())
        if installed.get(name) != recorded
    }
    if not lineage.library_versions:
        warnings.append("the lineage records no library versions: they cannot be checked")
    elif changed:
        warnings.append(
            "installed library versions differ from the recorded ones ("
            + ", ".join(f"{n} {was} -> {now}" for n, (was, now) in changed.items())
            + "): the arithmetic may differ"
        )
    if lineage.base_model_sha256 is None:
        warnings.append("the lineage records no base weights digest: it cannot be checked")
    else:
        try:
            digest = base_model_sha256(lineage.base_model)
        except BaseModelNotFoundError as error:
            raise RebuildError(f"the base model is not available here: {error}") from error
        if digest != lineage.base_model_sha256:
            warnings.append(
                f"the base model {lineage.base_model.model_id} here has weights sha256 "
                f"{digest}, the model was built on {lineage.base_model_sha256}: an exact "
                "match is impossible"
            )
    return warnings, approximate


def _recorded_warm_start(
    store: ArtifactStore, snapshot: DatasetSnapshot, lineage: Lineage
) -> WarmStart | None:
    if lineage.init != "champion":
        return None
    if lineage.parent_artifact is None:
        raise RebuildError("the lineage says warm-started but records no parent artifact")
    try:
        plan = plan_warm_start(store, snapshot, lineage.parent_artifact)
    except ArtifactError as error:
        raise RebuildError(
            f"the parent {lineage.parent_model_version} cannot be used: {error}"
        ) from error
    if plan.warm_start is None:
        raise RebuildError(
            f"the parent {lineage.parent_model_version} no longer seeds this run: {plan.reason}"
        )
    if dict(plan.warm_start.head_mapping) != dict(lineage.head_mapping):
        raise RebuildError(
            f"the head mapping from the parent is {plan.warm_start.head_mapping}, the lineage "
            f"records {lineage.head_mapping}"
        )
    return plan.warm_start


def _adapter_sha256(manifest: ModelManifest) -> str:
    for entry in manifest.files:
        if entry.path == ADAPTER_WEIGHTS_FILE:
            return entry.sha256
    raise RebuildError(f"{manifest.model_version} lists no {ADAPTER_WEIGHTS_FILE}")


def _scores(evaluation: ModelEvaluation) -> object:
    """Everything compared between the two evaluations (not the model version)."""
    return (
        evaluation.macro_f1,
        evaluation.accuracy,
        evaluation.per_label,
        evaluation.confusion,
        [(o.case_id, o.predicted_label, o.passed) for o in evaluation.must_pass],
    )


async def find_model(settings: MeshSettings, domain: str, model_version: str) -> ArtifactRef | None:
    """The manifest ref of `domain`'s `model_version`, from its `model.trained` event."""
    for _, event in await read_topic(settings, Stream.TRAINING):
        if (
            isinstance(event, ModelTrained)
            and event.model_version == model_version
            and event.domain == domain
        ):
            return event.artifact
    return None


def run_rebuild(
    settings: MeshSettings,
    domain: str,
    model_version: str,
    *,
    scratch: Path | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """The command: 0 when adapter and metrics match, 1 otherwise, 2 for an unknown model."""
    ref = asyncio.run(find_model(settings, domain, model_version))
    if ref is None:
        say(f"error: no model.trained event for {domain}/{model_version} on the training topic")
        return EXIT_UNKNOWN_MODEL
    store = ArtifactStore(settings.artifact_root, residency_roots=settings.artifact_roots)
    with contextlib.ExitStack() as stack:
        if scratch is None:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rebuild-")))
        try:
            report = rebuild_model(store, ref, ArtifactStore(scratch.resolve().as_uri()), say=say)
        except RebuildError as error:
            say(f"error: cannot rebuild {domain}/{model_version}: {error}")
            return EXIT_DIFFERENT
        for line in report.lines():
            say(line)
    return EXIT_MATCH if report.matches else EXIT_DIFFERENT
