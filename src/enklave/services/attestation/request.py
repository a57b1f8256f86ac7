"""The body of an MAA attestation request (REST API 2022-08-01), parsed strictly.

``POST /attest/SgxEnclave`` carries ``quote`` and ``POST /attest/OpenEnclave`` carries ``report`` (both
base64url), and both may carry ``runtimeData`` and ``initTimeData`` (``{"data": base64url, "dataType": "Binary"
| "JSON"}``), ``nonce`` (a string) and ``draftPolicyForAttestation`` (policy text or a policy JWS). The host
parses a request to find which collateral to fetch, and the service's enclave parses it again itself: the
enclave never relies on the host's reading.

Every problem raises :class:`~enklave.errors.BoundaryError` (the request crossed into the service untrusted):
a body that is not one JSON object, an unknown or mistyped member, base64url that does not decode, JSON runtime
data that is not a JSON object, or anything over its size limit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from enklave import _b64url
from enklave._json import strict_loads
from enklave.errors import BoundaryError

__all__ = [
    "ATTESTATION_TYPES",
    "MAX_DATA_SIZE",
    "MAX_EVIDENCE_SIZE",
    "MAX_NONCE_LENGTH",
    "MAX_REQUEST_SIZE",
    "AttestRequest",
    "RequestData",
    "b64url_decode",
    "parse_attest_request",
]

ATTESTATION_TYPES = ("SgxEnclave", "OpenEnclave")
"""The attestation types (path segments of the REST API) the service accepts."""
MAX_REQUEST_SIZE = 1 << 20
"""Largest request body, in bytes."""
MAX_EVIDENCE_SIZE = 64 << 10
"""Largest decoded quote or report, in bytes."""
MAX_DATA_SIZE = 32 << 10
"""Largest decoded runtime or init-time data, in bytes."""
MAX_NONCE_LENGTH = 1024
"""Longest nonce, in characters."""

_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_DATA_TYPES = ("Binary", "JSON")
_COMMON = frozenset({"runtimeData", "initTimeData", "nonce", "draftPolicyForAttestation"})
_EVIDENCE_MEMBER = {"SgxEnclave": "quote", "OpenEnclave": "report"}


def b64url_decode(text: object, what: str, limit: int) -> bytes:
    """Decode base64url (padding optional, as Microsoft's SDKs send none) of at most ``limit`` bytes.

    Raises :class:`BoundaryError` for a non-string, characters outside the base64url alphabet, a bad length,
    or a value whose decoded size exceeds ``limit``.
    """
    if not isinstance(text, str):
        raise BoundaryError(f"{what} must be a base64url string")
    if len(text) > (limit * 4) // 3 + 4 or not _B64URL.fullmatch(text):
        raise BoundaryError(f"{what} is not base64url of at most {limit} bytes")
    bare = text.rstrip("=")
    if len(bare) % 4 == 1:
        raise BoundaryError(f"{what} is not base64url: its length is impossible")
    try:
        data = _b64url.decode(bare, canonical=False)
    except ValueError as exc:
        raise BoundaryError(f"{what} {exc}") from exc
    if len(data) > limit:
        raise BoundaryError(f"{what} is longer than {limit} bytes")
    return data


@dataclass(frozen=True, slots=True)
class RequestData:
    """``runtimeData`` or ``initTimeData``: the raw bytes, and the JSON object they hold when ``dataType`` is
    ``"JSON"`` (else ``None``)."""

    data: bytes
    json: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class AttestRequest:
    """A parsed attestation request; only :func:`parse_attest_request` builds one."""

    attestation_type: str
    evidence: bytes
    runtime_data: RequestData | None
    init_time_data: RequestData | None
    nonce: str | None
    draft_policy: str | None


def _data(value: object, what: str) -> RequestData | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BoundaryError(f"{what} must be an object with data and dataType")
    unknown = set(value) - {"data", "dataType"}
    if unknown:
        raise BoundaryError(f"{what} has unknown members: {', '.join(sorted(unknown))[:200]}")
    data = b64url_decode(value.get("data"), f"{what}.data", MAX_DATA_SIZE)
    data_type = value.get("dataType", "Binary")
    if data_type not in _DATA_TYPES:
        raise BoundaryError(f"{what}.dataType must be Binary or JSON")
    if data_type == "Binary":
        return RequestData(data, None)
    try:
        parsed = strict_loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BoundaryError(f"{what}.data is not JSON although dataType is JSON") from exc
    if not isinstance(parsed, dict):
        raise BoundaryError(f"{what}.data must hold a JSON object when dataType is JSON")
    return RequestData(data, parsed)


def parse_attest_request(body: bytes | str, attestation_type: str) -> AttestRequest:
    """Parse the JSON body of ``POST /attest/{attestation_type}``; see the module docstring.

    Steps: (1) the type is SgxEnclave or OpenEnclave; (2) the body is at most :data:`MAX_REQUEST_SIZE` bytes
    of strict JSON (no duplicate keys) holding one object with only known members; (3) the evidence member
    (``quote`` or ``report``) is base64url; (4) runtime and init-time data decode, and parse as a JSON object
    when declared JSON; (5) ``nonce`` and ``draftPolicyForAttestation`` are strings when present. Raises
    :class:`BoundaryError`.
    """
    # 1. The attestation type picks the evidence member.
    if attestation_type not in _EVIDENCE_MEMBER:
        raise BoundaryError("the attestation type must be SgxEnclave or OpenEnclave")
    member = _EVIDENCE_MEMBER[attestation_type]
    # 2. One bounded, strict JSON object.
    if len(body) > MAX_REQUEST_SIZE:
        raise BoundaryError(f"the request is larger than {MAX_REQUEST_SIZE} bytes")
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        document = strict_loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BoundaryError("the request body is not JSON") from exc
    if not isinstance(document, dict):
        raise BoundaryError("the request body must be a JSON object")
    unknown = set(document) - _COMMON - {member}
    if unknown:
        raise BoundaryError(f"the request has unknown members: {', '.join(sorted(unknown))[:200]}")
    # 3. The evidence.
    if member not in document:
        raise BoundaryError(f"the request has no {member}")
    evidence = b64url_decode(document[member], member, MAX_EVIDENCE_SIZE)
    if not evidence:
        raise BoundaryError(f"{member} is empty")
    # 4. Runtime and init-time data.
    runtime = _data(document.get("runtimeData"), "runtimeData")
    init_time = _data(document.get("initTimeData"), "initTimeData")
    # 5. Nonce and draft policy.
    nonce = document.get("nonce")
    if nonce is not None and (not isinstance(nonce, str) or len(nonce) > MAX_NONCE_LENGTH):
        raise BoundaryError(f"nonce must be a string of at most {MAX_NONCE_LENGTH} characters")
    draft = document.get("draftPolicyForAttestation")
    if draft is not None and (not isinstance(draft, str) or not draft):
        raise BoundaryError("draftPolicyForAttestation must be a non-empty string")
    return AttestRequest(attestation_type, evidence, runtime, init_time, nonce, draft)
