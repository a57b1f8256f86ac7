"""A client of MAA-compatible attestation services (enklave's own, or Microsoft Azure Attestation).

:class:`AttestationClient` speaks the REST API, api-version 2022-08-01, over httpx::

    client = AttestationClient("http://127.0.0.1:8443")
    token = client.attest_sgx(quote, runtime_data=public_key_json_bytes, nonce="n-1")
    verified = TokenVerifier(client.base_url, HttpJwksSource(f"{client.base_url}/certs", transport)).verify(token)

The client returns the token as the service sent it: it does NOT verify it (that is the relying party's
:class:`~enklave.attestation.tokens.TokenVerifier`, with the JWKS it trusts). Errors map onto enklave's tree:
refused evidence and requests raise a :class:`~enklave.errors.BadDataError` subclass (``PolicyError`` for a
policy denial, ``BindingError`` for a runtime data mismatch, ``VerificationError`` for evidence that did not
verify, ``InvalidQuote`` for evidence that does not parse, ``InvalidPolicy`` for a policy that does not
parse), a refused admin credential raises :class:`~enklave.errors.UsageError`, and a network failure or a 5xx
raises :class:`~enklave.errors.TransportError`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import httpx
from cryptography import x509

from enklave._x509 import DECODE_ERRORS
from enklave.attestation._jwks import b64url_decode, b64url_encode, load_json_object
from enklave.errors import (
    BadDataError,
    BindingError,
    EnklaveError,
    InvalidPolicy,
    InvalidQuote,
    InvalidToken,
    PolicyError,
    UsageError,
    VerificationError,
)
from enklave.services._client import ServiceClient, answer_error, open_http, request_json
from enklave.services.attestation.policy import policy_text_from_jws, unsigned_policy_jws

__all__ = ["API_VERSION", "MAX_RESPONSE_SIZE", "AttestationClient"]

API_VERSION = "2022-08-01"
"""The REST API version this client speaks."""
MAX_RESPONSE_SIZE = 1 << 20
"""Largest response body the client reads, in bytes."""

_ERRORS_BY_CODE: dict[str, type[EnklaveError]] = {
    "PolicyEvaluationError": PolicyError,
    "RuntimeDataMismatch": BindingError,
    "EvidenceVerificationFailed": VerificationError,
    "InvalidEvidence": InvalidQuote,
    "InvalidPolicy": InvalidPolicy,
}


def _data(data: bytes | None, document: Mapping[str, Any] | None, what: str) -> dict[str, str] | None:
    if data is not None and document is not None:
        raise UsageError(f"give {what} as bytes or as a JSON object, not both")
    if document is not None:
        try:
            encoded = json.dumps(dict(document), separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{what} cannot be written as JSON: {exc}") from exc
        return {"data": b64url_encode(encoded), "dataType": "JSON"}
    if data is not None:
        if not isinstance(data, bytes | bytearray):
            raise UsageError(f"{what} must be bytes")
        return {"data": b64url_encode(bytes(data)), "dataType": "Binary"}
    return None


def _error(status: int, code: str, text: str) -> EnklaveError:
    return answer_error(status, code, text, _ERRORS_BY_CODE)


def _token(answer: Mapping[str, Any]) -> str:
    """The ``token`` member of a service answer (not verified); raises InvalidToken when it is missing."""
    token = answer.get("token")
    if not isinstance(token, str):
        raise InvalidToken("the service answered no token")
    return token


def _claims(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("the service answered a token that is not a compact JWS")
    return load_json_object(b64url_decode(parts[1], "the token claims"), "the token claims")


class AttestationClient(ServiceClient):
    """The REST API of an attestation service at ``base_url``.

    Give ``client`` (an ``httpx.Client`` you own) or ``transport`` (an ``httpx.BaseTransport``, e.g. an
    ``httpx.MockTransport`` in tests); otherwise the client makes its own with ``timeout`` seconds. Use it as a
    context manager, or call :meth:`close`, to release a client it made.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url, self._client, self._owned = open_http(base_url, client, transport, timeout)

    # -- HTTP --------------------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        versioned: bool = True,
    ) -> dict[str, Any]:
        return request_json(
            self._client,
            method,
            f"{self.base_url}{path}",
            path,
            limit=MAX_RESPONSE_SIZE,
            error=_error,
            params={"api-version": API_VERSION} if versioned else None,
            json_body=json_body,
            content=content,
            headers=headers,
        )

    # -- attestation -------------------------------------------------------------------------------------

    def _attest(
        self,
        kind: str,
        member: str,
        evidence: bytes,
        runtime_data: bytes | None,
        runtime_json: Mapping[str, Any] | None,
        init_time_data: bytes | None,
        init_time_json: Mapping[str, Any] | None,
        nonce: str | None,
        draft_policy: str | None,
    ) -> str:
        if not isinstance(evidence, bytes | bytearray) or not evidence:
            raise UsageError(f"{member} must be non-empty bytes")
        body: dict[str, Any] = {member: b64url_encode(bytes(evidence))}
        runtime = _data(runtime_data, runtime_json, "runtime data")
        if runtime is not None:
            body["runtimeData"] = runtime
        init_time = _data(init_time_data, init_time_json, "init-time data")
        if init_time is not None:
            body["initTimeData"] = init_time
        if nonce is not None:
            body["nonce"] = nonce
        if draft_policy is not None:
            body["draftPolicyForAttestation"] = draft_policy
        return _token(self._request("POST", f"/attest/{kind}", json_body=body))

    def attest_sgx(
        self,
        quote: bytes,
        *,
        runtime_data: bytes | None = None,
        runtime_json: Mapping[str, Any] | None = None,
        init_time_data: bytes | None = None,
        init_time_json: Mapping[str, Any] | None = None,
        nonce: str | None = None,
        draft_policy: str | None = None,
    ) -> str:
        """``POST /attest/SgxEnclave``: the token for ``quote`` (unverified; see the module docstring).

        ``runtime_data`` (bytes, sent as Binary) or ``runtime_json`` (an object, sent as JSON) is what the
        enclave bound: the SHA-256 of the bytes sent must be the first half of the quote's report data. An object
        is sent as compact UTF-8 JSON, keys in the order given (``json.dumps(obj, separators=(",", ":"))``), so
        the enclave hashes exactly that encoding. A ``draft_policy`` is evaluated instead of the stored one and
        the token is unsigned.
        """
        return self._attest(
            "SgxEnclave", "quote", quote, runtime_data, runtime_json, init_time_data, init_time_json, nonce,
            draft_policy,
        )  # fmt: skip

    def attest_open_enclave(
        self,
        report: bytes,
        *,
        runtime_data: bytes | None = None,
        runtime_json: Mapping[str, Any] | None = None,
        init_time_data: bytes | None = None,
        init_time_json: Mapping[str, Any] | None = None,
        nonce: str | None = None,
        draft_policy: str | None = None,
    ) -> str:
        """``POST /attest/OpenEnclave``: as :meth:`attest_sgx`, for an Open Enclave report or evidence."""
        return self._attest(
            "OpenEnclave", "report", report, runtime_data, runtime_json, init_time_data, init_time_json,
            nonce, draft_policy,
        )  # fmt: skip

    # -- metadata ----------------------------------------------------------------------------------------

    def openid_metadata(self) -> dict[str, Any]:
        """``GET /.well-known/openid-configuration``."""
        return self._request("GET", "/.well-known/openid-configuration", versioned=False)

    def signing_certificates(self) -> dict[str, list[x509.Certificate]]:
        """``GET /certs``: each key id with its certificate chain (leaf first), as the service publishes them.

        Raises :class:`BadDataError` when the JWKS is malformed. Whom to trust is the caller's decision.
        """
        jwks = self._request("GET", "/certs", versioned=False)
        keys = jwks.get("keys")
        if not isinstance(keys, list):
            raise BadDataError("the JWKS has no keys list")
        result: dict[str, list[x509.Certificate]] = {}
        for entry in keys:
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                raise BadDataError("a JWKS entry has no kid")
            chain = entry.get("x5c", [])
            if not isinstance(chain, list) or not all(isinstance(item, str) for item in chain):
                raise BadDataError("a JWKS entry has a malformed x5c")
            try:
                result[entry["kid"]] = [
                    x509.load_der_x509_certificate(base64.b64decode(item, validate=True)) for item in chain
                ]
            except DECODE_ERRORS as exc:
                raise BadDataError("a JWKS entry's x5c holds a malformed certificate") from exc
        return result

    # -- policies ----------------------------------------------------------------------------------------

    def get_policy(self, attestation_type: str) -> str:
        """``GET /policies/{type}``: the policy text.

        The answer token's signature is not checked here; a caller that must know the policy for sure checks
        ``x-ms-policy-hash`` in the attestation tokens it verifies.
        """
        token = _token(self._request("GET", f"/policies/{attestation_type}"))
        jws = _claims(token).get("x-ms-policy")
        if not isinstance(jws, str):
            raise InvalidToken("the policy answer has no x-ms-policy")
        return policy_text_from_jws(jws)

    def set_policy(self, attestation_type: str, policy: str, admin_token: str) -> str:
        """``PUT /policies/{type}``: store ``policy`` (text, sent as an unsigned policy JWS); returns the
        ``x-ms-policy-token-hash`` the service reports. Raises :class:`UsageError` when the token is refused."""
        answer = self._request(
            "PUT",
            f"/policies/{attestation_type}",
            content=unsigned_policy_jws(policy).encode("ascii"),
            headers={"authorization": f"Bearer {admin_token}", "content-type": "text/plain"},
        )
        return str(_claims(_token(answer)).get("x-ms-policy-token-hash", ""))

    def reset_policy(self, attestation_type: str, admin_token: str) -> None:
        """``POST /policies/{type}:reset``: back to the default policy."""
        self._request(
            "POST", f"/policies/{attestation_type}:reset", headers={"authorization": f"Bearer {admin_token}"}
        )
