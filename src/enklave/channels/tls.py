"""RA-TLS over sockets: contexts for servers and clients, attested connections, mutual RA-TLS, httpx.

The rule every function here keeps: the verifying side appraises the peer's RA-TLS certificate (with a
:class:`~enklave.channels.ratls.PeerVerifier`) once the TLS handshake is done and BEFORE any application data is
sent or read. A failed check closes the socket and raises the typed error of :mod:`enklave.errors`: a
:class:`~enklave.errors.VerificationError` subclass when the peer is not the enclave the policy asks for
(:class:`~enklave.errors.PolicyError`, :class:`~enklave.errors.BindingError`, ...), a
:class:`~enklave.errors.BadDataError` when its certificate carries no usable evidence, and
:class:`~enklave.errors.ChannelError` when TCP or TLS fail below attestation.

- :func:`server_context` / :func:`client_context`: TLS 1.3-only :class:`ssl.SSLContext` objects for RA-TLS.
- :func:`connect` / :func:`wrap_client`: the client side, on :mod:`ssl`, optionally presenting a certificate.
- :func:`accept`: the server side, on :class:`~enklave.channels.engine.TlsEngine`, which (unlike :mod:`ssl`) can
  require and appraise a self-signed client certificate: mutual RA-TLS for enclave-to-enclave links.
- :class:`AttestedTransport`: an ``httpx`` transport that appraises the server before writing a request.
"""

from __future__ import annotations

import functools
import socket
import ssl
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Final, Protocol

from enklave.channels._httpx import AttestedTransport
from enklave.channels._tls_context import client_context, server_context
from enklave.channels.engine import READ_CHUNK, EngineState, TlsEngine
from enklave.channels.ratls import AttestedCertificate, PeerVerifier, VerifiedPeer
from enklave.errors import ChannelError, EnklaveError, UsageError

__all__ = [
    "DEFAULT_TIMEOUT",
    "AttestedConnection",
    "AttestedTransport",
    "accept",
    "client_context",
    "connect",
    "server_context",
    "wrap_client",
]

#: Seconds allowed for connecting and for each socket operation (and, in :func:`accept`, the whole handshake).
DEFAULT_TIMEOUT: Final = 10.0


