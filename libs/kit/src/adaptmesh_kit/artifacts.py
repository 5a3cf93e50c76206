"""Content-addressed artifact store behind fsspec URIs (claim-check pattern).

Events carry `ArtifactRef(uri, sha256)`; the bytes live here. Blobs are written once under
`<root>/sha256/<ab>/<digest>` and every read verifies the digest, so a corrupted or substituted
file is refused instead of served. Any URI handed to the store must lie inside its root: an event
is untrusted input, and `file:///etc/passwd` or `../../` must not become a read.

Data residency: a store may have sibling roots, one per residency (`MESH_ARTIFACT_ROOTS`).
`for_residency(tag)` is the store that writes a domain's artifacts, under its residency's root
and nowhere else; a residency without a root is refused, never sent to the default root. Every
store of the family reads from any of the family's roots (events carry full URIs) and from
nowhere else.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

import fsspec
from fsspec.core import url_to_fs
from pydantic import BaseModel, ValidationError

from adaptmesh_schemas.values import ArtifactRef

DocumentT = TypeVar("DocumentT", bound=BaseModel)


class ArtifactError(Exception):
    """Base of artifact store errors."""


class ArtifactIntegrityError(ArtifactError):
    """The bytes do not have the digest the reference promises."""


class ArtifactPathError(ArtifactError):
    """A URI that lies outside the store's root (or is not one of its URIs)."""


class ResidencyError(ArtifactError):
    """A residency for which no artifact root is configured."""


