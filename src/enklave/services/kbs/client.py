"""A client for enklave's key broker service (``enklave kbs``): key management and secure key release.

:class:`KbsClient` speaks the KBS's REST API (Azure Key Vault's shape, ``api-version=7.4``). Errors: the
network failing or the service answering 5xx raises :class:`~enklave.errors.TransportError`; a refused
release (403) raises :class:`~enklave.errors.PolicyError`; a missing or wrong admin token (401/403 on
management) raises :class:`~enklave.errors.UsageError`; other 4xx answers and malformed answers raise
:class:`~enklave.errors.BadDataError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from enklave import _b64url
from enklave.attestation._jwks import b64url_encode
from enklave.errors import BadDataError, EnklaveError, PolicyError
from enklave.services._client import ServiceClient, answer_error, open_http, request_json
from enklave.services.kbs.keys import POLICY_CONTENT_TYPE
from enklave.services.kbs.service import API_VERSION

__all__ = ["MAX_QUOTE_SIZE", "MAX_RESPONSE_SIZE", "KbsClient", "Release"]

MAX_RESPONSE_SIZE = 4 << 20
"""The largest answer the client reads."""
MAX_QUOTE_SIZE = 64 << 10
"""The largest release quote the client takes."""
_COMPACT_JWE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_HPKE_RELEASE = re.compile(r"hpke\.[A-Za-z0-9_-]{100,131072}")


@dataclass(frozen=True, slots=True)
class Release:
    """A release answer with its evidence: ``value`` is the key wrapped to the token's runtime key, ``quote`` the
    key broker enclave's raw quote over
    :func:`~enklave.services.kbs.release_evidence.release_report_data` of the key name, that runtime key and
    ``value``. Nothing here is verified: the recipient verifies the quote (and its binding) itself."""

    value: str
    quote: bytes


class KbsClient(ServiceClient):
    """Talks to a key broker at ``base_url``; ``admin_token`` is the bearer token for key management.

    Pass ``client`` (an ``httpx.Client``, which stays the caller's) or ``transport``; otherwise one is made with
    ``timeout``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        admin_token: str | None = None,
        client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url, self._client, self._owned = open_http(base_url, client, transport, timeout)
        self._admin_token = admin_token

    def __repr__(self) -> str:
        # The admin token stays out of reprs and logs.
        return f"KbsClient({self.base_url!r})"

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        admin: bool = True,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        headers = {}
        if admin and self._admin_token is not None:
            headers["Authorization"] = f"Bearer {self._admin_token}"
        return request_json(
            self._client,
            method,
            f"{self.base_url}{path}",
            path,
            limit=MAX_RESPONSE_SIZE,
            error=_release_error if not admin else answer_error,
            params={"api-version": API_VERSION, **(query or {})},
            json_body=json_body,
            headers=headers,
        )

    def create_key(
        self,
        name: str,
        kty: str,
        release_policy: Mapping[str, Any],
        *,
        key_size: int | None = None,
        crv: str | None = None,
    ) -> dict[str, Any]:
        """Create a key in the broker's enclave; returns its view (metadata, public key, policy)."""
        body: dict[str, Any] = {
            "kty": kty,
            "attributes": {"exportable": True},
            "release_policy": {"contentType": POLICY_CONTENT_TYPE, "data": _policy_data(release_policy)},
        }
        if key_size is not None:
            body["key_size"] = key_size
        if crv is not None:
            body["crv"] = crv
        return self._request("POST", f"/keys/{name}/create", json_body=body)

    def list_keys(self) -> list[dict[str, Any]]:
        """The views of every key."""
        value = self._request("GET", "/keys").get("value")
        if not isinstance(value, list):
            raise BadDataError("the key list answer has no value list")
        return value

    def get_key(self, name: str) -> dict[str, Any]:
        """One key's view."""
        return self._request("GET", f"/keys/{name}")

    def delete_key(self, name: str) -> dict[str, Any]:
        """Delete a key; returns the view it had."""
        return self._request("DELETE", f"/keys/{name}")

    def set_release_policy(self, name: str, release_policy: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a key's release policy; returns its new view."""
        body = {"release_policy": {"contentType": POLICY_CONTENT_TYPE, "data": _policy_data(release_policy)}}
        return self._request("PATCH", f"/keys/{name}", json_body=body)

    def audit_log(self, *, after: int = 0) -> list[dict[str, Any]]:
        """Audit records after sequence number ``after``."""
        value = self._request("GET", "/audit", query={"after": str(int(after))}).get("value")
        if not isinstance(value, list):
            raise BadDataError("the audit answer has no value list")
        return value

    def release(self, name: str, token: str, *, nonce: str | None = None) -> str:
        """Release a key: returns it wrapped to the key in the token's runtime claims (a compact JWE for an RSA
        key, ``hpke.<base64url>`` for a P-256 key; open it with :func:`~enklave.services.kbs.unwrap_released_key`)."""
        return self._release(name, token, nonce)[0]

    def release_with_evidence(self, name: str, token: str, *, nonce: str | None = None) -> Release:
        """Release a key as :meth:`release` does, with the key broker enclave's quote for the release; raises
        :class:`~enklave.errors.BadDataError` when the answer holds no quote (a key broker older than release
        evidence, or a host that dropped it)."""
        value, quote = self._release(name, token, nonce)
        if not isinstance(quote, str) or not 0 < len(quote) <= (MAX_QUOTE_SIZE * 4 + 2) // 3:
            raise BadDataError("the release answer holds no quote of the key broker's enclave")
        try:
            raw = _b64url.decode(quote)
        except ValueError as exc:
            raise BadDataError("the release answer's quote is not base64url") from exc
        return Release(value, raw)

    def _release(self, name: str, token: str, nonce: str | None) -> tuple[str, object]:
        body: dict[str, Any] = {"target": token}
        if nonce is not None:
            body["nonce"] = nonce
        answer = self._request("POST", f"/keys/{name}/release", json_body=body, admin=False)
        value = answer.get("value")
        if not isinstance(value, str) or not (
            _COMPACT_JWE.fullmatch(value) or _HPKE_RELEASE.fullmatch(value)
        ):
            raise BadDataError("the release answer holds no compact JWE or HPKE envelope")
        return value, answer.get("quote")


def _policy_data(policy: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(dict(policy), separators=(",", ":")).encode("utf-8"))


def _release_error(status: int, code: str, text: str) -> EnklaveError:
    # A release is refused with 403 when the token or the key's policy does not allow it: a policy decision.
    if status == 403:
        return PolicyError(text, field=code)
    return answer_error(status, code, text)
