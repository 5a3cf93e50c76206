"""The gate's report as one self-contained HTML page, for people to read.

`render_report(report)` turns a `GateReport` into a page with inline CSS and nothing else: no
script, no font, no image fetched from anywhere (a Content-Security-Policy meta tag says so to
the browser too), so it can be stored beside the JSON report, mailed, or opened from disk years
later. It shows the decision; every check with its verdict and reason; the paired comparison
(macro-F1 and accuracy differences with their intervals, McNemar's counts and p-values, the
resolution, and the warning when the eval split is too small); per-label F1 of both models with
the difference and its interval; both confusion matrices as heatmaps coloured by row share;
slices; must-pass cases; and the lineage of both models.

Reports written before the paired statistics existed lack most of that: whatever is missing is
left out or shown as "—", never a crash. Label names, reasons and every other text are user
data, so the template is rendered with autoescaping on.

The DOM is part of the contract (the browser test reads it): `#decision`, `#checks`,
`#comparison`, `#too-small`, `#per-label`, `#heatmap-champion` / `#heatmap-candidate` (tables
of class `heatmap`, one `td.cell` per true x predicted label, with `data-count`, `data-share`,
`data-true` and `data-predicted`), `#slices`, `#must-pass`, `#lineage`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources

import jinja2

from adaptmesh_schemas.documents import (
    CheckResult,
    GateReport,
    Interval,
    ModelEvaluation,
    MustPassOutcome,
    ReportedModel,
    SliceResult,
)
from adaptmesh_schemas.values import GatePolicy, Lineage, SliceThreshold

TEMPLATE_FILE = "report.html.jinja"
"""The page's Jinja template, shipped inside this package (hatchling puts every file of the
package directory in the wheel)."""

MISSING = "—"
"""What a value the report does not have is shown as."""

# A sequential blue scale (ColorBrewer "Blues" stops): row share 0 -> near white, 1 -> dark.
_SCALE: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (247, 251, 255)),
    (0.25, (198, 219, 239)),
    (0.5, (107, 174, 214)),
    (0.75, (33, 113, 181)),
    (1.0, (8, 48, 107)),
)
_LIGHT_TEXT_FROM = 0.55
"""Row share from which a heatmap cell's text is white (the background is dark enough)."""


# --- formatting (None-safe: every helper shows MISSING for a value that is not there) -------


def number(value: float | None, digits: int = 3) -> str:
    """`0.812`; MISSING for None."""
    if value is None:
        return MISSING
    return f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 3) -> str:
    """`+0.012` / `-0.034`; MISSING for None."""
    if value is None:
        return MISSING
    return f"{value:+.{digits}f}"


def p_value(value: float | None) -> str:
    """A p-value to three significant digits (`0.0412`, `1`, `2.3e-05`)."""
    if value is None:
        return MISSING
    return f"{value:.3g}"


def interval_text(interval: Interval | None, digits: int = 3) -> str:
    """`[-0.010, +0.034]`; MISSING for None."""
    if interval is None:
        return MISSING
    return f"[{interval.low:+.{digits}f}, {interval.high:+.{digits}f}]"


def confidence(value: float | None) -> str:
    """A confidence level as a percentage with the digits it has: `95%`, `98.75%`."""
    if value is None:
        return MISSING
    return f"{value * 100:.6g}%"


def percent(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:.0%}"


def heatmap_colour(share: float) -> str:
    """The background of a heatmap cell whose row share is `share` (clamped to [0, 1])."""
    share = 0.0 if math.isnan(share) else min(max(share, 0.0), 1.0)
    for (low, low_rgb), (high, high_rgb) in itertools.pairwise(_SCALE):
        if share <= high:
            t = (share - low) / (high - low)
            r, g, b = (round(a + (z - a) * t) for a, z in zip(low_rgb, high_rgb, strict=True))
            return f"rgb({r}, {g}, {b})"
    r, g, b = _SCALE[-1][1]
    return f"rgb({r}, {g}, {b})"


# --- the view: everything the template shows, computed here so the template only lays out ---


@dataclass(frozen=True)
class HeatmapCell:
    true_label: str
    predicted_label: str
    count: int
    share: float
    diagonal: bool

    @property
    def style(self) -> str:
        colour = "#fff" if self.share >= _LIGHT_TEXT_FROM else "#1f2328"
        return f"background-color: {heatmap_colour(self.share)}; color: {colour}"

    @property
    def title(self) -> str:
        return (
            f"true {self.true_label} → predicted {self.predicted_label}: {self.count} "
            f"({self.share:.1%} of the row)"
        )


