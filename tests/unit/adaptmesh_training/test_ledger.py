from __future__ import annotations

import itertools

from adaptmesh_training.ledger import TrainingLedger


def chain(ledger: TrainingLedger, domain: str, *versions: str) -> None:
    for parent, version in itertools.pairwise(versions):
        ledger.record_dataset(domain, version, parent)


def test_nothing_is_stale_before_anything_was_trained() -> None:
    ledger = TrainingLedger()
    chain(ledger, "d", "v1", "v2", "v3")
    assert not ledger.is_stale("d", "v1")


def test_ancestors_of_a_trained_version_are_stale_the_version_itself_is_not() -> None:
    ledger = TrainingLedger()
    chain(ledger, "d", "v1", "v2", "v3")
    ledger.record_trained("d", "v3")
    assert ledger.is_stale("d", "v1")
    assert ledger.is_stale("d", "v2")
    assert not ledger.is_stale("d", "v3")  # drift may retrain on unchanged data


def test_descendants_and_unrelated_versions_are_not_stale() -> None:
    ledger = TrainingLedger()
    chain(ledger, "d", "v1", "v2", "v3")
    ledger.record_trained("d", "v2")
    assert not ledger.is_stale("d", "v3")
    assert not ledger.is_stale("d", "elsewhere")


def test_staleness_is_per_domain() -> None:
    ledger = TrainingLedger()
    chain(ledger, "a", "v1", "v2")
    chain(ledger, "b", "v1", "v2")
    ledger.record_trained("a", "v2")
    assert ledger.is_stale("a", "v1")
    assert not ledger.is_stale("b", "v1")
    assert ledger.trained_domains() == {"a"}
    assert ledger.trained_versions("a") == {"v2"}


def test_a_cycle_in_bad_ancestry_data_terminates() -> None:
    ledger = TrainingLedger()
    ledger.record_dataset("d", "v1", "v2")
    ledger.record_dataset("d", "v2", "v1")
    ledger.record_dataset("d", "v3", "v3")  # its own parent: ignored
    assert ledger.ancestors("d", "v1") == {"v2"}
    assert ledger.ancestors("d", "v3") == set()


def test_the_latest_champion_is_remembered_per_domain() -> None:
    ledger = TrainingLedger()
    assert ledger.champion("d") is None
    ledger.record_champion("d", "m-1")
    ledger.record_champion("d", "m-2")
    ledger.record_champion("e", "m-9")
    assert ledger.champion("d") == "m-2"
