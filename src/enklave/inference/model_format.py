"""The encrypted model container: an ONNX model sealed for one key with AES-256-GCM (documented in docs/inference.md).

Layout::

    offset   size  field
    0        8     magic b"ENKMODL1"
    8        4     header length H, unsigned big-endian (1 to 4096)
    12       H     header: canonical JSON {"key_id", "name", "size", "version"[, "wrapped_key"]} (sorted keys,
                   no spaces, ASCII)
    12+H     12    AES-GCM nonce (random per container)
    24+H     S+16  AES-256-GCM ciphertext of the S-byte model, followed by the 16-byte tag

The associated data is everything before the nonce (magic, length and header), so the name, version, key id and
size cannot be changed without the tag failing. The container ends exactly after the tag: the header's ``size``
fixes the total length, and truncated containers and trailing bytes are refused before any decryption.

Header fields: ``name`` matches ``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}``; ``version`` is a positive decimal integer as a
string ("1", no leading zero, at most 18 digits); ``key_id`` is ``"owner"`` (the owner sends the key through an
encapsulated request) or ``"kbs:<name>"`` (the key broker releases the key named ``<name>`` after attestation);
``size`` is the plaintext length in bytes. ``wrapped_key`` (only with a ``kbs:`` key id) makes the key broker's
key an *envelope* key: the field holds the 32-byte model key wrapped to that broker key's public JWK, as
:func:`enklave.services.kbs.wrapping.wrap_released_key` makes it (a compact RSA-OAEP-256 JWE for an RSA key,
``hpke.<base64url>`` for a P-256 key), and the broker releases its private key (never the model key) to the
enclave, which unwraps the model key with it. Without ``wrapped_key`` the broker's key is the model key itself.
Like every header field, ``wrapped_key`` is associated data: a container whose wrapped key was replaced (even by
another wrapping of the same model key) does not decrypt.

The header is readable without the key (:func:`read_header`): the host uses it to route and bound an upload, the
enclave to decide where the key comes from. Only :func:`decrypt_model` proves that it is authentic.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enklave._json import strict_loads
from enklave.errors import BadDataError, UsageError, VerificationError

__all__ = [
    "KEY_SIZE",
    "MAGIC",
    "MAX_HEADER_SIZE",
    "MAX_MODEL_BYTES",
    "MAX_WRAPPED_KEY_SIZE",
    "NAME_PATTERN",
    "NONCE_SIZE",
    "OWNER_KEY_ID",
    "TAG_SIZE",
    "VERSION_PATTERN",
    "ModelHeader",
    "decrypt_model",
    "encrypt_model",
    "is_valid_key_id",
    "is_valid_name",
    "is_valid_version",
    "is_valid_wrapped_key",
    "read_header",
]

MAGIC: Final = b"ENKMODL1"
KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
MAX_HEADER_SIZE: Final = 4096
"""The largest header accepted: about 300 bytes of name, version, key id and size plus a wrapped key of at most
:data:`MAX_WRAPPED_KEY_SIZE` (an RSA-3072 JWE is about 650 bytes, an RSA-16384 one about 2900, HPKE 156)."""
MAX_WRAPPED_KEY_SIZE: Final = 3072
"""The longest ``wrapped_key``: a JWE to the largest RSA key the key broker's wrapping accepts (16384 bits)."""
# AES-GCM in `cryptography` takes at most 2**31 - 1 bytes of input, and decryption's input includes the tag.
MAX_MODEL_BYTES: Final = (1 << 31) - 1 - TAG_SIZE
"""The largest model the format can carry (just under 2 GiB); callers usually set a lower limit."""
OWNER_KEY_ID: Final = "owner"
"""The key id of a model whose key the owner sends to the enclave directly."""

NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
"""Model names: safe in URL paths and storage keys, never ``.`` or ``..`` (the first character is alphanumeric)."""
VERSION_PATTERN: Final = r"[1-9][0-9]{0,17}"
"""Model versions: positive decimal integers written without leading zeros, so that each has one spelling."""
# The key broker's key names (enklave.services.kbs.keys); repeated here so that this module stays importable in
# the enclave without the broker.
_KBS_NAME: Final = r"[A-Za-z0-9-]{1,127}"
_KBS_PREFIX: Final = "kbs:"

_NAME = re.compile(NAME_PATTERN)
_VERSION = re.compile(VERSION_PATTERN)
_KBS_KEY_ID = re.compile(_KBS_PREFIX + _KBS_NAME)
# A compact JWE (five base64url parts; only the header part is never empty) or an HPKE release envelope. The
# alphabet keeps the canonical JSON free of escapes; the envelope itself is checked when it is unwrapped.
_WRAPPED_KEY = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){4}|hpke\.[A-Za-z0-9_-]+")
_LENGTH = struct.Struct(">I")
_PREFIX_SIZE: Final = len(MAGIC) + _LENGTH.size
_FIELDS: Final = frozenset({"name", "version", "key_id", "size"})
_ENVELOPE_FIELDS: Final = _FIELDS | {"wrapped_key"}


