from __future__ import annotations

from pathlib import Path

import pytest

from adaptmesh_kit import ArtifactError, ArtifactIntegrityError, ArtifactPathError, ArtifactStore
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