def _os_reason(exc: OSError) -> str:
    """What went wrong, without echoing data: the OS reason, or OpenSSL's for a TLS error."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or type(exc).__name__


class _Channel(Protocol):
    def sendall(self, data: bytes) -> None: ...

    def recv(self, max_bytes: int) -> bytes: ...

    def settimeout(self, timeout: float | None) -> None: ...

    def close(self) -> None: ...


class _SslChannel:
    """Application data over an :class:`ssl.SSLSocket` whose peer was already appraised."""

    __slots__ = ("_sock",)

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock

    def sendall(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise ChannelError(f"sending on the TLS connection failed: {_os_reason(exc)}") from exc

    def recv(self, max_bytes: int) -> bytes:
        try:
            return self._sock.recv(max_bytes)
        except OSError as exc:
            raise ChannelError(f"receiving on the TLS connection failed: {_os_reason(exc)}") from exc

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def close(self) -> None:
        self._sock.close()


class _EngineChannel:
    """Application data through a :class:`TlsEngine` whose records travel over a plain socket."""

    __slots__ = ("_engine", "_eof", "_sock")

    def __init__(self, sock: socket.socket, engine: TlsEngine) -> None:
        self._sock = sock
        self._engine = engine
        self._eof = False

    def _flush(self) -> None:
        records = self._engine.pending_records()
        if records:
            try:
                self._sock.sendall(records)
            except OSError as exc:
                raise ChannelError(f"sending TLS records failed: {_os_reason(exc)}") from exc

    def sendall(self, data: bytes) -> None:
        self._engine.write(data)
        self._flush()

    def recv(self, max_bytes: int) -> bytes:
        while True:
            data = self._engine.read(max_bytes)
            # Post-handshake messages (a key update, a close_notify) may need an answer.
            self._flush()
            if data or self._eof or self._engine.state is EngineState.CLOSED:
                return data
            try:
                records = self._sock.recv(READ_CHUNK)
            except OSError as exc:
                raise ChannelError(f"receiving TLS records failed: {_os_reason(exc)}") from exc
            if not records:
                # The peer closed TCP without close_notify; like ssl's ragged EOF, that reads as the end.
                self._eof = True
                return b""
            self._engine.receive_records(records)

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def close(self) -> None:
        try:
            self._engine.close()
            self._sock.sendall(self._engine.pending_records())
        except (OSError, EnklaveError):
            pass  # The close_notify is a courtesy; the socket closes either way.
        finally:
            self._sock.close()


class AttestedConnection:
    """A TLS 1.3 connection whose peer was appraised before any application data moved.

    Built by :func:`connect`, :func:`wrap_client` and :func:`accept`, never directly. Use it like a socket
    (:meth:`sendall`, :meth:`recv`, :meth:`close`, ``with``); I/O failures raise :class:`ChannelError`. Not
    thread-safe: one caller at a time.
    """

    __slots__ = ("_channel", "_closed", "_peer")

    def __init__(self, channel: _Channel, peer: VerifiedPeer | None) -> None:
        self._channel = channel
        self._peer = peer
        self._closed = False

    @property
    def attested(self) -> bool:
        """True when the peer was appraised: always on the client side, on the server side with a verifier."""
        return self._peer is not None

    @property
    def peer(self) -> VerifiedPeer:
        """The appraised peer: its verified quote (MRENCLAVE, MRSIGNER, TCB status...), key and certificate.

        Raises :class:`UsageError` on a server-side connection accepted without a verifier (no client
        certificate was asked for, so there is no peer to report).
        """
        if self._peer is None:
            raise UsageError("this connection was accepted without a verifier: the client is not attested")
        return self._peer

    def sendall(self, data: bytes) -> None:
        """Send all of ``data``; raises :class:`ChannelError` when the connection fails or is closed."""
        if self._closed:
            raise ChannelError("the connection is closed")
        self._channel.sendall(bytes(data))

    def recv(self, max_bytes: int = READ_CHUNK) -> bytes:
        """Up to ``max_bytes`` of data, waiting for some; ``b""`` when the peer closed the connection.

        Raises :class:`ChannelError` for a timeout, a broken record or a reset, :class:`UsageError` for a
        non-positive ``max_bytes``.
        """
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise UsageError("max_bytes must be a positive int")
        if self._closed:
            raise ChannelError("the connection is closed")
        return self._channel.recv(max_bytes)

    def settimeout(self, timeout: float | None) -> None:
        """Seconds each later :meth:`recv` / :meth:`sendall` may block (``None``: forever)."""
        self._channel.settimeout(timeout)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    def __enter__(self) -> AttestedConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        peer = self._peer.mr_enclave.hex() if self._peer is not None else None
        return f"AttestedConnection(peer_mr_enclave={peer}, closed={self._closed})"


def _check_timeout(timeout: float) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise UsageError("timeout must be a positive number of seconds")


def _check_verifier(verifier: PeerVerifier | None, *, optional: bool = False) -> None:
    if verifier is None and optional:
        return
    if not isinstance(verifier, PeerVerifier):
        raise UsageError("verifier must be a PeerVerifier")


def connect(
    address: tuple[str, int],
    verifier: PeerVerifier,
    *,
    certificate: AttestedCertificate | None = None,
    nonce: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    server_hostname: str | None = None,
    alpn: Sequence[str] = (),
) -> AttestedConnection:
    """Connect to an RA-TLS server at ``address`` and appraise it before returning; see :func:`wrap_client`.

    Raises :class:`ChannelError` when the TCP connection fails, and what :func:`wrap_client` raises.
    """
    _check_verifier(verifier)
    _check_timeout(timeout)
    try:
        sock = socket.create_connection(address, timeout=timeout)
    except OSError as exc:
        raise ChannelError(f"could not connect to {address[0]}:{address[1]}: {_os_reason(exc)}") from exc
    return wrap_client(
        sock,
        verifier,
        certificate=certificate,
        nonce=nonce,
        timeout=timeout,
        server_hostname=server_hostname,
        alpn=alpn,
    )


def wrap_client(
    sock: socket.socket,
    verifier: PeerVerifier,
    *,
    certificate: AttestedCertificate | None = None,
    nonce: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    server_hostname: str | None = None,
    alpn: Sequence[str] = (),
) -> AttestedConnection:
    """Run the TLS 1.3 client handshake on the connected ``sock``, then appraise the server; takes ``sock`` over.

    Steps: (1) handshake (presenting ``certificate`` if the server asks: mutual RA-TLS); (2) take the server's
    certificate, whose key the handshake proved the server holds; (3) ``verifier.verify(certificate, nonce=nonce)``.
    Only then is the connection returned, so no application data was sent or read before the appraisal. With
    mutual RA-TLS the server appraises the client after the client finished its handshake: a client it refuses
    sees the connection closed (``recv`` returns ``b""`` or raises :class:`ChannelError`). ``timeout`` applies to
    each socket operation, during the handshake and afterwards.

    On any failure ``sock`` is closed. Raises :class:`ChannelError` when the handshake or the socket fails, and
    what :meth:`PeerVerifier.verify` raises when the appraisal fails (:class:`~enklave.errors.PolicyError`,
    :class:`~enklave.errors.BindingError`, :class:`~enklave.errors.InvalidQuote`, ...).
    """
    try:
        _check_verifier(verifier)
        _check_timeout(timeout)
        context = (
            client_context(certificate=certificate, alpn=alpn)
            if certificate
            else _shared_context(tuple(alpn))
        )
        sock.settimeout(timeout)
        _no_delay(sock)
    except BaseException:
        sock.close()
        raise
    # 1. The handshake; wrap_socket takes the file descriptor over and closes it if the handshake fails.
    try:
        tls = context.wrap_socket(sock, server_hostname=server_hostname)
    except OSError as exc:
        sock.close()
        raise ChannelError(f"the TLS handshake failed: {_os_reason(exc)}") from exc
    try:
        # 2. The certificate the handshake authenticated (TLS 1.3 always sends one in a full handshake).
        certificate_der = tls.getpeercert(binary_form=True)
        if certificate_der is None:
            raise ChannelError("the server presented no certificate")
        # 3. Appraisal, before anything else crosses the connection.
        peer = verifier.verify(certificate_der, nonce=nonce)
    except BaseException:
        tls.close()
        raise
    return AttestedConnection(_SslChannel(tls), peer)


# Building an SSLContext costs about as much as appraising a cached quote; a client without a certificate of its
# own needs nothing per connection in it, so one context per ALPN list serves every such connection.
@functools.lru_cache(maxsize=8)
def _shared_context(alpn: tuple[str, ...]) -> ssl.SSLContext:
    return client_context(alpn=alpn)


def _no_delay(sock: socket.socket) -> None:
    """Send small records at once: a handshake flight waiting for a delayed ACK costs tens of milliseconds."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ChannelError("the TLS handshake timed out")
    return left


