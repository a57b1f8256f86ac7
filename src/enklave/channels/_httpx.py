"""An ``httpx`` transport that speaks HTTPS to RA-TLS servers and appraises them before sending a request.

It is httpcore's connection pool with a network backend whose TLS step appraises the server's certificate with a
:class:`~enklave.channels.ratls.PeerVerifier` right after the handshake, before httpcore writes the request. A
refused server raises the enklave verification error itself (not an ``httpx.ConnectError``), so callers can tell
an attacker from a network failure; transport failures become the ``httpx`` exceptions ``httpx`` itself raises.
Re-exported by :mod:`enklave.channels.tls`.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable, Iterator
from typing import Any, Final

import httpcore
import httpx

from enklave.channels._tls_context import client_context
from enklave.channels.ratls import AttestedCertificate, PeerVerifier, VerifiedPeer
from enklave.errors import ChannelError, UsageError

__all__ = ["PEER_EXTENSION", "AttestedTransport"]

#: The response extension (and network stream extra info) holding the appraised :class:`VerifiedPeer`.
PEER_EXTENSION: Final = "enklave.peer"

# The most specific httpx type for each httpcore type, as httpx's own transport maps them.
_EXCEPTIONS: Final[tuple[tuple[type[Exception], type[httpx.HTTPError]], ...]] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _map_httpcore_exceptions() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for source, target in _EXCEPTIONS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class _Wrapped(httpcore.NetworkStream):
    """A stream that passes reads, writes, closing and extra info through to the stream it wraps."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _VerifiedStream(_Wrapped):
    """A TLS stream whose server was appraised; reports the peer as extra info ``"enklave.peer"``."""

    def __init__(self, stream: httpcore.NetworkStream, peer: VerifiedPeer) -> None:
        super().__init__(stream)
        self._peer = peer

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.UnsupportedProtocol("TLS inside an RA-TLS connection is not supported")

    def get_extra_info(self, info: str) -> Any:
        if info == PEER_EXTENSION:
            return self._peer
        return super().get_extra_info(info)


class _AttestingStream(_Wrapped):
    """A TCP stream whose TLS upgrade appraises the server before returning."""

    def __init__(self, stream: httpcore.NetworkStream, verifier: PeerVerifier, nonce: bytes | None) -> None:
        super().__init__(stream)
        self._verifier = verifier
        self._nonce = nonce

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        # 1. The handshake (httpcore's own: it closes the socket and raises ConnectError when it fails).
        tls = self._stream.start_tls(ssl_context, server_hostname, timeout)
        try:
            # 2. The certificate the handshake authenticated, then 3. its appraisal, before any request byte.
            # httpcore reports ssl's internal object here, whose getpeercert takes its flag positionally only.
            ssl_object = tls.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(True) if ssl_object is not None else None
            if not isinstance(der, bytes):
                raise ChannelError("the server presented no certificate")
            peer = self._verifier.verify(der, nonce=self._nonce)
        except BaseException:
            tls.close()
            raise
        return _VerifiedStream(tls, peer)


class _AttestingBackend(httpcore.NetworkBackend):
    def __init__(self, verifier: PeerVerifier, nonce: bytes | None) -> None:
        self._backend = httpcore.SyncBackend()
        self._verifier = verifier
        self._nonce = nonce

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _AttestingStream(stream, self._verifier, self._nonce)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.UnsupportedProtocol("RA-TLS connections go over TCP")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _map_httpcore_exceptions():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class AttestedTransport(httpx.BaseTransport):
    """``httpx.Client(transport=AttestedTransport(verifier))``: HTTPS (HTTP/1.1) to RA-TLS servers only.

    Every new connection makes a TLS 1.3 handshake (presenting ``certificate`` if the server asks: mutual
    RA-TLS), then ``verifier.verify(server certificate, nonce=nonce)``; only an accepted server gets the request.
    Pooled connections keep the peer they were appraised with. Each response carries it as
    ``response.extensions["enklave.peer"]`` (a :class:`VerifiedPeer`). ``limits`` bounds the pool as in httpx.

    ``handle_request`` raises :class:`UsageError` for a URL that is not ``https`` (plain HTTP has nothing to
    appraise), the enklave verification error when the server is refused (:class:`~enklave.errors.PolicyError`,
    :class:`~enklave.errors.BindingError`, ...), and the usual ``httpx`` exceptions for network failures.
    """

    def __init__(
        self,
        verifier: PeerVerifier,
        *,
        certificate: AttestedCertificate | None = None,
        nonce: bytes | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        if not isinstance(verifier, PeerVerifier):
            raise UsageError("verifier must be a PeerVerifier")
        limits = (
            limits if limits is not None else httpx.Limits(max_connections=100, max_keepalive_connections=20)
        )
        self._pool = httpcore.ConnectionPool(
            ssl_context=client_context(certificate=certificate),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=_AttestingBackend(verifier, nonce),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` over an appraised connection; see the class for what it raises."""
        if request.url.scheme != "https":
            raise UsageError(f"an attested transport sends https requests only, not {request.url.scheme!r}")
        if not isinstance(request.stream, httpx.SyncByteStream):
            raise UsageError("an attested transport needs a synchronous request body")
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _map_httpcore_exceptions():
            response = self._pool.handle_request(core_request)
        stream = response.extensions.get("network_stream")
        peer = stream.get_extra_info(PEER_EXTENSION) if stream is not None else None
        if not isinstance(peer, VerifiedPeer):
            # Every https connection of this pool went through the appraisal; anything else is a bug to stop on.
            response.close()
            raise ChannelError("the response came over a connection that was not appraised")
        if not isinstance(response.stream, Iterable):
            raise ChannelError("httpcore returned an asynchronous response stream")
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions={**response.extensions, PEER_EXTENSION: peer},
        )

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()
