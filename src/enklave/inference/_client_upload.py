"""Preparing a model upload, without I/O on the network: read the model, encrypt it (or check a container made
earlier), and keep what the upload needs; and the result a model owner gets back.

An owner-keyed container (``key_id == "owner"``) needs its key to reach the enclave after the upload, through
the encapsulated ``PUT .../key``; a KBS-keyed one (``key_id == "kbs:<name>"``) needs nothing more from the
client: the enclave obtains the key from the key broker after attestation. With the public JWK of an RSA or EC
P-256 key broker key (an *envelope* key), the client encrypts under a fresh model key and puts that key, wrapped
to the public JWK (:func:`~enklave.services.kbs.wrapping.wrap_released_key`), in the container's header
(``wrapped_key``): the broker later releases the envelope key's private half to the attested enclave, which
unwraps the model key itself. The model key is then sent nowhere else. The model's SHA-256 is computed over
the plaintext here, so the owner can compare it with what the enclave reports in the model's metadata.

Errors: :class:`~enklave.errors.UsageError` for bad arguments (a key of the wrong size, a KBS container without
the key or public JWK it needs, a file too large), :class:`~enklave.errors.InvalidKey` for a public JWK that
cannot be wrapped to (weak RSA, another curve), :class:`~enklave.errors.TransportError` when a file cannot be
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
from enklave.services.kbs.wrapping import wrap_released_key

__all__ = [
    "MAX_MODEL_SIZE",
    "OWNER_KEY_ID",
    "Upload",
    "UploadResult",
    "envelope_public_jwk",
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


_PUBLIC_MEMBERS: Final = {"RSA": ("kty", "n", "e"), "EC": ("kty", "crv", "x", "y")}
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def envelope_public_jwk(value: Mapping[str, Any]) -> dict[str, str]:
    """The public JWK of a key broker envelope key, from the JWK itself or from the broker's key view
    (``{"key": JWK, ...}``, what :meth:`~enklave.services.kbs.client.KbsClient.get_key` answers).

    Only the key's own members are kept (``kty``, ``n``, ``e`` or ``kty``, ``crv``, ``x``, ``y``), so that nothing
    else (a ``kid`` naming the broker, say) reaches the container's clear header. Raises :class:`UsageError` for
    anything but an RSA or EC public JWK; the key's strength is checked when it is wrapped to.
    """
    jwk = value.get("key") if isinstance(value, Mapping) and isinstance(value.get("key"), Mapping) else value
    if not isinstance(jwk, Mapping):
        raise UsageError("the key broker key's public JWK must be a JSON object")
    members = _PUBLIC_MEMBERS.get(str(jwk.get("kty")))
    if members is None:
        raise UsageError("an envelope key is an RSA or EC key of the key broker (kty RSA or EC)")
    if _PRIVATE_MEMBERS & set(jwk):
        raise UsageError("give the key broker key's public JWK: this one holds private members")
    public: dict[str, str] = {}
    for member in members:
        item = jwk.get(member)
        if not isinstance(item, str) or not item:
            raise UsageError(f"the key broker key's public JWK lacks its {member!r} member")
        public[member] = item
    return public


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
    kbs_public_jwk: Mapping[str, Any] | None = None,
    limit: int = MAX_MODEL_SIZE,
) -> Upload:
    """Encrypt ``model`` (ONNX bytes or a path) as ``name``/``version``.

    Owner-keyed with ``key`` (a fresh one when None) unless ``kbs_key`` names a key-broker key. With
    ``kbs_public_jwk`` (that RSA or EC key's public JWK, or its key view) the model key (``key``, or a fresh one)
    is wrapped to it into the header, and the broker's key is an envelope key; without it ``key`` must be the
    broker key's value itself, which the broker gives only to attested enclaves. Raises :class:`UsageError` for
    inconsistent arguments and :class:`~enklave.errors.InvalidKey` for a public key that cannot be wrapped to.
    """
    name = msg.check_model_name(name)
    version = msg.check_version(version)
    wrap_to: dict[str, str] | None = None
    if kbs_key is not None:
        if not isinstance(kbs_key, str):
            raise UsageError("kbs_key must be the key broker's name for the key")
        if kbs_public_jwk is not None:
            wrap_to = envelope_public_jwk(kbs_public_jwk)
        elif key is None:
            raise UsageError(
                "a KBS-keyed model needs the KBS key's public JWK (kbs_public_jwk=...) or its value (key=...)"
            )
        key_id = f"kbs:{kbs_key}"
    elif kbs_public_jwk is not None:
        raise UsageError("kbs_public_jwk needs kbs_key, the key broker's name for that key")
    else:
        key_id = OWNER_KEY_ID
    key = _check_key(new_model_key() if key is None else key)
    plaintext = read_source(model, "the model", limit)
    # The model key leaves this process only wrapped to the envelope key, inside the authenticated header.
    wrapped = None if wrap_to is None else wrap_released_key(key, wrap_to)
    blob = encrypt_model(plaintext, key, name=name, version=version, key_id=key_id, wrapped_key=wrapped)
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
