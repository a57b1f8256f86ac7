"""TLS 1.3 on byte buffers: the endpoint an enclave runs while its host only moves records.

An enclave has no sockets. To end TLS inside it, the host passes the bytes it reads from the network into the
enclave and sends out whatever the enclave gives back; :class:`TlsEngine` is the enclave's half of that: a TLS 1.3
endpoint (server or client) whose input and output are memory buffers, keyed with an RA-TLS certificate whose private
key stays in the engine. The host sees only TLS records.

The engine runs on pyOpenSSL rather than Python's :mod:`ssl`, because an RA-TLS peer presents a self-signed
certificate and only pyOpenSSL lets the TLS stack accept it for later appraisal (``ssl`` has no verify callback,
so a server could not ask for client certificates, and mutual RA-TLS would be impossible). The TLS stack checks
that the peer owns the certificate's key (CertificateVerify); trust in that key comes from the evidence, checked by
:class:`~enklave.channels.ratls.PeerVerifier` when the handshake completes and before any application data is
read or written.

Session resumption is disabled on both sides: a resumed session carries no certificate, so it would skip the
attestation of the peer.
"""

from __future__ import annotations

import contextlib
from enum import Enum
from typing import Final

from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from enklave.channels.ratls import AttestedCertificate, PeerVerifier, VerifiedPeer
from enklave.errors import ChannelError, EnklaveError, UsageError

__all__ = ["READ_CHUNK", "EngineState", "TlsEngine"]

#: How much plaintext or how many record bytes one call to the TLS stack hands back at most.
READ_CHUNK: Final = 64 * 1024


class EngineState(Enum):
    """Where a :class:`TlsEngine` is: handshaking, open for application data, or finished."""

    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"
    FAILED = "failed"


def _accept_for_appraisal(
    _connection: SSL.Connection, _certificate: object, _error: int, _depth: int, _ok: int
) -> bool:
    # The TLS stack would reject a self-signed certificate; the evidence check after the handshake decides instead.
    return True


def _context(
    *,
    server: bool,
    certificate: AttestedCertificate | None,
    request_peer_certificate: bool,
) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_max_proto_version(SSL.TLS1_3_VERSION)
    # No tickets and no session cache: every connection makes a full handshake with a certificate to appraise.
    context.set_options(SSL.OP_NO_TICKET)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    if certificate is not None:
        context.use_certificate(certificate.certificate)
        context.use_privatekey(certificate.private_key)
        context.check_privatekey()
    mode = SSL.VERIFY_NONE
    if request_peer_certificate:
        mode = SSL.VERIFY_PEER | (SSL.VERIFY_FAIL_IF_NO_PEER_CERT if server else 0)
    context.set_verify(mode, _accept_for_appraisal)
    return context


