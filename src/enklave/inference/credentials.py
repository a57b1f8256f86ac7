"""The model owner's credentials: one secret, the owner token, and two values derived from it for the host.

The owner authenticates twice. To the untrusted host, for the model management routes (``/v1/models...``), with
the **host credential** ``base64url(HMAC-SHA256(key=owner token, msg=HOST_CREDENTIAL_LABEL))``; to the enclave,
inside the Oblivious HTTP encryption, for ``PUT /v2/models/{name}/versions/{v}/key``, with the owner token
itself, which the enclave checks against the token's SHA-256. The host therefore needs only the host credential
(which it compares) and the token's SHA-256 (which it hands to the enclave): it never has to see the token, and
what it does see cannot be turned back into it (HMAC-SHA256 and SHA-256 are one-way), so a curious host cannot act
as the owner inside the encryption.

:func:`owner_credentials` computes the pair an operator configures the host with (``enklave model
credentials``); :func:`host_credential` is what a client sends the host. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Final

from enklave import _b64url
from enklave.errors import UsageError

__all__ = [
    "HOST_CREDENTIAL_LABEL",
    "MIN_OWNER_TOKEN_LENGTH",
    "check_host_credential",
    "check_owner_token",
    "check_token_sha256",
    "host_credential",
    "owner_credentials",
]

HOST_CREDENTIAL_LABEL: Final = b"enklave inference host credential v1"
"""The HMAC message that derives the host credential from the owner token (versioned: a new label, a new value)."""

MIN_OWNER_TOKEN_LENGTH: Final = 16
"""The shortest owner token a service accepts, in characters."""

_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def check_owner_token(token: object) -> str:
    """``token`` when it is an owner token a service accepts: at least :data:`MIN_OWNER_TOKEN_LENGTH` printable
    characters without spaces. Raises :class:`~enklave.errors.UsageError` (without the token) otherwise."""
    if (
        not isinstance(token, str)
        or len(token) < MIN_OWNER_TOKEN_LENGTH
        or not token.isprintable()
        or " " in token
    ):
        raise UsageError(
            f"the owner token must be at least {MIN_OWNER_TOKEN_LENGTH} printable characters without spaces"
        )
    return token


def host_credential(owner_token: str) -> str:
    """The credential a client sends the host for model management: unpadded base64url of
    HMAC-SHA256(key=UTF-8 ``owner_token``, msg=:data:`HOST_CREDENTIAL_LABEL`), 43 characters.

    Raises :class:`~enklave.errors.UsageError` when ``owner_token`` is not a non-empty string. It does not judge
    the token's strength (see :func:`check_owner_token`): a client derives whatever it was given."""
    if not isinstance(owner_token, str) or not owner_token:
        raise UsageError("the owner token must be a non-empty string")
    mac = hmac.new(owner_token.encode("utf-8"), HOST_CREDENTIAL_LABEL, hashlib.sha256).digest()
    return _b64url.encode(mac)


def owner_credentials(owner_token: str) -> tuple[str, str]:
    """``(host credential, token SHA-256 in lowercase hex)``: what a host is configured with instead of the token.

    The SHA-256 is over the token's UTF-8 bytes, the digest the enclave compares
    (:func:`enklave.inference.router.token_digest`). Raises :class:`~enklave.errors.UsageError` for a token the
    service would refuse (:func:`check_owner_token`)."""
    token = check_owner_token(owner_token)
    return host_credential(token), hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_host_credential(value: object) -> str:
    """``value`` when it is a host credential: canonical unpadded base64url of 32 bytes. Raises
    :class:`~enklave.errors.UsageError` (without the value) otherwise."""
    try:
        raw = _b64url.decode(value)
    except ValueError:
        raw = b""
    if len(raw) != hashlib.sha256().digest_size:
        raise UsageError(
            "the owner credential must be 43 base64url characters (enklave model credentials derives it)"
        )
    return str(value)


def check_token_sha256(value: object) -> str:
    """``value`` in lowercase when it is a SHA-256 digest in hex (64 digits); else
    :class:`~enklave.errors.UsageError`."""
    if not isinstance(value, str) or not _HEX_SHA256.fullmatch(value):
        raise UsageError("the owner token SHA-256 must be 64 hexadecimal digits (enklave model credentials)")
    return value.lower()