def is_valid_name(name: object) -> bool:
    """True when ``name`` is a string that matches :data:`NAME_PATTERN`."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def is_valid_version(version: object) -> bool:
    """True when ``version`` is a string that matches :data:`VERSION_PATTERN`."""
    return isinstance(version, str) and _VERSION.fullmatch(version) is not None


def is_valid_key_id(key_id: object) -> bool:
    """True for ``"owner"`` and for ``"kbs:<key broker key name>"``."""
    return isinstance(key_id, str) and (key_id == OWNER_KEY_ID or _KBS_KEY_ID.fullmatch(key_id) is not None)


def is_valid_wrapped_key(value: object) -> bool:
    """True for a string of at most :data:`MAX_WRAPPED_KEY_SIZE` characters shaped as a compact JWE or an
    ``hpke.<base64url>`` envelope (its content is checked only when it is unwrapped)."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_WRAPPED_KEY_SIZE
        and _WRAPPED_KEY.fullmatch(value) is not None
    )


@dataclass(frozen=True, slots=True)
class ModelHeader:
    """The clear header of a model container: which model it is and which key opens it.

    Parsing proves only the structure; :func:`decrypt_model` authenticates it. Building one from Python with an
    invalid field raises :class:`~enklave.errors.UsageError`.
    """

    name: str
    version: str
    key_id: str
    size: int
    wrapped_key: str | None = None

    def __post_init__(self) -> None:
        if not is_valid_name(self.name):
            raise UsageError(f"model name must match {NAME_PATTERN}")
        if not is_valid_version(self.version):
            raise UsageError("model version must be a positive integer without leading zeros")
        if not is_valid_key_id(self.key_id):
            raise UsageError("model key id must be 'owner' or 'kbs:<key name>'")
        if type(self.size) is not int or not 0 <= self.size <= MAX_MODEL_BYTES:
            raise UsageError(f"model size must be an integer from 0 to {MAX_MODEL_BYTES}")
        if self.wrapped_key is not None:
            if not self.key_id.startswith(_KBS_PREFIX):
                raise UsageError("a wrapped model key needs a 'kbs:<key name>' key id")
            if not is_valid_wrapped_key(self.wrapped_key):
                raise UsageError(
                    f"a wrapped model key is a compact JWE or 'hpke.<base64url>' of at most "
                    f"{MAX_WRAPPED_KEY_SIZE} characters"
                )

    @property
    def kbs_key(self) -> str | None:
        """The key broker's name for the model key, or None when the owner provides the key."""
        return self.key_id[len(_KBS_PREFIX) :] if self.key_id.startswith(_KBS_PREFIX) else None

    @property
    def envelope_key(self) -> str | None:
        """The key broker's name of the envelope key whose private half unwraps :attr:`wrapped_key`, or None
        when the header carries no wrapped key."""
        return None if self.wrapped_key is None else self.kbs_key

    def to_bytes(self) -> bytes:
        """The canonical JSON encoding: sorted keys, no whitespace, ASCII only (``wrapped_key`` only when set)."""
        fields: dict[str, str | int] = {
            "name": self.name, "version": self.version, "key_id": self.key_id, "size": self.size,
        }  # fmt: skip
        if self.wrapped_key is not None:
            fields["wrapped_key"] = self.wrapped_key
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _check_key(key: bytes) -> AESGCM:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
        raise UsageError(f"a model key must be {KEY_SIZE} bytes")
    return AESGCM(bytes(key))


def encrypt_model(
    model: bytes,
    key: bytes,
    *,
    name: str,
    version: str | int,
    key_id: str = OWNER_KEY_ID,
    wrapped_key: str | None = None,
) -> bytes:
    """Encrypt ``model`` for ``key`` (32 bytes) into a container with a fresh random nonce.

    ``version`` may be given as a positive int; ``wrapped_key`` (with a ``kbs:`` key id) is ``key`` wrapped to the
    key broker key's public JWK (see the module docstring; this function does not check that it wraps ``key``).
    Raises :class:`~enklave.errors.UsageError` on a key of the wrong size, an invalid name, version, key id or
    wrapped key, or a model larger than :data:`MAX_MODEL_BYTES`.
    """
    aead = _check_key(key)
    # A bool would become "True" here, which the version pattern then refuses.
    text = str(version) if isinstance(version, int) else version
    if len(model) > MAX_MODEL_BYTES:
        raise UsageError(f"a model container holds at most {MAX_MODEL_BYTES} bytes")
    header = ModelHeader(
        name=name, version=text, key_id=key_id, size=len(model), wrapped_key=wrapped_key
    ).to_bytes()
    associated = MAGIC + _LENGTH.pack(len(header)) + header
    nonce = os.urandom(NONCE_SIZE)
    return associated + nonce + aead.encrypt(nonce, model, associated)


