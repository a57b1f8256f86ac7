"""Base64url without padding (RFC 7515, section 2; RFC 4648, section 5): the one codec of enklave's JOSE and
HPKE formats.

:func:`decode` takes only the URL-safe alphabet and no padding, refuses lengths no encoding has, and by default
only the canonical encoding (no stray bits in the last character), so that no two strings decode to the same
signed bytes. It raises ``ValueError``; each format wraps that in its own error type.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["decode", "encode"]

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def encode(data: bytes) -> str:
    """``data`` as unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode(text: object, *, canonical: bool = True) -> bytes:
    """Decode unpadded base64url; raises ValueError ("is not base64url", "is not canonical base64url")."""
    if not isinstance(text, str) or not _ALPHABET.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("is not base64url") from exc
    if canonical and encode(data) != text:
        raise ValueError("is not canonical base64url")
    return data
