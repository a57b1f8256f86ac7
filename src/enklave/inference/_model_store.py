"""Encrypted model containers in a service's storage, in pieces, so that a model may be larger than one record.

Layout (namespaces of :class:`~enklave.services.storage.Storage`):

* ``inference-models`` / ``<name>/<version>``: the manifest, JSON ``{"size", "chunks", "sha256"}`` (the
  container's length, its number of pieces, and the SHA-256 of the container, which catches a damaged store);
* ``inference-model-chunks`` / ``<name>/<version>/<index>``: the pieces, :data:`CHUNK_SIZE` bytes but the last.

The pieces are written before the manifest and the manifest is deleted first, so a reader never sees a model
whose pieces are not all there. Containers are ciphertext: storage never holds a model or key in clear.

Errors: :class:`~enklave.errors.BadDataError` for a stored model that is damaged (missing piece, other size or
digest), what the storage raises (:class:`~enklave.errors.TransportError`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Final

from enklave._json import loads
from enklave.errors import BadDataError
from enklave.services.storage import Storage

__all__ = ["CHUNK_NAMESPACE", "CHUNK_SIZE", "MANIFEST_NAMESPACE", "ModelStore"]

MANIFEST_NAMESPACE: Final = "inference-models"
CHUNK_NAMESPACE: Final = "inference-model-chunks"
CHUNK_SIZE: Final = 8 << 20
"""Bytes per stored piece: under the storage's default value limit (16 MiB), and one upload ecall each."""


class ModelStore:
    """The encrypted models of one inference service in ``storage`` (see the module docstring)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def put(self, name: str, version: str, container: bytes) -> None:
        """Store (or replace) the container of model ``name`` ``version``."""
        label = f"{name}/{version}"
        count = 0
        for index, start in enumerate(range(0, len(container), CHUNK_SIZE)):
            self._storage.put(CHUNK_NAMESPACE, f"{label}/{index}", container[start : start + CHUNK_SIZE])
            count = index + 1
        manifest = {"size": len(container), "chunks": count, "sha256": hashlib.sha256(container).hexdigest()}
        self._storage.put(MANIFEST_NAMESPACE, label, json.dumps(manifest, sort_keys=True).encode("ascii"))

    def exists(self, name: str, version: str) -> bool:
        """True when model ``name`` ``version`` is stored."""
        return self._storage.get(MANIFEST_NAMESPACE, f"{name}/{version}") is not None

    def _manifest(self, label: str) -> tuple[int, int, bytes] | None:
        raw = self._storage.get(MANIFEST_NAMESPACE, label)
        if raw is None:
            return None
        try:
            manifest = loads(raw)
            size, count, digest = manifest["size"], manifest["chunks"], bytes.fromhex(manifest["sha256"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BadDataError(f"the stored manifest of model {label} is damaged") from exc
        if type(size) is not int or type(count) is not int or size < 0 or count < 0 or len(digest) != 32:
            raise BadDataError(f"the stored manifest of model {label} is damaged")
        return size, count, digest

    def open(self, name: str, version: str) -> tuple[int, Iterator[bytes]] | None:
        """The stored container's size and its pieces in order (None when the model is not stored); the last step
        of the iteration checks the size and digest and raises :class:`BadDataError` when they differ."""
        label = f"{name}/{version}"
        manifest = self._manifest(label)
        if manifest is None:
            return None
        size, count, digest = manifest

        def read() -> Iterator[bytes]:
            total, hashed = 0, hashlib.sha256()
            for index in range(count):
                piece = self._storage.get(CHUNK_NAMESPACE, f"{label}/{index}")
                if piece is None:
                    raise BadDataError(f"a stored piece of model {label} is missing")
                total += len(piece)
                hashed.update(piece)
                yield piece
            if total != size or not hmac.compare_digest(hashed.digest(), digest):
                raise BadDataError(f"the stored container of model {label} is damaged")

        return size, read()

    def get(self, name: str, version: str) -> bytes | None:
        """The whole stored container, or None when the model is not stored."""
        stored = self.open(name, version)
        return None if stored is None else b"".join(stored[1])

    def delete(self, name: str, version: str) -> bool:
        """Delete model ``name`` ``version``; True when it was stored."""
        label = f"{name}/{version}"
        manifest = self._storage.get(MANIFEST_NAMESPACE, label)
        self._storage.delete(MANIFEST_NAMESPACE, label)
        prefix = f"{label}/"
        for key in self._storage.keys(CHUNK_NAMESPACE):
            if key.startswith(prefix):
                self._storage.delete(CHUNK_NAMESPACE, key)
        return manifest is not None

    def list(self) -> list[tuple[str, str]]:
        """The stored models as ``(name, version)``, sorted by name and version number."""
        found = []
        for label in self._storage.keys(MANIFEST_NAMESPACE):
            name, _, version = label.partition("/")
            if version.isdigit():
                found.append((name, version))
        return sorted(found, key=lambda item: (item[0], int(item[1])))
