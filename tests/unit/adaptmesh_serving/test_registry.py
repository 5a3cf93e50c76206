"""The registry's swap and no-rollback rules, and a served model's first-prediction claim.

(How models are called — off the loop, one batch at a time per model — is in test_batching.)
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adaptmesh_serving.registry import LoadDecision, ModelOrigin, ModelRegistry, ServedModel
from tests.unit.adaptmesh_serving.fakes import DOMAIN, FakeClassifier, model_ready, origin


def registry_serving(version: str, offset: int) -> ModelRegistry:
    registry = ModelRegistry()
    registry.install(FakeClassifier(version), model_ready(version), origin(offset))
    return registry


def test_a_domain_without_a_model_loads_the_first_one() -> None:
    assert ModelRegistry().decide(model_ready("v1"), origin(0)) is LoadDecision.LOAD


def test_a_newer_record_with_another_version_replaces_the_model() -> None:
    registry = registry_serving("v1", offset=3)
    assert registry.decide(model_ready("v2"), origin(4)) is LoadDecision.LOAD
    registry.install(FakeClassifier("v2"), model_ready("v2"), origin(4))
    served = registry.serving(DOMAIN)
    assert served is not None
    assert served.model_version == "v2"


def test_an_older_record_never_rolls_back() -> None:
    registry = registry_serving("v2", offset=7)
    assert registry.decide(model_ready("v1"), origin(5)) is LoadDecision.STALE
    with pytest.raises(ValueError, match="stale"):
        registry.install(FakeClassifier("v1"), model_ready("v1"), origin(5))
    served = registry.serving(DOMAIN)
    assert served is not None
    assert served.model_version == "v2"


def test_the_same_record_or_the_same_model_again_changes_nothing() -> None:
    registry = registry_serving("v1", offset=3)
    assert registry.decide(model_ready("v1"), origin(3)) is LoadDecision.ALREADY_SERVING
    # Republished (new record, same version and manifest digest): no reload.
    assert registry.decide(model_ready("v1"), origin(9)) is LoadDecision.ALREADY_SERVING
    # Same version name, other manifest: a different model, so it loads.
    other = model_ready("v1", sha256="b" * 64)
    assert registry.decide(other, origin(9)) is LoadDecision.LOAD


def test_a_superseded_version_in_a_newer_record_is_a_re_promotion() -> None:
    # After compaction a fresh replica sees only the newer record and serves v1; a replica
    # that read the whole log must agree with it.
    registry = registry_serving("v1", offset=1)
    registry.install(FakeClassifier("v2"), model_ready("v2"), origin(2))
    assert registry.decide(model_ready("v1"), origin(3)) is LoadDecision.LOAD


def test_a_late_record_with_a_lower_promotion_number_never_rolls_back() -> None:
    # A writer that should have been fenced appends the older v1 after v2 was promoted: the
    # record is newer in the log, but the gate numbered it earlier.
    registry = ModelRegistry()
    registry.install(FakeClassifier("v2"), model_ready("v2", promotion=2), origin(4))
    assert registry.decide(model_ready("v1", promotion=1), origin(5)) is LoadDecision.STALE
    # A record from before promotion numbers, or a rival with the same number: stale too.
    assert registry.decide(model_ready("v1"), origin(6)) is LoadDecision.STALE
    assert registry.decide(model_ready("v3", promotion=2), origin(7)) is LoadDecision.STALE
    served = registry.serving(DOMAIN)
    assert served is not None
    assert served.model_version == "v2"


def test_a_rollback_on_purpose_is_a_higher_number_and_loads_the_older_model() -> None:
    registry = ModelRegistry()
    registry.install(FakeClassifier("v1"), model_ready("v1", promotion=1), origin(1))
    registry.install(FakeClassifier("v2"), model_ready("v2", promotion=2), origin(2))
    assert registry.decide(model_ready("v1", promotion=3), origin(3)) is LoadDecision.LOAD
    # Numbered records replace legacy ones.
    legacy = registry_serving("v0", offset=0)
    assert legacy.decide(model_ready("v1", promotion=1), origin(1)) is LoadDecision.LOAD


def test_records_on_another_partition_cannot_be_ordered_and_are_not_stale() -> None:
    registry = registry_serving("v1", offset=10)
    assert registry.decide(model_ready("v2"), origin(0, partition=1)) is LoadDecision.LOAD


def test_domains_are_independent() -> None:
    registry = registry_serving("v1", offset=10)
    other = model_ready("w1", domain="legal-docs")
    assert registry.decide(other, origin(0)) is LoadDecision.LOAD
    registry.install(FakeClassifier("w1"), other, origin(0))
    assert registry.domains() == ["fin-news", "legal-docs"]


def test_a_failure_is_reported_until_a_newer_model_loads() -> None:
    clock_time = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    registry = ModelRegistry(clock=lambda: clock_time)
    assert registry.status(DOMAIN) is None

    registry.record_failure(model_ready("v1"), origin(0), "digest mismatch")
    status = registry.status(DOMAIN)
    assert status is not None
    assert status.served is None
    assert status.last_error is not None
    assert status.last_error.reason == "digest mismatch"
    assert status.last_error.failed_at == clock_time
    assert registry.domains() == [DOMAIN]

    registry.install(FakeClassifier("v2"), model_ready("v2"), origin(1))
    status = registry.status(DOMAIN)
    assert status is not None
    assert status.last_error is None
    assert status.served is not None
    assert status.served.loaded_at == clock_time

    registry.record_failure(model_ready("v3"), origin(2), "missing file")
    status = registry.status(DOMAIN)
    assert status is not None
    assert status.served is not None
    assert status.served.model_version == "v2", "a failed load keeps the model serving"
    assert status.last_error is not None
    assert status.last_error.model_version == "v3"


def test_only_the_first_prediction_gets_the_loading_trace() -> None:
    carrier = {"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}
    loaded_from = ModelOrigin(0, 0, "event-1", "change-1", carrier)
    served = ServedModel(FakeClassifier("v1"), model_ready("v1"), loaded_from, datetime.now(UTC))
    assert served.claim_first_prediction() == carrier
    assert served.claim_first_prediction() is None