def _send_records(sock: socket.socket, records: bytes, deadline: float) -> None:
    if records:
        sock.settimeout(_remaining(deadline))
        try:
            sock.sendall(records)
        except OSError as exc:
            raise ChannelError(f"sending TLS records failed: {_os_reason(exc)}") from exc


def _send_alert(sock: socket.socket, engine: TlsEngine) -> None:
    # Tell the peer why the handshake stops, but never let that hide the error being raised.
    try:
        records = engine.pending_records()
        if records:
            sock.settimeout(0.5)
            sock.sendall(records)
    except (OSError, EnklaveError):
        pass


def accept(
    sock: socket.socket,
    certificate: AttestedCertificate,
    verifier: PeerVerifier | None,
    *,
    nonce: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> AttestedConnection:
    """Run the TLS 1.3 server handshake on an accepted ``sock`` presenting ``certificate``; takes ``sock`` over.

    With ``verifier`` the client must present an RA-TLS certificate, which is appraised (with the evidence nonce
    ``nonce`` if given) when the handshake completes and before any application data is read: mutual RA-TLS.
    Without it the connection is server-authenticated only, and the returned connection's ``attested`` is False.
    The whole handshake must finish within ``timeout`` seconds, which then bounds each later socket operation.

    On any failure ``sock`` is closed. Raises :class:`ChannelError` when the handshake fails (including a client
    that sends no certificate when one is required), times out or the client goes away, and what
    :meth:`PeerVerifier.verify` raises when the client's appraisal fails.
    """
    try:
        _check_verifier(verifier, optional=True)
        _check_timeout(timeout)
        engine = TlsEngine.server(certificate, verifier=verifier, nonce=nonce)
        _no_delay(sock)
        deadline = time.monotonic() + timeout
        while True:
            try:
                done = engine.handshake()
            except EnklaveError:
                _send_alert(sock, engine)
                raise
            _send_records(sock, engine.pending_records(), deadline)
            if done:
                break
            sock.settimeout(_remaining(deadline))
            try:
                records = sock.recv(READ_CHUNK)
            except OSError as exc:
                raise ChannelError(f"the TLS handshake failed: {_os_reason(exc)}") from exc
            if not records:
                raise ChannelError("the client closed the connection during the TLS handshake")
            engine.receive_records(records)
        sock.settimeout(timeout)
    except BaseException:
        sock.close()
        raise
    return AttestedConnection(_EngineChannel(sock, engine), engine.peer)