@dataclass(frozen=True)
class HeatmapRow:
    label: str
    total: int
    cells: tuple[HeatmapCell, ...]


@dataclass(frozen=True)
class Heatmap:
    role: str  # "champion" or "candidate": the table's id is heatmap-<role>
    model_version: str | None
    labels: tuple[str, ...]
    rows: tuple[HeatmapRow, ...]
    total: int
    correct: int


@dataclass(frozen=True)
class IntervalBar:
    """Where an interval sits on a shared axis, in percent of the bar's width."""

    left: float
    width: float
    point: float
    zero: float
    margin: float | None  # position of -margin (non-inferiority), when drawn


@dataclass(frozen=True)
class LabelRow:
    label: str
    support: int | None
    champion_f1: float | None
    candidate_f1: float | None
    candidate_precision: float | None
    candidate_recall: float | None
    difference: float | None
    interval: Interval | None
    bar: IntervalBar | None

    @property
    def trend(self) -> str:
        """`worse` / `better` when the interval excludes 0, else empty."""
        if self.interval is None:
            return ""
        if self.interval.high < 0:
            return "worse"
        if self.interval.low > 0:
            return "better"
        return ""


@dataclass(frozen=True)
class MustPassRow:
    outcome: MustPassOutcome
    champion_predicted: str | None
    champion_passed: bool | None


@dataclass(frozen=True)
class LineageRow:
    field: str
    candidate: str
    champion: str
    mono: bool = False


@dataclass(frozen=True)
class ComparisonRow:
    name: str
    interval: Interval
    bar: IntervalBar


@dataclass(frozen=True)
class ReportView:
    report: GateReport
    decision: str
    decided_at: str | None
    candidate_version: str
    champion_version: str | None
    checks: tuple[CheckResult, ...]
    failed_checks: tuple[CheckResult, ...]
    policy_rows: tuple[tuple[str, str], ...]
    comparison_rows: tuple[ComparisonRow, ...]
    label_rows: tuple[LabelRow, ...]
    heatmaps: tuple[Heatmap, ...]
    slices: tuple[SliceResult, ...]
    must_pass: tuple[MustPassRow, ...]
    must_pass_passed: int
    lineage: tuple[LineageRow, ...]


def _ordered(*groups: Iterable[str]) -> tuple[str, ...]:
    """The union of `groups`, in first-seen order."""
    return tuple(dict.fromkeys(label for group in groups for label in group))


def _model_labels(evaluation: ModelEvaluation, model: ReportedModel | None) -> tuple[str, ...]:
    """Every label a model's evaluation mentions: head order first, then what the data had."""
    return _ordered(
        model.labels if model is not None else (),
        evaluation.per_label,
        evaluation.confusion,
        (p for row in evaluation.confusion.values() for p in row),
    )


def _heatmap(
    role: str, evaluation: ModelEvaluation, model: ReportedModel | None, order: tuple[str, ...]
) -> Heatmap:
    own = set(_model_labels(evaluation, model))
    labels = tuple(label for label in order if label in own)
    rows: list[HeatmapRow] = []
    for true_label in labels:
        counts: Mapping[str, int] = evaluation.confusion.get(true_label, {})
        total = sum(counts.values())
        cells = tuple(
            HeatmapCell(
                true_label=true_label,
                predicted_label=predicted,
                count=counts.get(predicted, 0),
                share=counts.get(predicted, 0) / total if total else 0.0,
                diagonal=predicted == true_label,
            )
            for predicted in labels
        )
        rows.append(HeatmapRow(label=true_label, total=total, cells=cells))
    return Heatmap(
        role=role,
        model_version=evaluation.model_version,
        labels=labels,
        rows=tuple(rows),
        total=sum(row.total for row in rows),
        correct=sum(cell.count for row in rows for cell in row.cells if cell.diagonal),
    )


def _axis(intervals: Iterable[Interval], margin: float | None) -> float:
    """Half-width of a symmetric axis around 0 that holds every interval (and the margin)."""
    extent = max(
        [abs(v) for i in intervals for v in (i.low, i.high, i.estimate) if math.isfinite(v)]
        + [margin or 0.0, 0.01]
    )
    return extent * 1.1