class TlsEngine:
    """One TLS 1.3 connection whose records go in and out as bytes.

    Drive it with :meth:`receive_records` (bytes from the network), :meth:`handshake` until it returns True,
    then :meth:`read` / :meth:`write`; after every step send :meth:`pending_records` to the network. Not
    thread-safe: one connection, one caller at a time.

    With a verifier, the peer's certificate is appraised when the handshake completes; until it passed,
    :meth:`read` and :meth:`write` refuse to run, so no application data crosses an unverified channel.
    """

    def __init__(
        self,
        connection: SSL.Connection,
        *,
        verifier: PeerVerifier | None,
        nonce: bytes | None,
    ) -> None:
        self._connection = connection
        self._verifier = verifier
        self._nonce = nonce
        self._state = EngineState.HANDSHAKE
        self._peer: VerifiedPeer | None = None

    @classmethod
    def server(
        cls,
        certificate: AttestedCertificate,
        *,
        verifier: PeerVerifier | None = None,
        nonce: bytes | None = None,
    ) -> TlsEngine:
        """A server presenting ``certificate``; with ``verifier``, clients must present an RA-TLS certificate
        that it accepts (mutual RA-TLS), with the evidence nonce ``nonce`` if given."""
        context = _context(
            server=True, certificate=certificate, request_peer_certificate=verifier is not None
        )
        connection = SSL.Connection(context, None)
        connection.set_accept_state()
        return cls(connection, verifier=verifier, nonce=nonce)

    @classmethod
    def client(
        cls,
        verifier: PeerVerifier,
        *,
        certificate: AttestedCertificate | None = None,
        nonce: bytes | None = None,
        server_name: str | None = None,
    ) -> TlsEngine:
        """A client that appraises the server's RA-TLS certificate with ``verifier`` (and ``nonce``), presenting
        ``certificate`` when the server asks for one."""
        if not isinstance(verifier, PeerVerifier):
            raise UsageError("a TLS client engine needs a PeerVerifier for the server's certificate")
        context = _context(server=False, certificate=certificate, request_peer_certificate=True)
        connection = SSL.Connection(context, None)
        if server_name is not None:
            connection.set_tlsext_host_name(server_name.encode("idna"))
        connection.set_connect_state()
        return cls(connection, verifier=verifier, nonce=nonce)

    @property
    def state(self) -> EngineState:
        """Handshaking, open, closed (close_notify seen or sent) or failed."""
        return self._state

    @property
    def peer(self) -> VerifiedPeer | None:
        """The appraised peer once the handshake completed (None for a server without a verifier)."""
        return self._peer

    def receive_records(self, data: bytes) -> None:
        """Hand the engine bytes that arrived from the network."""
        if data:
            self._connection.bio_write(bytes(data))

    def pending_records(self) -> bytes:
        """The records waiting to go out to the network (possibly empty)."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._connection.bio_read(READ_CHUNK)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def handshake(self) -> bool:
        """Advance the handshake with the bytes received so far; True once done and the peer was appraised.

        Raises :class:`ChannelError` when the TLS handshake fails, or the verification error of the peer's
        certificate (:class:`~enklave.errors.PolicyError`, :class:`~enklave.errors.BindingError`, ...) when the
        appraisal fails; either way the engine is failed for good, and a TLS alert is pending for the peer.
        """
        if self._state is EngineState.OPEN:
            return True
        self._check_usable()
        try:
            self._connection.do_handshake()
        except SSL.WantReadError:
            return False
        except SSL.Error as exc:
            self._state = EngineState.FAILED
            raise ChannelError(f"the TLS handshake failed: {_reason(exc)}") from exc
        if self._verifier is not None:
            try:
                self._peer = self._verifier.verify(self._peer_certificate_der(), nonce=self._nonce)
            except EnklaveError:
                self._fail()
                raise
        self._state = EngineState.OPEN
        return True

    def read(self, max_bytes: int = READ_CHUNK) -> bytes:
        """Up to ``max_bytes`` of application data received so far; ``b""`` when none is buffered yet or the peer
        closed (see :attr:`state`). Raises :class:`ChannelError` for a bad record."""
        if self._state is EngineState.CLOSED:
            return b""
        self._check_open("read")
        if max_bytes <= 0:
            raise UsageError("max_bytes must be positive")
        try:
            return self._connection.recv(max_bytes)
        except SSL.WantReadError:
            return b""
        except SSL.ZeroReturnError:
            self._state = EngineState.CLOSED
            return b""
        except SSL.Error as exc:
            self._state = EngineState.FAILED
            raise ChannelError(f"a TLS record failed: {_reason(exc)}") from exc

    def write(self, data: bytes) -> None:
        """Encrypt ``data`` into records; collect them with :meth:`pending_records`."""
        self._check_open("write")
        try:
            self._connection.sendall(bytes(data))
        except SSL.Error as exc:
            self._state = EngineState.FAILED
            raise ChannelError(f"a TLS record could not be written: {_reason(exc)}") from exc

    def close(self) -> None:
        """Send close_notify (collect it with :meth:`pending_records`); later reads and writes are refused."""
        if self._state in (EngineState.HANDSHAKE, EngineState.OPEN):
            # Closing a broken connection leaves nothing more to tell the peer.
            with contextlib.suppress(SSL.Error):
                self._connection.shutdown()
        if self._state is not EngineState.FAILED:
            self._state = EngineState.CLOSED

    def _peer_certificate_der(self) -> bytes:
        certificate = self._connection.get_peer_certificate(as_cryptography=True)
        if certificate is None:
            # A client always gets one in TLS 1.3; a server only when it required one.
            self._fail()
            raise ChannelError("the peer presented no certificate")
        return certificate.public_bytes(serialization.Encoding.DER)

    def _fail(self) -> None:
        self._state = EngineState.FAILED
        # The alert is best effort; the engine refuses further use either way.
        with contextlib.suppress(SSL.Error):
            self._connection.shutdown()

    def _check_usable(self) -> None:
        if self._state in (EngineState.FAILED, EngineState.CLOSED):
            raise ChannelError(f"the TLS connection is {self._state.value}")

    def _check_open(self, what: str) -> None:
        if self._state is not EngineState.OPEN:
            raise ChannelError(f"cannot {what}: the TLS connection is {self._state.value}")


def _reason(exc: SSL.Error) -> str:
    """OpenSSL's reason strings (no key material), or the exception type when there is none."""
    errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    reasons = [str(item[2]) for item in errors if isinstance(item, tuple) and len(item) == 3]
    return "; ".join(reasons) or type(exc).__name__
