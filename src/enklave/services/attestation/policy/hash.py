"""The policy hash MAA puts in its tokens (``x-ms-policy-hash``), and the policy JWS it is computed from.

MAA accepts a policy either as text or as a JWS (RFC 7515) whose payload is ``{"AttestationPolicy":
BASE64URL(UTF8(policy text))}``, unsigned (``{"alg":"none"}``, empty signature) or signed by a policy
management key. Two hashes are documented:

* ``x-ms-policy-hash``, the token claim (MAA claim sets): ``BASE64URL(SHA256(UTF8(BASE64URL(UTF8(policy
  text)))))``. It depends only on the policy text, not on how it was wrapped or who signed it. See
  :func:`policy_hash`.
* The ``policy_token_hash`` that ``PUT /policies/{type}`` returns in its ``x-ms-policy-result``: the SHA-256
  of the policy JWS exactly as uploaded (Microsoft's SDKs check it as ``SHA256(UTF8(jws))``). See
  :func:`policy_token_hash`; :func:`unsigned_policy_jws` builds the unsigned JWS the same way those SDKs do,
  byte for byte, so a client and the service agree on it.

BASE64URL is unpadded, as everywhere in JOSE. This module does not verify policy signatures: checking who
signed a policy belongs to the service that accepts it.
"""

from __future__ import annotations

import hashlib
import json
import re

from enklave import _b64url
from enklave._json import loads
from enklave.errors import InvalidPolicy

__all__ = ["policy_hash", "policy_text_from_jws", "policy_token_hash", "unsigned_policy_jws"]

# A compact JWS: three base64url segments. A policy text never matches, since it contains '=' and ';'.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_UNSIGNED_HEADER = "eyJhbGciOiJub25lIn0"  # BASE64URL('{"alg":"none"}'), as RFC 7515 appendix A.5 writes it.


def _b64url_decode(text: str, what: str) -> bytes:
    # MAA's policy tokens are decoded as they come: non-canonical trailing bits are tolerated here.
    try:
        return _b64url.decode(text, canonical=False)
    except ValueError as exc:
        raise InvalidPolicy(f"{what} {exc}") from exc


def unsigned_policy_jws(policy_text: str) -> str:
    """The unsigned JWS that carries ``policy_text``: ``{"alg":"none"}``, the policy payload, no signature.

    The payload is serialised as Microsoft's Python SDK serialises it (``json.dumps`` defaults), so the
    result, and hence its :func:`policy_token_hash`, is what that SDK computes for the same text.
    """
    payload = json.dumps({"AttestationPolicy": _b64url.encode(policy_text.encode("utf-8"))})
    return f"{_UNSIGNED_HEADER}.{_b64url.encode(payload.encode('utf-8'))}."


def policy_text_from_jws(jws: str) -> str:
    """The policy text inside a policy JWS (signed or not), without checking any signature.

    Raises :class:`~enklave.errors.InvalidPolicy` when ``jws`` is not a compact JWS, its header or payload is
    not a JSON object, the payload has no string ``AttestationPolicy``, or that is not base64url of UTF-8.
    """
    if not _COMPACT_JWS.fullmatch(jws):
        raise InvalidPolicy("policy token is not a compact JWS")
    header_part, payload_part, _signature = jws.split(".")
    try:
        header = loads(_b64url_decode(header_part, "policy token header"))
        payload = loads(_b64url_decode(payload_part, "policy token payload"))
    except (ValueError, RecursionError) as exc:
        raise InvalidPolicy("policy token header or payload is not JSON") from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise InvalidPolicy("policy token header and payload must be JSON objects")
    encoded = payload.get("AttestationPolicy")
    if not isinstance(encoded, str):
        raise InvalidPolicy("policy token payload has no AttestationPolicy string")
    try:
        return _b64url_decode(encoded, "AttestationPolicy").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPolicy("AttestationPolicy is not UTF-8 text") from exc


def policy_hash(policy: str) -> str:
    """``x-ms-policy-hash`` of a policy given as text or as a policy JWS.

    Computes ``BASE64URL(SHA256(UTF8(BASE64URL(UTF8(policy text)))))``; for a JWS, of the text it carries.
    Raises :class:`~enklave.errors.InvalidPolicy` when ``policy`` looks like a JWS but is not a valid policy
    JWS. The text itself is not parsed here.
    """
    text = policy_text_from_jws(policy) if _COMPACT_JWS.fullmatch(policy) else policy
    inner = _b64url.encode(text.encode("utf-8"))
    return _b64url.encode(hashlib.sha256(inner.encode("ascii")).digest())


def policy_token_hash(jws: str) -> bytes:
    """The SHA-256 of a policy JWS as uploaded: the ``policy_token_hash`` of a set-policy result.

    Raises :class:`~enklave.errors.InvalidPolicy` when ``jws`` is not a compact JWS.
    """
    if not _COMPACT_JWS.fullmatch(jws):
        raise InvalidPolicy("policy token is not a compact JWS")
    return hashlib.sha256(jws.encode("ascii")).digest()