def _bar(interval: Interval, axis: float, margin: float | None = None) -> IntervalBar:
    def at(value: float) -> float:
        value = value if math.isfinite(value) else 0.0
        return round(min(max((value + axis) / (2 * axis), 0.0), 1.0) * 100, 2)

    left, right = at(interval.low), at(interval.high)
    return IntervalBar(
        left=left,
        width=max(right - left, 0.5),
        point=at(interval.estimate),
        zero=at(0.0),
        margin=at(-margin) if margin is not None else None,
    )


def _label_rows(report: GateReport) -> tuple[LabelRow, ...]:
    candidate, champion, comparison = report.candidate, report.champion, report.comparison
    per_label_intervals = comparison.per_label if comparison is not None else {}
    labels = _ordered(
        report.candidate_model.labels if report.candidate_model else (),
        candidate.per_label,
        champion.per_label if champion else (),
        per_label_intervals,
    )
    axis = _axis(per_label_intervals.values(), None)
    rows: list[LabelRow] = []
    for label in labels:
        mine = candidate.per_label.get(label)
        theirs = champion.per_label.get(label) if champion else None
        interval = per_label_intervals.get(label)
        if interval is not None:
            difference: float | None = interval.estimate
        elif mine is not None and theirs is not None:
            difference = mine.f1 - theirs.f1
        else:
            difference = None
        support = mine.support if mine is not None else (theirs.support if theirs else None)
        rows.append(
            LabelRow(
                label=label,
                support=support,
                champion_f1=theirs.f1 if theirs else None,
                candidate_f1=mine.f1 if mine else None,
                candidate_precision=mine.precision if mine else None,
                candidate_recall=mine.recall if mine else None,
                difference=difference,
                interval=interval,
                bar=_bar(interval, axis) if interval is not None else None,
            )
        )
    return tuple(rows)


def _comparison_rows(report: GateReport) -> tuple[ComparisonRow, ...]:
    comparison = report.comparison
    if comparison is None:
        return ()
    policy = report.policy
    margin = policy.margin if policy is not None and policy.test == "non_inferiority" else None
    pairs = (
        ("macro-F1", comparison.macro_f1_difference),
        ("accuracy", comparison.accuracy_difference),
    )
    axis = _axis((interval for _, interval in pairs), margin)
    return tuple(
        ComparisonRow(
            name=name,
            interval=interval,
            # The margin line belongs to the macro-F1 difference only (that is what it bounds).
            bar=_bar(interval, axis, margin if name == "macro-F1" else None),
        )
        for name, interval in pairs
    )


def _threshold_text(threshold: SliceThreshold) -> str:
    parts = []
    if threshold.min_accuracy is not None:
        parts.append(f"accuracy ≥ {threshold.min_accuracy:.3f}")
    if threshold.max_accuracy_drop is not None:
        parts.append(f"drop ≤ {threshold.max_accuracy_drop:.3f}")
    return ", ".join(parts) or MISSING


def _policy_rows(policy: GatePolicy | None) -> tuple[tuple[str, str], ...]:
    if policy is None:
        return ()
    test = policy.test.replace("_", "-")
    rows = [
        ("test", test + (f" (margin {policy.margin:.3f})" if test == "non-inferiority" else "")),
        ("confidence", f"{policy.confidence:g}"),
        ("macro-F1 floor", f"{policy.min_macro_f1:.3f}"),
        ("largest per-label F1 regression", f"{policy.max_regression:.3f}"),
        ("must-pass required", "yes" if policy.require_must_pass else "no"),
        ("bootstrap resamples", str(policy.bootstrap_samples)),
    ]
    if policy.min_label_f1:
        rows.append(
            (
                "per-label F1 floors",
                ", ".join(f"{label} ≥ {floor:.3f}" for label, floor in policy.min_label_f1.items()),
            )
        )
    rows.extend(
        (f"slice {name}", _threshold_text(threshold)) for name, threshold in policy.slices.items()
    )
    return tuple(rows)


def _must_pass_rows(report: GateReport) -> tuple[MustPassRow, ...]:
    champion_outcomes = {
        (o.rule_id, o.case_id): o for o in (report.champion.must_pass if report.champion else ())
    }
    rows = [
        MustPassRow(
            outcome=outcome,
            champion_predicted=theirs.predicted_label if theirs else None,
            champion_passed=theirs.passed if theirs else None,
        )
        for outcome in report.candidate.must_pass
        for theirs in [champion_outcomes.get((outcome.rule_id, outcome.case_id))]
    ]
    # Failures first: a long list of passing cases must not hide the one that failed.
    return tuple(sorted(rows, key=lambda row: row.outcome.passed))


