"""What the key broker's enclave binds into the quote it returns with each release.

A release answer is ``{"value": wrapped, "quote": base64url, "audit": ...}``. The quote comes from the key
broker's own enclave, and its report data is :func:`release_report_data` of the key name, the recipient key and
the wrapped value, so that a recipient enclave can check, with its own key pair and the name it asked for, that
the key broker (and not the host that relayed the answer) wrapped that value to it:

1. ``thumbprint = SHA-256(RFC 7638 thumbprint input of the recipient's public JWK)``: the required members only
   (``e``, ``kty``, ``n`` for RSA; ``crv``, ``kty``, ``x``, ``y`` for EC), in that order, as JSON without
   whitespace.
2. ``message = field("enklave kbs release v1") || field(UTF-8 key name) || field(thumbprint) ||
   field(UTF-8 wrapped value)``, where ``field(b) = uint32_be(len(b)) || b``: every part is length-prefixed, so
   no two different tuples encode alike.
3. ``report_data = SHA-256(message) || 32 zero bytes``.

Pure functions, no I/O: both the key broker's enclave and the recipient enclave import this module.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from typing import Any, Final

from enklave.errors import InvalidKey

__all__ = ["RELEASE_DOMAIN", "jwk_thumbprint", "release_report_data"]

RELEASE_DOMAIN: Final = b"enklave kbs release v1"
"""The domain separator of the release binding (step 2)."""

_REQUIRED: Final = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> bytes:
    """The RFC 7638 SHA-256 thumbprint of a public RSA or EC JWK (private members are ignored).

    Raises :class:`InvalidKey` for another key type or a missing or non-string required member.
    """
    members = _REQUIRED.get(str(jwk.get("kty")))
    if members is None:
        raise InvalidKey("a release recipient is an RSA or EC public key")
    values = {}
    for member in members:
        value = jwk.get(member)
        if not isinstance(value, str) or not value:
            raise InvalidKey(f"the recipient key has no {member} member")
        values[member] = value
    # RFC 7638 section 3: the required members in lexicographic order, no whitespace (json.dumps keeps the
    # insertion order, which _REQUIRED lists sorted).
    text = json.dumps(values, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).digest()


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def release_report_data(name: str, recipient: Mapping[str, Any], wrapped: str) -> bytes:
    """The 64 bytes of report data that bind a release of key ``name``, wrapped to ``recipient`` (a public JWK)
    as ``wrapped`` (see the module docstring). Raises :class:`InvalidKey` for a recipient that is not an RSA or
    EC public JWK."""
    message = (
        _field(RELEASE_DOMAIN)
        + _field(name.encode("utf-8"))
        + _field(jwk_thumbprint(recipient))
        + _field(wrapped.encode("utf-8"))
    )
    return hashlib.sha256(message).digest() + bytes(32)
