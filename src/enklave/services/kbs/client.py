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
from typing import Any

import httpx

from enklave.attestation._jwks import b64url_encode, load_json_object
from enklave.attestation._transport import printable
from enklave.errors import BadDataError, EnklaveError, PolicyError, TransportError, UsageError
from enklave.services.kbs.keys import POLICY_CONTENT_TYPE
from enklave.services.kbs.service import API_VERSION

__all__ = ["MAX_RESPONSE_SIZE", "KbsClient"]

MAX_RESPONSE_SIZE = 4 << 20
"""The largest answer the client reads."""
_COMPACT_JWE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class KbsClient:
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
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise UsageError("base_url must be an http(s) URL")
        if client is not None and transport is not None:
            raise UsageError("give client or transport, not both")
        self.base_url = base_url.rstrip("/")
        self._admin_token = admin_token
        self._owned = client is None
        self._client = client if client is not None else httpx.Client(transport=transport, timeout=timeout)

    def __repr__(self) -> str:
        # The admin token stays out of reprs and logs.
        return f"KbsClient({self.base_url!r})"

    def close(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._owned:
            self._client.close()

    def __enter__(self) -> KbsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
        try:
            with self._client.stream(
                method,
                f"{self.base_url}{path}",
                params={"api-version": API_VERSION, **(query or {})},
                json=json_body,
                headers=headers,
            ) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_SIZE:
                        raise BadDataError(
                            f"{method} {path}: the answer is larger than {MAX_RESPONSE_SIZE} bytes"
                        )
                status = response.status_code
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {path} failed: {type(exc).__name__}") from exc
        document: dict[str, Any] | None
        try:
            document = load_json_object(bytes(body), "the answer")
        except BadDataError:
            document = None
        if status >= 400:
            raise _error(method, path, status, document, release=not admin)
        if document is None:
            raise BadDataError(f"{method} {path}: the answer is not a JSON object")
        return document

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
        """Release a key: returns the compact JWE that wraps it to the key in the token's runtime claims."""
        body: dict[str, Any] = {"target": token}
        if nonce is not None:
            body["nonce"] = nonce
        value = self._request("POST", f"/keys/{name}/release", json_body=body, admin=False).get("value")
        if not isinstance(value, str) or not _COMPACT_JWE.fullmatch(value):
            raise BadDataError("the release answer holds no compact JWE")
        return value


def _policy_data(policy: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(dict(policy), separators=(",", ":")).encode("utf-8"))


def _error(
    method: str, path: str, status: int, document: dict[str, Any] | None, *, release: bool
) -> EnklaveError:
    error = document.get("error") if document is not None else None
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    text = f"{method} {path}: HTTP {status} {printable(code)}: {printable(message)}"
    if status >= 500:
        return TransportError(text)
    if release and status == 403:
        return PolicyError(text, field=code)
    if status in (401, 403):
        return UsageError(text)
    return BadDataError(text)