def _base_model_text(lineage: Lineage) -> str:
    base = lineage.base_model
    text = base.model_id
    if base.revision:
        text += f" @ {base.revision}"
    if base.gguf_file:
        text += f" ({base.gguf_file})"
    return text


def _lineage_rows(report: GateReport) -> tuple[LineageRow, ...]:
    candidate = report.candidate_model
    champion = report.champion_model
    if candidate is None and champion is None:
        return ()

    def value(model: ReportedModel | None, field: str) -> str:  # noqa: PLR0911
        if model is None:
            return MISSING
        lineage, artifact = model.lineage, model.artifact
        if field == "model version":
            return model.model_version
        if field == "artifact URI":
            return artifact.uri if artifact else MISSING
        if field == "artifact sha256":
            return artifact.sha256 if artifact else MISSING
        if field == "labels":
            return ", ".join(model.labels) or MISSING
        if lineage is None:
            return MISSING
        texts: dict[str, str | None] = {
            "dataset version": lineage.dataset_version,
            "dataset sha256": lineage.dataset_sha256,
            "recipe version": lineage.recipe_version,
            "base model": _base_model_text(lineage),
            "base model sha256": lineage.base_model_sha256,
            "initialised from": lineage.init,
            "parent model": lineage.parent_model_version,
            "seed": str(lineage.seed),
            "code version": lineage.code_version,
            "correlation id": lineage.correlation_id,
            "hyperparameters": ", ".join(
                f"{key}={lineage.hyperparameters[key]}" for key in sorted(lineage.hyperparameters)
            ),
            "libraries": ", ".join(
                f"{key} {lineage.library_versions[key]}" for key in sorted(lineage.library_versions)
            ),
        }
        return texts.get(field) or MISSING

    fields = (
        ("model version", False),
        ("labels", False),
        ("dataset version", False),
        ("dataset sha256", True),
        ("recipe version", False),
        ("base model", False),
        ("base model sha256", True),
        ("initialised from", False),
        ("parent model", False),
        ("seed", False),
        ("code version", False),
        ("artifact URI", True),
        ("artifact sha256", True),
        ("correlation id", True),
        ("hyperparameters", False),
        ("libraries", False),
    )
    return tuple(
        LineageRow(field, value(candidate, field), value(champion, field), mono)
        for field, mono in fields
    )


def _decided_at(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(sep=" ", timespec="seconds")


def report_view(report: GateReport) -> ReportView:
    """What the page shows, computed from `report` (public for tests and other renderers)."""
    candidate, champion = report.candidate, report.champion
    order = _ordered(
        _model_labels(candidate, report.candidate_model),
        _model_labels(champion, report.champion_model) if champion else (),
    )
    heatmaps = [_heatmap("candidate", candidate, report.candidate_model, order)]
    if champion is not None:
        heatmaps.insert(0, _heatmap("champion", champion, report.champion_model, order))
    champion_version = (
        champion.model_version
        if champion is not None
        else (report.champion_model.model_version if report.champion_model else None)
    )
    return ReportView(
        report=report,
        decision="approved" if report.approved else "rejected",
        decided_at=_decided_at(report.decided_at),
        candidate_version=candidate.model_version,
        champion_version=champion_version,
        checks=report.checks,
        failed_checks=tuple(check for check in report.checks if not check.passed),
        policy_rows=_policy_rows(report.policy),
        comparison_rows=_comparison_rows(report),
        label_rows=_label_rows(report),
        heatmaps=tuple(heatmaps),
        slices=report.slices,
        must_pass=_must_pass_rows(report),
        must_pass_passed=sum(o.passed for o in candidate.must_pass),
        lineage=_lineage_rows(report),
    )


def render_report(report: GateReport) -> str:
    """`report` as a self-contained HTML page (UTF-8 text; store it with `.encode()`)."""
    return _template().render(view=report_view(report), MISSING=MISSING)


@cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        autoescape=True,  # every text on the page is user data
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(
        number=number,
        signed=signed,
        p_value=p_value,
        interval=interval_text,
        percent=percent,
        confidence=confidence,
    )
    environment.globals["threshold_text"] = _threshold_text
    source = resources.files("adaptmesh_gate").joinpath(TEMPLATE_FILE).read_text(encoding="utf-8")
    return environment.from_string(source)
