"""Evidence that Oblivious HTTP key configurations belong to an enclave: the report data layout and the envelope.

Report data layout (64 bytes; both sides compute it with :func:`key_config_report_data`)::

    report_data[0:32]  = SHA-256( REPORT_DATA_DOMAIN                       # b"enklave/ohttp-keys/v1\\0"
                                  || uint32_be(len(key_configs)) || key_configs   # application/ohttp-keys
                                  || uint8(len(nonce)) || nonce )           # 0..64 bytes; empty = no nonce
    report_data[32:64] = 32 zero bytes

``key_configs`` are the exact bytes published as ``application/ohttp-keys`` (RFC 9458 §3.2), so a client binds
what it will encrypt to, not a re-encoding. The domain string keeps this hash apart from every other use of report
data (RA-TLS claims, token nonces); the length prefixes make the encoding of (key configurations, nonce)
unambiguous. The verifier checks all 64 bytes.

Envelope (``application/vnd.enklave.ohttp-key-evidence+cbor``): one CBOR map with exactly the text keys
``"version"`` (1), ``"key_configs"``, ``"quote"`` and ``"nonce"`` (byte strings), decoded with enklave's strict
CBOR subset (no tags, definite lengths, no duplicate keys, no trailing bytes) after a size check.

Errors: :class:`~enklave.errors.InvalidQuote` for an envelope that does not parse or breaks a limit;
:class:`~enklave.errors.UsageError` for an invalid value built locally.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

import cbor2

from enklave.channels.ohttp import KeyConfig
from enklave.errors import InvalidQuote, UsageError
from enklave.runtime import _cbor

__all__ = [
    "EVIDENCE_MEDIA_TYPE",
    "MAX_EVIDENCE_SIZE",
    "MAX_KEY_CONFIGS_SIZE",
    "MAX_NONCE_SIZE",
    "REPORT_DATA_DOMAIN",
    "KeyConfigEvidence",
    "key_config_report_data",
]

EVIDENCE_MEDIA_TYPE: Final = "application/vnd.enklave.ohttp-key-evidence+cbor"
REPORT_DATA_DOMAIN: Final = b"enklave/ohttp-keys/v1\x00"
#: Largest serialized evidence accepted, checked before decoding (a quote with its PCK chain is about 5 KiB).
MAX_EVIDENCE_SIZE: Final = 64 * 1024
#: Largest ``application/ohttp-keys`` list (a key configuration is about 50 to 100 bytes).
MAX_KEY_CONFIGS_SIZE: Final = 4096
#: Longest client nonce; the empty nonce means "no nonce".
MAX_NONCE_SIZE: Final = 64

_VERSION = 1
_KEYS = ("version", "key_configs", "quote", "nonce")


def key_config_report_data(key_configs: bytes, nonce: bytes = b"") -> bytes:
    """The 64 bytes of report data that bind ``key_configs`` (``application/ohttp-keys``) and ``nonce``.

    See the module docstring for the layout. Raises :class:`UsageError` when an argument is not bytes, the key
    configurations are empty or over :data:`MAX_KEY_CONFIGS_SIZE`, or the nonce is over :data:`MAX_NONCE_SIZE`.
    """
    problem = _check_sizes(key_configs, nonce)
    if problem is not None:
        raise UsageError(problem)
    digest = hashlib.sha256()
    digest.update(REPORT_DATA_DOMAIN)
    digest.update(struct.pack(">I", len(key_configs)) + bytes(key_configs))
    digest.update(struct.pack(">B", len(nonce)) + bytes(nonce))
    return digest.digest() + bytes(32)


def _check_sizes(key_configs: object, nonce: object) -> str | None:
    if not isinstance(key_configs, bytes) or not isinstance(nonce, bytes):
        return "key configurations and nonce must be bytes"
    if not 0 < len(key_configs) <= MAX_KEY_CONFIGS_SIZE:
        return f"the key configurations must be 1 to {MAX_KEY_CONFIGS_SIZE} bytes"
    if len(nonce) > MAX_NONCE_SIZE:
        return f"the nonce must be at most {MAX_NONCE_SIZE} bytes"
    return None


@dataclass(frozen=True, slots=True)
class KeyConfigEvidence:
    """Published key configurations, a quote whose report data binds them, and the nonce it was made for.

    Holding one proves nothing: :func:`~enklave.channels.ohttp_attested.verify_key_config_evidence` verifies it.
    ``nonce`` is empty when the evidence was made without one. Construction raises :class:`UsageError` for
    values outside the limits; :meth:`from_bytes` raises :class:`InvalidQuote`.
    """

    key_configs: bytes
    quote: bytes
    nonce: bytes = b""

    def __post_init__(self) -> None:
        problem = _check_sizes(self.key_configs, self.nonce)
        if problem is None and not isinstance(self.quote, bytes):
            problem = "the quote must be bytes"
        if problem is not None:
            raise UsageError(problem)

    @property
    def configs(self) -> tuple[KeyConfig, ...]:
        """The supported key configurations listed (RFC 9458 §3.2); raises :class:`~enklave.errors.InvalidKey`."""
        return KeyConfig.decode_list(self.key_configs)

    def to_bytes(self) -> bytes:
        """The CBOR envelope described in the module docstring."""
        values = (_VERSION, self.key_configs, self.quote, self.nonce)
        return cbor2.dumps(dict(zip(_KEYS, values, strict=True)))

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyConfigEvidence:
        """Parse the CBOR envelope strictly: size first, then the subset decoder, then exact keys and types.

        Raises :class:`InvalidQuote` when the data is over :data:`MAX_EVIDENCE_SIZE`, is not the CBOR subset,
        has other keys or types, another version, or a field outside its limit.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise UsageError("evidence must be bytes")
        if len(data) > MAX_EVIDENCE_SIZE:
            raise InvalidQuote(f"OHTTP key evidence is {len(data)} bytes, over {MAX_EVIDENCE_SIZE}")
        try:
            decoded = _cbor.decode(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidQuote(f"OHTTP key evidence is not valid CBOR: {exc}") from exc
        if not isinstance(decoded, dict) or set(decoded) != set(_KEYS):
            raise InvalidQuote(f"OHTTP key evidence must be a map with exactly the keys {', '.join(_KEYS)}")
        version = decoded["version"]
        if type(version) is not int or version != _VERSION:
            raise InvalidQuote(f"OHTTP key evidence version {version!r} is not supported")
        fields = [decoded[name] for name in _KEYS[1:]]
        if not all(type(value) is bytes for value in fields):
            raise InvalidQuote("OHTTP key evidence fields key_configs, quote and nonce must be byte strings")
        key_configs, quote, nonce = fields
        problem = _check_sizes(key_configs, nonce)
        if problem is not None:
            raise InvalidQuote(f"OHTTP key evidence: {problem}")
        return cls(key_configs, quote, nonce)
