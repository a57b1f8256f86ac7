"""HTTP/1.1 on a TLS session inside the enclave: whole, bounded requests in, one response each out.

:class:`HttpSession` is the per-connection handler that :class:`~enklave.channels.relay.TlsSessions` runs behind
the TLS engine when the application is an :data:`HttpApp`. It parses with h11, which does no I/O and enforces
HTTP/1.1 framing (Content-Length and chunked bodies, keep-alive, pipelining, ``Expect: 100-continue``); this
module only adds the limits and the translation to and from the application's plain function. The plaintext never
leaves the enclave: the engine encrypts what this returns before anything reaches the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final, Protocol

import h11

from enklave.errors import UsageError

__all__ = ["HttpApp", "HttpLimits", "HttpSession"]


class HttpApp(Protocol):
    """The application: ``handle(method, target, headers, body) -> (status, headers, body)``.

    Header names arrive lower-cased; header values are decoded as Latin-1, as HTTP defines them.
    """

    def __call__(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, /
    ) -> tuple[int, Sequence[tuple[str, str]], bytes]: ...


# Framing is h11's business; an application header must not contradict the framing h11 writes.
_FRAMING_HEADERS: Final = frozenset({"content-length", "transfer-encoding"})
_NO_BODY_STATUSES: Final = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Bounds on what one client can make the enclave hold or do.

    ``max_head``: bytes of request line plus headers (over it: 431); ``max_body``: bytes of one request body,
    declared or chunked (over it: 413); ``max_pipelined``: requests answered from one batch of records before the
    connection is closed (a client that pipelines more retries the rest on a new connection, as HTTP allows).
    Raises :class:`UsageError` for a limit that is not positive.
    """

    max_head: int = 16 * 1024
    max_body: int = 1 << 20
    max_pipelined: int = 16

    def __post_init__(self) -> None:
        for name in ("max_head", "max_body", "max_pipelined"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise UsageError(f"HttpLimits.{name} must be a positive int, got {value!r}")


class HttpSession:
    """One HTTP/1.1 connection: :meth:`received` takes plaintext and returns the plaintext to send back.

    Each complete request calls the application once; an application exception becomes a bare 500 (its message
    may hold secrets, so none of it is sent). Malformed requests get h11's 4xx and the connection closes; so do
    requests over the limits. Once :attr:`closed` is true the session wants no more data.
    """

    def __init__(self, app: HttpApp, limits: HttpLimits | None = None) -> None:
        self._app = app
        self._limits = limits if limits is not None else HttpLimits()
        self._connection = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.max_head)
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once the connection must end (the client or the server asked to close, or an error)."""
        return self._closed

    def received(self, data: bytes) -> bytes:
        """Parse ``data``, run the application for every request it completes, and return the responses."""
        if self._closed:
            return b""
        out: list[bytes] = []
        self._connection.receive_data(data)
        answered = 0
        while not self._closed:
            try:
                event = self._connection.next_event()
            except h11.RemoteProtocolError as exc:
                out.append(self._refuse(exc.error_status_hint))
                break
            if event is h11.NEED_DATA:
                if self._connection.they_are_waiting_for_100_continue:
                    out.append(
                        self._send(
                            h11.InformationalResponse(status_code=100, headers=[], reason=_reason(100))
                        )
                    )
                break
            if event is h11.PAUSED:
                # h11 pauses after a request it has not seen answered; answered requests restart the cycle,
                # so this only happens when the client keeps talking after asking to close.
                self._closed = True
                break
            if isinstance(event, h11.Request):
                out.append(self._start(event))
            elif isinstance(event, h11.Data):
                if len(self._body) + len(event.data) > self._limits.max_body:
                    out.append(self._refuse(413))
                else:
                    self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                out.append(self._respond())
                answered += 1
                self._next_cycle(answered)
            elif isinstance(event, h11.ConnectionClosed):
                self._closed = True
        return b"".join(out)

    def _start(self, request: h11.Request) -> bytes:
        self._request = request
        self._body = bytearray()
        # h11 bounds a head that arrives in pieces; one that arrives whole is measured here (request line and
        # header lines with their separators).
        head = len(request.method) + len(request.target) + 12
        head += sum(len(name) + len(value) + 4 for name, value in request.headers)
        if head > self._limits.max_head:
            return self._refuse(431)
        for name, value in request.headers:
            # h11 has already checked that Content-Length is one well-formed decimal number.
            if name == b"content-length" and int(value) > self._limits.max_body:
                return self._refuse(413)
        return b""

    def _respond(self) -> bytes:
        request = self._request
        if request is None:  # pragma: no cover - h11 never ends a message it did not start.
            return self._refuse(500)
        body = bytes(self._body)
        self._request, self._body = None, bytearray()
        method = request.method.decode("ascii")
        target = request.target.decode("ascii")
        headers = [(name.decode("ascii"), value.decode("latin-1")) for name, value in request.headers]
        try:
            status, reply_headers, reply = self._app(method, target, headers, body)
            return self._send_response(method, status, reply_headers, reply)
        except Exception:
            # Any application failure is one opaque 500: its message may quote secrets.
            return self._refuse(500)

    def _send_response(
        self, method: str, status: int, headers: Sequence[tuple[str, str]], body: bytes
    ) -> bytes:
        if type(status) is not int or not 200 <= status <= 599 or not isinstance(body, bytes):
            raise UsageError("the HTTP application must return (status 200..599, headers, bytes)")
        fields = [
            (str(name), str(value)) for name, value in headers if str(name).lower() not in _FRAMING_HEADERS
        ]
        if status not in _NO_BODY_STATUSES:
            fields.append(("content-length", str(len(body))))
        elif body:
            raise UsageError(f"a {status} response has no body")
        head = self._send(h11.Response(status_code=status, headers=fields, reason=_reason(status)))
        # A response to HEAD announces the length of the body it does not carry.
        data = self._send(h11.Data(data=body)) if body and method != "HEAD" else b""
        return head + data + self._send(h11.EndOfMessage())

    def _next_cycle(self, answered: int) -> None:
        if self._connection.our_state is h11.MUST_CLOSE or answered >= self._limits.max_pipelined:
            self._closed = True
        elif self._connection.our_state is h11.DONE and self._connection.their_state is h11.DONE:
            self._connection.start_next_cycle()
        else:
            # The request ended before its response was complete, or the reverse: nothing sane can follow.
            self._closed = True

    def _refuse(self, status: int) -> bytes:
        """An error response that closes the connection, when the state still allows one."""
        self._closed = True
        if self._connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return b""
        headers = [("content-length", "0"), ("connection", "close")]
        try:
            return self._send(
                h11.Response(status_code=status, headers=headers, reason=_reason(status))
            ) + self._send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return b""

    def _send(self, event: h11.Event) -> bytes:
        data = self._connection.send(event)
        return data if data is not None else b""


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""
