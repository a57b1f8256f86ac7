"""What the services' HTTP clients share: their httpx client, a bounded JSON request, and error mapping.

:func:`open_http` checks the base URL and makes (or adopts) the ``httpx.Client``; :func:`request_json` sends a
request and reads a JSON object answer of bounded size; :func:`answer_error` maps an error answer onto enklave's
tree (each client keeps its own table of error codes where the services differ).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Self

import httpx

from enklave.attestation._jwks import load_json_object
from enklave.attestation._transport import check_http_url, printable
from enklave.errors import BadDataError, EnklaveError, TransportError, UsageError

__all__ = ["ErrorMapper", "ServiceClient", "answer_error", "open_http", "request_json"]

ErrorMapper = Callable[[int, str, str], EnklaveError]
"""Maps an error answer's HTTP status, its ``error.code`` and a printable description to the error to raise."""


class ServiceClient:
    """What the service clients share: an httpx client they made (closed with them) or were given (left open),
    and use as a context manager."""

    _client: httpx.Client
    _owned: bool

    def close(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._owned:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_http(
    base_url: str, client: httpx.Client | None, transport: httpx.BaseTransport | None, timeout: float
) -> tuple[str, httpx.Client, bool]:
    """The base URL without a trailing slash, the ``httpx.Client`` to use and whether the caller must close it.

    Raises :class:`~enklave.errors.UsageError` for a base URL that is not http(s), or for both ``client`` and
    ``transport``.
    """
    check_http_url(base_url, "base_url")
    if client is not None and transport is not None:
        raise UsageError("give client or transport, not both")
    if client is not None:
        return base_url.rstrip("/"), client, False
    return base_url.rstrip("/"), httpx.Client(transport=transport, timeout=timeout), True


def answer_error(
    status: int, code: str, text: str, by_code: Mapping[str, type[EnklaveError]] | None = None
) -> EnklaveError:
    """The usual mapping: a 5xx is a :class:`TransportError`, a 401/403 a :class:`UsageError` (a refused
    credential), any other answer the type ``by_code`` names for ``code``, else :class:`BadDataError`."""
    if status >= 500:
        return TransportError(text)
    if status in (401, 403):
        return UsageError(text)
    return (by_code or {}).get(code, BadDataError)(text)


def request_json(
    http: httpx.Client,
    method: str,
    url: str,
    path: str,
    *,
    limit: int,
    error: ErrorMapper,
    params: Mapping[str, str] | None = None,
    json_body: Mapping[str, Any] | None = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Send ``method`` to ``url`` (messages name it by ``path``) and return the JSON object answered.

    Raises :class:`~enklave.errors.TransportError` when the network fails, what ``error`` returns for an
    answer with status 400 or more, and :class:`~enklave.errors.BadDataError` for an answer larger than
    ``limit`` bytes or one that is not a JSON object.
    """
    try:
        with http.stream(
            method, url, params=params, json=json_body, content=content, headers=headers
        ) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise BadDataError(f"{method} {path}: the answer is larger than {limit} bytes")
            status = response.status_code
    except httpx.HTTPError as exc:
        raise TransportError(f"{method} {path} failed: {type(exc).__name__}") from exc
    document: dict[str, Any] | None
    try:
        document = load_json_object(bytes(body), "the answer")
    except BadDataError:
        document = None
    if status >= 400:
        problem = document.get("error") if document is not None else None
        code = str(problem.get("code", "")) if isinstance(problem, dict) else ""
        message = str(problem.get("message", "")) if isinstance(problem, dict) else ""
        raise error(status, code, f"{method} {path}: HTTP {status} {printable(code)}: {printable(message)}")
    if document is None:
        raise BadDataError(f"{method} {path}: the answer is not a JSON object")
    return document
