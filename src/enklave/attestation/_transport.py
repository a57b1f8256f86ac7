"""A tiny HTTP transport for collateral sources, with an in-memory fake (private; see :mod:`.sources`).

:class:`Transport` has one method, ``get``. :class:`HttpxTransport` does real HTTP with a bounded body size;
:class:`MockTransport` answers from memory, so tests never need the internet. No answer at all (network error,
timeout) raises :class:`~enklave.errors.CollateralUnavailable`; an oversized body raises
:class:`~enklave.errors.InvalidCollateral`. Messages never carry the credentials a URL may hold.
"""

from __future__ import annotations

import abc
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from enklave.errors import CollateralUnavailable, InvalidCollateral, UsageError

MAX_RESPONSE_SIZE = 1 << 20
"""Largest HTTP response body :class:`HttpxTransport` reads, in bytes."""

__all__ = ["MAX_RESPONSE_SIZE", "HttpResponse", "HttpxTransport", "MockTransport", "Transport"]

_MAX_ERROR_TEXT = 200


def check_http_url(url: object, what: str) -> str:
    """``url`` when it is a well-formed http(s) URL with a host; :class:`UsageError` (naming ``what``) otherwise.

    Checked where a URL is given, with the parser the requests will use, so that a malformed host or port is a
    clear error there instead of an exception from the HTTP library at the first request.
    """
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        try:
            if httpx.URL(url).host:
                return url
        except httpx.InvalidURL:
            pass
    shown = redact(url) if isinstance(url, str) else type(url).__name__
    raise UsageError(f"{what} must be an http(s) URL, not {shown!r}")


def redact(url: str) -> str:
    """``url`` without user:password, so that messages never carry credentials."""
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
    except ValueError:
        # An unparsable URL (e.g. a bad port) might still hold credentials: do not echo it.
        return "<unparsable URL>"
    return urlunsplit(parts._replace(netloc=netloc))


def printable(text: str) -> str:
    # Error headers come from the remote side; keep messages short and free of control characters.
    return "".join(c if c.isprintable() else "?" for c in text[:_MAX_ERROR_TEXT])


class _Headers(Mapping[str, str]):
    """Read-only header mapping with case-insensitive lookups (HTTP header names are case-insensitive)."""

    __slots__ = ("_items",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._items = {name.lower(): (name, value) for name, value in headers.items()}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"_Headers({dict(self.items())!r})"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An HTTP answer: status, headers (looked up case-insensitively) and the whole body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.headers, _Headers):
            object.__setattr__(self, "headers", _Headers(self.headers))


class Transport(abc.ABC):
    """The one HTTP operation collateral sources need. Usable as a context manager that closes it."""

    @abc.abstractmethod
    def get(self, url: str, *, params: Mapping[str, str] | None = None) -> HttpResponse:
        """GET ``url`` with query ``params`` and return the answer, whatever its status.

        Raises :class:`CollateralUnavailable` when no answer came (network error, timeout) and
        :class:`InvalidCollateral` when the body is larger than the transport accepts.
        """

    def close(self) -> None:  # noqa: B027 (a transport without resources has nothing to close)
        """Release the transport's resources."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class HttpxTransport(Transport):
    """:class:`Transport` over an ``httpx.Client``; reads at most ``max_body_size`` bytes of each body.

    A client passed in stays the caller's (``close`` leaves it open); otherwise one is made with ``timeout``
    (seconds) and ``verify`` (TLS verification, or an ``ssl.SSLContext``), and redirects are not followed.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        verify: bool | ssl.SSLContext = True,
        client: httpx.Client | None = None,
        max_body_size: int = MAX_RESPONSE_SIZE,
    ) -> None:
        if max_body_size < 1 or timeout <= 0:
            raise UsageError("max_body_size and timeout must be positive")
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout, verify=verify)
        self._max_body_size = max_body_size

    def get(self, url: str, *, params: Mapping[str, str] | None = None) -> HttpResponse:
        try:
            with self._client.stream("GET", url, params=dict(params or {})) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self._max_body_size:
                    raise self._too_large(url)
                body = bytearray()
                # Read in chunks and give up at the limit, so that an endless answer costs bounded memory.
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self._max_body_size:
                        raise self._too_large(url)
                return HttpResponse(response.status_code, dict(response.headers.items()), bytes(body))
        except httpx.InvalidURL as exc:
            raise UsageError(f"invalid URL {redact(url)!r}: {exc}") from exc
        except httpx.HTTPError as exc:
            reason = printable(str(exc)) or type(exc).__name__
            raise CollateralUnavailable(f"GET {redact(url)} failed: {reason}") from exc

    def _too_large(self, url: str) -> InvalidCollateral:
        return InvalidCollateral(f"the answer from {redact(url)} is larger than {self._max_body_size} bytes")

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


_Handler = Callable[[str, Mapping[str, str]], HttpResponse]


class MockTransport(Transport):
    """In-memory :class:`Transport` for tests: no network, ever.

    ``routes`` maps a URL (with its query string, as ``urlencode(params)`` writes it, or without one) to a
    response, and unknown URLs answer 404; or it is a function ``(url, params) -> HttpResponse``, which may
    also raise. ``requests`` records every call as ``(url, params)``.
    """

    def __init__(self, routes: Mapping[str, HttpResponse] | _Handler) -> None:
        self._routes = routes
        self._lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str]]] = []

    def get(self, url: str, *, params: Mapping[str, str] | None = None) -> HttpResponse:
        query = dict(params or {})
        with self._lock:
            self.requests.append((url, query))
        if not isinstance(self._routes, Mapping):
            return self._routes(url, query)
        full_url = f"{url}?{urlencode(query)}" if query else url
        response = self._routes.get(full_url) or self._routes.get(url)
        return response if response is not None else HttpResponse(404, {}, b"")
