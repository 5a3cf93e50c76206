from __future__ import annotations

from pathlib import Path

import pytest

from adaptmesh_kit import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactPathError,
    ArtifactStore,
    ResidencyError,
)
from adaptmesh_schemas.values import ArtifactRef


def test_blobs_are_content_addressed_and_written_once(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}/store")
    first = store.put_bytes(b"weights")
    second = store.put_bytes(b"weights")
    assert first == second
    assert first.sha256 in first.uri
    assert store.get_bytes(first) == b"weights"
    assert first.size_bytes == 7


def test_a_tampered_blob_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}/store")
    ref = store.put_bytes(b"weights")
    Path(ref.uri.removeprefix("file://")).write_bytes(b"evil weights")
    with pytest.raises(ArtifactIntegrityError, match="expected"):
        store.get_bytes(ref)


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",
        "file://{root}/../outside",
        "file://{root}/sha256/../../outside",
        "memory://{root}/x",
    ],
)
def test_uris_outside_the_root_are_refused(tmp_path: Path, uri: str) -> None:
    store = ArtifactStore(f"file://{tmp_path}/store")
    (tmp_path / "outside").write_bytes(b"secret")
    ref = ArtifactRef(uri=uri.format(root=f"{tmp_path}/store"), sha256="0" * 64)
    with pytest.raises(ArtifactPathError):
        store.get_bytes(ref)


def test_a_missing_blob_says_so(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}/store")
    ref = ArtifactRef(uri=f"file://{tmp_path}/store/sha256/00/none", sha256="0" * 64)
    with pytest.raises(ArtifactError, match="does not exist"):
        store.get_bytes(ref)


def test_relative_roots_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore("file://rel/store")
    assert store.root_uri == f"file://{tmp_path}/rel/store"


def _family(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(
        f"file://{tmp_path}/default",
        residency_roots={"eu": f"file://{tmp_path}/eu", "us": f"file://{tmp_path}/us"},
    )


def test_a_residency_writes_only_under_its_own_root(tmp_path: Path) -> None:
    store = _family(tmp_path)
    eu = store.for_residency("eu")
    blob = eu.put_bytes(b"eu data")
    named = eu.put_file("models/d/v1/labels.json", b"[]")
    for ref in (blob, named):
        assert ref.uri.startswith(f"file://{tmp_path}/eu/")
    assert store.for_residency(None) is store
    assert eu.for_residency(None) is store
    assert eu.for_residency("us").root_uri == f"file://{tmp_path}/us"
    assert store.residency_roots == {"eu": f"file://{tmp_path}/eu", "us": f"file://{tmp_path}/us"}
    assert not list((tmp_path / "default").rglob("*.json"))


def test_a_residency_without_a_root_is_refused_not_sent_to_the_default(tmp_path: Path) -> None:
    with pytest.raises(ResidencyError, match=r"'ch'.*configured: eu, us"):
        _family(tmp_path).for_residency("ch")
    with pytest.raises(ResidencyError, match="configured: none"):
        ArtifactStore(f"file://{tmp_path}/alone").for_residency("eu")


def test_every_store_reads_any_configured_root_and_nothing_else(tmp_path: Path) -> None:
    store = _family(tmp_path)
    in_us = store.for_residency("us").put_bytes(b"us data")
    in_default = store.put_bytes(b"default data")
    assert store.for_residency("eu").get_bytes(in_us) == b"us data"
    assert store.for_residency("eu").get_bytes(in_default) == b"default data"
    assert store.get_bytes(in_us) == b"us data"
    outside = ArtifactStore(f"file://{tmp_path}/elsewhere").put_bytes(b"x")
    with pytest.raises(ArtifactPathError, match="outside every artifact root"):
        store.for_residency("eu").get_bytes(outside)