def _parse(blob: bytes, max_model_bytes: int) -> tuple[ModelHeader, int]:
    """The header and the offset of the nonce; raises BadDataError on anything but a well-formed container."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise UsageError("a model container must be bytes")
    size = len(blob)
    # 1. The fixed prefix: magic and header length, so that other formats fail clearly.
    if size < _PREFIX_SIZE:
        raise BadDataError(f"model container is truncated: {size} bytes")
    if bytes(blob[: len(MAGIC)]) != MAGIC:
        raise BadDataError("not an enklave model container: wrong magic")
    (header_size,) = _LENGTH.unpack_from(blob, len(MAGIC))
    if not 0 < header_size <= MAX_HEADER_SIZE:
        raise BadDataError(
            f"model container header length {header_size} is not between 1 and {MAX_HEADER_SIZE}"
        )
    if size < _PREFIX_SIZE + header_size + NONCE_SIZE + TAG_SIZE:
        raise BadDataError(f"model container is truncated: {size} bytes")
    # 2. The header: strict canonical JSON with exactly the four fields (or five, with a wrapped key), each valid.
    raw = bytes(blob[_PREFIX_SIZE : _PREFIX_SIZE + header_size])
    header = _decode_header(raw)
    # 3. The sizes: within the caller's limit, and exactly what follows the header.
    if header.size > max_model_bytes:
        raise BadDataError(f"model of {header.size} bytes exceeds the limit of {max_model_bytes}")
    nonce_at = _PREFIX_SIZE + header_size
    expected = nonce_at + NONCE_SIZE + header.size + TAG_SIZE
    if size != expected:
        problem = "truncated" if size < expected else "followed by trailing bytes"
        raise BadDataError(f"model container is {problem}: {size} bytes, its header declares {expected}")
    return header, nonce_at


def _decode_header(raw: bytes) -> ModelHeader:
    try:
        fields: Any = strict_loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadDataError("model container header is not ASCII JSON") from exc
    if not isinstance(fields, dict) or set(fields) not in (_FIELDS, _ENVELOPE_FIELDS):
        raise BadDataError(
            "model container header must hold exactly name, version, key_id and size (and maybe wrapped_key)"
        )
    try:
        header = ModelHeader(
            name=fields["name"],
            version=fields["version"],
            key_id=fields["key_id"],
            size=fields["size"],
            wrapped_key=fields.get("wrapped_key"),
        )
    except UsageError as exc:
        raise BadDataError(f"invalid model container header: {exc}") from exc
    # One spelling per header: a container whose header was re-encoded differently is not the one encrypted.
    if header.to_bytes() != raw:
        raise BadDataError("model container header is not canonical JSON")
    return header


def read_header(blob: bytes, *, max_model_bytes: int = MAX_MODEL_BYTES) -> ModelHeader:
    """The header of a container, without the key: structure and sizes checked, nothing authenticated.

    Raises :class:`~enklave.errors.BadDataError` on a wrong magic, a malformed or non-canonical header, a model
    larger than ``max_model_bytes``, truncation or trailing bytes.
    """
    header, _ = _parse(blob, max_model_bytes)
    return header


def decrypt_model(
    blob: bytes, key: bytes, *, max_model_bytes: int = MAX_MODEL_BYTES
) -> tuple[ModelHeader, bytes]:
    """Authenticate and decrypt a container: its header and the plaintext model.

    Raises :class:`~enklave.errors.BadDataError` when the container is malformed (see :func:`read_header`),
    :class:`~enklave.errors.VerificationError` when it does not decrypt with ``key`` (a wrong key, or any changed
    byte), :class:`~enklave.errors.UsageError` on a key that is not 32 bytes.
    """
    aead = _check_key(key)
    header, nonce_at = _parse(blob, max_model_bytes)
    view = memoryview(blob)
    try:
        # Views, not slices: a large model is not copied before it is decrypted.
        model = aead.decrypt(
            bytes(view[nonce_at : nonce_at + NONCE_SIZE]), view[nonce_at + NONCE_SIZE :], view[:nonce_at]
        )
    except InvalidTag as exc:
        raise VerificationError(
            f"model container {header.name} version {header.version} does not decrypt: wrong key or tampered"
        ) from exc
    return header, model