class ArtifactStore:
    """Immutable, verified blobs under one fsspec root (the default root, or a residency's
    when made by `for_residency`)."""

    def __init__(
        self,
        root_uri: str,
        *,
        residency_roots: Mapping[str, str] | None = None,
        **storage_options: Any,
    ) -> None:
        """`residency_roots`: residency tag -> root URI of the stores `for_residency` gives."""
        self._fs: fsspec.AbstractFileSystem
        self._fs, root_path = url_to_fs(root_uri, **storage_options)
        self._root = posixpath.normpath(self._fs._strip_protocol(root_path)).rstrip("/")
        self._fs.makedirs(self._root, exist_ok=True)
        # The protocol the store speaks, to rebuild canonical URIs from paths.
        protocol = self._fs.protocol
        self._protocol = protocol if isinstance(protocol, str) else protocol[0]
        self.residency: str | None = None
        self._default = self
        self._residents: dict[str, ArtifactStore] = {}
        self._family: tuple[ArtifactStore, ...] = (self,)
        if residency_roots:
            residents = {
                residency: ArtifactStore(uri, **storage_options)
                for residency, uri in sorted(residency_roots.items())
            }
            family = (self, *residents.values())
            for residency, store in residents.items():
                store.residency = residency
            for store in family:
                store._default = self
                store._residents = residents
                store._family = family

    @property
    def root_uri(self) -> str:
        return self._uri(self._root)

    @property
    def default_root_uri(self) -> str:
        """The root of artifacts of domains without a residency."""
        return self._default.root_uri

    @property
    def residency_roots(self) -> dict[str, str]:
        """Residency tag -> root URI (what rebuilds this family in another process)."""
        return {residency: store.root_uri for residency, store in self._residents.items()}

    def for_residency(self, residency: str | None) -> ArtifactStore:
        """The store that writes the artifacts of a domain with this residency (None: no
        constraint, the default root). Raises `ResidencyError` when the residency has no root."""
        if residency is None:
            return self._default
        store = self._residents.get(residency)
        if store is None:
            configured = ", ".join(sorted(self._residents)) or "none"
            raise ResidencyError(
                f"no artifact root is configured for residency {residency!r} (configured: "
                f"{configured}; set MESH_ARTIFACT_ROOTS, e.g. {residency}=file:///data/"
                f"{residency}); its artifacts are not written to the default root"
            )
        return store

    def put_bytes(self, data: bytes) -> ArtifactRef:
        """Store `data` (once) and return its claim check."""
        digest = hashlib.sha256(data).hexdigest()
        path = self._blob_path(digest)
        if not self._fs.exists(path):
            self._fs.makedirs(posixpath.dirname(path), exist_ok=True)
            # Write-then-rename so a reader never sees a half-written blob at its final name.
            partial = f"{path}.{uuid.uuid4().hex}.partial"
            with self._fs.open(partial, "wb") as handle:
                handle.write(data)
            self._fs.mv(partial, path)
        return ArtifactRef(uri=self._uri(path), sha256=digest, size_bytes=len(data))

    def ref_for_digest(self, sha256: str) -> ArtifactRef:
        """The claim check of a blob stored by `put_bytes`, from its digest alone (lineage
        records digests; this is how they are followed back to their bytes)."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ArtifactError(f"{sha256!r} is not a sha256 hex digest")
        return ArtifactRef(uri=self._uri(self._blob_path(sha256)), sha256=sha256)

    def put_file(self, relative_path: str, data: bytes) -> ArtifactRef:
        """Write `data` at a readable path (e.g. `models/<domain>/<version>/labels.json`).

        Paths are write-once: the same bytes again are fine, different bytes are refused, so a
        published URI always means the same content.
        """
        path = self._path_inside_root(self._uri(f"{self._root}/{relative_path.lstrip('/')}"))
        digest = hashlib.sha256(data).hexdigest()
        if self._fs.exists(path):
            with self._fs.open(path, "rb") as handle:
                existing: bytes = handle.read()
            if hashlib.sha256(existing).hexdigest() != digest:
                raise ArtifactError(
                    f"{self._uri(path)} exists with other content; paths are write-once"
                )
        else:
            self._fs.makedirs(posixpath.dirname(path), exist_ok=True)
            partial = f"{path}.{uuid.uuid4().hex}.partial"
            with self._fs.open(partial, "wb") as handle:
                handle.write(data)
            self._fs.mv(partial, path)
        return ArtifactRef(uri=self._uri(path), sha256=digest, size_bytes=len(data))

    def put_document(self, document: BaseModel, relative_path: str | None = None) -> ArtifactRef:
        """Store a pydantic document as JSON (content-addressed unless a path is given)."""
        data = document.model_dump_json(indent=1).encode()
        return self.put_bytes(data) if relative_path is None else self.put_file(relative_path, data)

    def get_document(self, ref: ArtifactRef, document_type: type[DocumentT]) -> DocumentT:
        """Read, verify and validate a JSON document."""
        data = self.get_bytes(ref)
        try:
            return document_type.model_validate_json(data)
        except ValidationError as error:
            raise ArtifactError(
                f"{ref.uri} is not a valid {document_type.__name__}: {error}"
            ) from None

    def get_bytes(self, ref: ArtifactRef) -> bytes:
        """The bytes behind `ref`, after checking they hash to `ref.sha256`. The ref may lie
        under any root of the family (another residency's too), and under no other."""
        store, path = self._readable_path(ref.uri)
        try:
            with store._fs.open(path, "rb") as handle:
                data: bytes = handle.read()
        except FileNotFoundError:
            raise ArtifactError(f"artifact {ref.uri} does not exist") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != ref.sha256:
            raise ArtifactIntegrityError(
                f"artifact {ref.uri} has sha256 {actual}, expected {ref.sha256}"
            )
        return data

    def _blob_path(self, digest: str) -> str:
        return f"{self._root}/sha256/{digest[:2]}/{digest}"

    def _uri(self, path: str) -> str:
        return f"{self._protocol}://{path}"

    def _readable_path(self, uri: str) -> tuple[ArtifactStore, str]:
        for store in (self, *(store for store in self._family if store is not self)):
            try:
                return store, store._path_inside_root(uri)
            except ArtifactPathError:
                continue
        roots = ", ".join(store.root_uri for store in self._family)
        raise ArtifactPathError(f"{uri} lies outside every artifact root ({roots})")

    def _path_inside_root(self, uri: str) -> str:
        fs, path = url_to_fs(uri)
        if type(fs) is not type(self._fs):
            raise ArtifactPathError(f"{uri} is not in this store ({self.root_uri})")
        normalised: str = posixpath.normpath(str(fs._strip_protocol(path)))
        if normalised != self._root and not normalised.startswith(self._root + "/"):
            raise ArtifactPathError(f"{uri} escapes the artifact root {self.root_uri}")
        return normalised
