"""Preparing a model upload, without I/O on the network: read the model, encrypt it (or check a container made
earlier), and keep what the upload needs; and the result a model owner gets back.

An owner-keyed container (``key_id == "owner"``) needs its key to reach the enclave after the upload, through
the encapsulated ``PUT .../key``; a KBS-keyed one (``key_id == "kbs:<name>"``) needs nothing more from the
client: the enclave obtains the key from the key broker after attestation. The model's SHA-256 is computed over
the plaintext here, so the owner can compare it with what the enclave reports in the model's metadata.

Errors: :class:`~enklave.errors.UsageError` for bad arguments (a key of the wrong size, a KBS container without
the key when one is needed, a file too large), :class:`~enklave.errors.TransportError` when a file cannot be
read, and what :mod:`enklave.inference.model_format` raises for a container that does not parse or decrypt.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from enklave._home import read_limited
from enklave.errors import UsageError
from enklave.inference import _client_messages as msg
from enklave.inference.model_format import OWNER_KEY_ID, decrypt_model, encrypt_model, read_header

__all__ = [
    "MAX_MODEL_SIZE",
    "OWNER_KEY_ID",
    "Upload",
    "UploadResult",
    "new_model_key",
    "prepare_container",
    "prepare_model",
    "read_source",
]

MAX_MODEL_SIZE: Final = 1 << 30
"""Largest model (or container) the client reads, in bytes: the service's default model limit."""


def new_model_key() -> bytes:
    """A fresh random AES-256 model key."""
    return os.urandom(msg.KEY_SIZE)


@dataclass(frozen=True, slots=True, eq=False)
class UploadResult:
    """What an upload did: the model's name and version, how its key reaches the enclave (``key_id``: ``"owner"``
    or ``"kbs:<name>"``), the owner ``key`` (keep it: it decrypts the container; None for a KBS container
    uploaded without it), the SHA-256 of the plaintext model (hex; None when it could not be computed here),
    the container's size, the host's answer to the upload, and ``loaded``: True when the enclave answered the
    key with the model loaded and the same SHA-256 (False: it keeps the key until the model reaches it, or the
    key comes from the key broker)."""

    name: str
    version: str
    key_id: str
    key: bytes | None = field(repr=False)
    sha256: str | None
    size: int
    answer: Mapping[str, Any]
    loaded: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class Upload:
    """An upload ready to send: the container ``blob`` and what the steps after it need."""

    name: str
    version: str
    key_id: str
    key: bytes | None = field(repr=False)
    sha256: str | None
    blob: bytes = field(repr=False)

    @property
    def send_key(self) -> bool:
        """Whether the client hands the key to the enclave itself (an owner-keyed container)."""
        return self.key_id == OWNER_KEY_ID

    def result(self, answer: Mapping[str, Any], *, loaded: bool = False) -> UploadResult:
        """The result of this upload, with the host's ``answer``."""
        return UploadResult(
            self.name, self.version, self.key_id, self.key, self.sha256, len(self.blob), answer, loaded
        )


def read_source(source: bytes | str | os.PathLike[str], what: str, limit: int = MAX_MODEL_SIZE) -> bytes:
    """``source`` itself (bytes) or the content of the file it names, at most ``limit`` bytes."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        data = read_limited(Path(source), limit)
    else:
        raise UsageError(f"{what} must be bytes or a path")
    if len(data) > limit:
        raise UsageError(f"{what} is larger than {limit} bytes")
    if not data:
        raise UsageError(f"{what} is empty")
    return data


def _check_key(key: object) -> bytes:
    if not isinstance(key, bytes) or len(key) != msg.KEY_SIZE:
        raise UsageError(f"a model key is {msg.KEY_SIZE} bytes (AES-256)")
    return key


def prepare_model(
    model: bytes | str | os.PathLike[str],
    *,
    name: str,
    version: str | int,
    key: bytes | None = None,
    kbs_key: str | None = None,
    limit: int = MAX_MODEL_SIZE,
) -> Upload:
    """Encrypt ``model`` (ONNX bytes or a path) as ``name``/``version``.

    Owner-keyed with ``key`` (a fresh one when None) unless ``kbs_key`` names a key-broker key; then ``key``
    must be that key's value, since the broker never gives its keys to anyone but attested enclaves.
    """
    name = msg.check_model_name(name)
    version = msg.check_version(version)
    if kbs_key is not None:
        if not isinstance(kbs_key, str):
            raise UsageError("kbs_key must be the key broker's name for the key")
        if key is None:
            raise UsageError("a KBS-keyed model needs the KBS key's value to encrypt it (key=...)")
        key_id = f"kbs:{kbs_key}"
    else:
        key_id = OWNER_KEY_ID
    key = _check_key(new_model_key() if key is None else key)
    plaintext = read_source(model, "the model", limit)
    blob = encrypt_model(plaintext, key, name=name, version=version, key_id=key_id)
    digest = hashlib.sha256(plaintext).hexdigest()
    return Upload(name, version, key_id, key, digest, blob)


def prepare_container(
    container: bytes | str | os.PathLike[str],
    *,
    key: bytes | None = None,
    limit: int = MAX_MODEL_SIZE + (1 << 20),
) -> Upload:
    """Check a container made earlier: its header, and with ``key`` that it decrypts (and the model's SHA-256).

    An owner-keyed container needs ``key``. Raises :class:`UsageError` without it, and what
    :func:`~enklave.inference.model_format.decrypt_model` raises when the key does not open it.
    """
    blob = read_source(container, "the model container", limit)
    header = read_header(blob)
    if header.key_id == OWNER_KEY_ID and key is None:
        raise UsageError("an owner-keyed model container needs its key to be uploaded (key=...)")
    digest: str | None = None
    if key is not None:
        _, plaintext = decrypt_model(blob, _check_key(key))
        digest = hashlib.sha256(plaintext).hexdigest()
    return Upload(header.name, header.version, header.key_id, key, digest, blob)
