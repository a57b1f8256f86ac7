"""RA-TLS over real loopback sockets: contexts, attested connections, mutual RA-TLS, the httpx transport, attacks.

Every server is a thread on 127.0.0.1 that records the application bytes it received, so each refused connection
also proves that no application data reached the server. Every socket has a timeout and every thread is joined.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import os
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from certificates import self_signed
from enklave.attestation.policy import EnclavePolicy
from enklave.channels.ratls import (
    DICE_EVIDENCE_OID,
    AttestedCertificate,
    PeerVerifier,
    create_attested_certificate,
)
from enklave.channels.tls import (
    AttestedConnection,
    AttestedTransport,
    accept,
    client_context,
    connect,
    server_context,
)
from enklave.errors import (
    BindingError,
    ChannelError,
    EnklaveError,
    InvalidQuote,
    PolicyError,
    UsageError,
    VerificationError,
)
from enklave.platform.simulated import SimulatedCollateralSource, SimulatedPlatform, simulated_root
from enklave.sgx.report import AttributeFlags, Attributes, ReportBody
from service_fixtures import serving

TIMEOUT = 5.0
MR_SERVER, MR_CLIENT, MR_OTHER = b"\x11" * 32, b"\x22" * 32, b"\x33" * 32
MR_SIGNER = b"\x5a" * 32


def _identity(mr_enclave: bytes, *, svn: int = 3, debug: bool = False) -> ReportBody:
    flags = AttributeFlags.INIT | AttributeFlags.MODE64BIT | (AttributeFlags.DEBUG if debug else 0)
    return ReportBody.build(
        mr_enclave=mr_enclave,
        mr_signer=MR_SIGNER,
        isv_prod_id=7,
        isv_svn=svn,
        attributes=Attributes(AttributeFlags(flags), 0x3),
    )


def _policy(mr_enclave: bytes) -> EnclavePolicy:
    return EnclavePolicy(mr_enclave=mr_enclave, isv_prod_id=7, min_isv_svn=3, allow_simulated=True)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("enklave-home")


@pytest.fixture(autouse=True)
def _home_env(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENKLAVE_HOME", str(home))


def _certificate(home: Path, mr_enclave: bytes, **kwargs: Any) -> AttestedCertificate:
    nonce = kwargs.pop("nonce", None)
    return create_attested_certificate(
        SimulatedPlatform.launch(_identity(mr_enclave, **kwargs), home=home), nonce=nonce
    )


@pytest.fixture(scope="module")
def server_cert(home: Path) -> AttestedCertificate:
    return _certificate(home, MR_SERVER)


@pytest.fixture(scope="module")
def client_cert(home: Path) -> AttestedCertificate:
    return _certificate(home, MR_CLIENT)


def _verifier(home: Path, mr_enclave: bytes) -> PeerVerifier:
    return PeerVerifier(
        collateral_source=SimulatedCollateralSource(home),
        policy=_policy(mr_enclave),
        roots=[simulated_root(home)],
    )


# -- a loopback server thread ---------------------------------------------------------------------------------


class Server:
    """Accepts connections on 127.0.0.1 and runs ``handler(conn, server)`` on each, recording what it sees."""

    def __init__(self, handler: Callable[[socket.socket, Server], None]) -> None:
        self._handler = handler
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self.received = bytearray()
        self.errors: list[BaseException] = []
        self.peers: list[bytes] = []
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(TIMEOUT)
            try:
                self._handler(conn, self)
            except Exception as exc:  # Recorded for the test to assert on.
                self.errors.append(exc)
            finally:
                conn.close()
                self.done.set()

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        self._listener.close()
        assert not self._thread.is_alive()

    def wait(self) -> None:
        assert self.done.wait(TIMEOUT), "the server did not finish with the connection"


def _pump(read: Callable[[int], bytes], write: Callable[[bytes], None], server: Server) -> None:
    while data := read(65536):
        server.received += data
        write(data)


def ssl_echo(context: ssl.SSLContext) -> Callable[[socket.socket, Server], None]:
    def handler(conn: socket.socket, server: Server) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            _pump(tls.recv, tls.sendall, server)

    return handler


def _attested(
    certificate: AttestedCertificate,
    verifier: PeerVerifier | None,
    serve: Callable[[Callable[[int], bytes], Callable[[bytes], None], Server], None],
) -> Callable[[socket.socket, Server], None]:
    """A handler that accepts RA-TLS (mutual when ``verifier`` is given), records an attested client's MRENCLAVE
    and then runs ``serve(recv, sendall, server)`` on the connection."""

    def handler(conn: socket.socket, server: Server) -> None:
        with accept(conn, certificate, verifier, timeout=TIMEOUT) as attested:
            if attested.attested:
                server.peers.append(attested.peer.mr_enclave)
            serve(attested.recv, attested.sendall, server)

    return handler


def engine_echo(
    certificate: AttestedCertificate, verifier: PeerVerifier | None
) -> Callable[[socket.socket, Server], None]:
    return _attested(certificate, verifier, _pump)


def _echo_round_trip(connection: AttestedConnection, message: bytes = b"ping " * 1000) -> None:
    connection.sendall(message)
    echoed = b""
    while len(echoed) < len(message):
        chunk = connection.recv()
        assert chunk, "the server closed before echoing"
        echoed += chunk
    assert echoed == message


# -- contexts and the key that never touches the disk ---------------------------------------------------------


def test_round_trip_with_server_context_and_connect(home: Path, server_cert: AttestedCertificate) -> None:
    with Server(ssl_echo(server_context(server_cert))) as server:
        with connect(server.address, _verifier(home, MR_SERVER), timeout=TIMEOUT) as conn:
            assert conn.attested and conn.peer.mr_enclave == MR_SERVER
            assert conn.peer.certificate == server_cert.certificate
            _echo_round_trip(conn)
        server.wait()
    assert not server.errors


@pytest.mark.parametrize("kind", ["ssl", "engine"])
def test_a_plain_ssl_client_reaches_the_server_over_tls13(
    kind: str, server_cert: AttestedCertificate
) -> None:
    handler = ssl_echo(server_context(server_cert)) if kind == "ssl" else engine_echo(server_cert, None)
    with Server(handler) as server:
        # Only the standard library from here on: what any TLS client that skips attestation does.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection(server.address, timeout=TIMEOUT) as raw,
            context.wrap_socket(raw) as tls,
        ):
            assert tls.version() == "TLSv1.3"
            assert tls.getpeercert(binary_form=True) == server_cert.certificate_der
            tls.sendall(b"hello")
            assert tls.recv(100) == b"hello"
        server.wait()
    assert bytes(server.received) == b"hello" and not server.errors


def test_server_context_refuses_tls12(server_cert: AttestedCertificate) -> None:
    with Server(ssl_echo(server_context(server_cert))) as server:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(server.address, timeout=TIMEOUT) as raw, pytest.raises(ssl.SSLError):
            context.wrap_socket(raw)
        server.wait()


def test_the_private_key_never_reaches_the_disk(
    server_cert: AttestedCertificate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    memfds: list[int] = []
    loaded: list[tuple[str, bytes]] = []
    real_memfd_create, real_load = os.memfd_create, ssl.SSLContext.load_cert_chain

    def memfd_create(name: str, flags: int = os.MFD_CLOEXEC) -> int:
        memfds.append(real_memfd_create(name, flags))
        return memfds[-1]

    def load_cert_chain(self: ssl.SSLContext, certfile: str, *args: Any, **kwargs: Any) -> None:
        with open(certfile, "rb") as file:
            loaded.append((certfile, file.read()))
        real_load(self, certfile, *args, **kwargs)

    monkeypatch.setattr(os, "memfd_create", memfd_create)
    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", load_cert_chain)
    fds_before = len(os.listdir("/proc/self/fd"))
    server_context(server_cert)
    client_context(certificate=server_cert)
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert len(memfds) == 2 and len(loaded) == 2
    for fd, (path, content) in zip(memfds, loaded, strict=True):
        assert path == f"/proc/self/fd/{fd}"
        # The key went through memory, and encrypted even there.
        assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in content and b"BEGIN PRIVATE KEY" not in content
        assert server_cert.certificate_pem in content
        with pytest.raises(OSError):
            os.fstat(fd)
    on_disk = [p for p in tmp_path.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert on_disk == []


def test_bad_arguments_are_usage_errors(home: Path, server_cert: AttestedCertificate) -> None:
    with pytest.raises(UsageError):
        server_context(server_cert.certificate)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        server_context(server_cert, alpn="http/1.1")
    with pytest.raises(UsageError):
        connect(("127.0.0.1", 1), object())  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        connect(("127.0.0.1", 1), _verifier(home, MR_SERVER), timeout=0)
    with pytest.raises(UsageError):
        AttestedTransport(object())  # type: ignore[arg-type]


def test_nothing_listening_is_a_channel_error(home: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        address = probe.getsockname()[:2]
    with pytest.raises(ChannelError):
        connect(address, _verifier(home, MR_SERVER), timeout=TIMEOUT)


# -- attacks at the connection level --------------------------------------------------------------------------


def _self_signed(
    key: ec.EllipticCurvePrivateKey, extensions: tuple[tuple[x509.ObjectIdentifier, bytes], ...] = ()
) -> AttestedCertificate:
    certificate = self_signed(
        key, "CN=attacker", serial_number=x509.random_serial_number(), extensions=extensions
    )
    return AttestedCertificate(key, certificate)


def relay(context: ssl.SSLContext, upstream: tuple[str, int]) -> Callable[[socket.socket, Server], None]:
    """A man in the middle: terminates the client's TLS with its own certificate and forwards to the server."""

    def handler(conn: socket.socket, server: Server) -> None:
        plain = ssl.create_default_context()
        plain.check_hostname = False
        plain.verify_mode = ssl.CERT_NONE
        with (
            context.wrap_socket(conn, server_side=True) as tls,
            socket.create_connection(upstream, timeout=TIMEOUT) as raw,
            plain.wrap_socket(raw) as up,
        ):
            while data := tls.recv(65536):
                server.received += data
                up.sendall(data)
                tls.sendall(up.recv(65536))

    return handler


def _refused(address: tuple[str, int], verifier: PeerVerifier, **kwargs: Any) -> EnklaveError:
    with pytest.raises(EnklaveError) as info, connect(address, verifier, timeout=TIMEOUT, **kwargs) as conn:
        conn.sendall(b"secret request")
    return info.value


@pytest.mark.parametrize("presented", ["plain self-signed", "other enclave"])
def test_a_relay_with_its_own_certificate_is_refused(
    presented: str, home: Path, server_cert: AttestedCertificate
) -> None:
    if presented == "plain self-signed":
        certificate = _self_signed(ec.generate_private_key(ec.SECP256R1()))
    else:
        certificate = _certificate(home, MR_OTHER)
    with (
        Server(ssl_echo(server_context(server_cert))) as genuine,
        Server(relay(server_context(certificate), genuine.address)) as mitm,
    ):
        error = _refused(mitm.address, _verifier(home, MR_SERVER))
        mitm.wait()
    if presented == "plain self-signed":
        assert isinstance(error, InvalidQuote)
    else:
        assert isinstance(error, PolicyError) and error.field == "mr_enclave"
    assert mitm.received == b"" and genuine.received == b""


@pytest.mark.parametrize(
    ("case", "expected", "field"),
    [
        ("quote replayed with another key", BindingError, None),
        ("lower ISV SVN", PolicyError, "isv_svn"),
        ("debug enclave", PolicyError, "debug"),
        ("stale nonce", BindingError, None),
    ],
)
def test_a_server_with_unacceptable_evidence_gets_no_data(
    case: str,
    expected: type[VerificationError],
    field: str | None,
    home: Path,
    server_cert: AttestedCertificate,
) -> None:
    nonce = None
    if case == "quote replayed with another key":
        dice = server_cert.certificate.extensions.get_extension_for_oid(DICE_EVIDENCE_OID).value
        assert isinstance(dice, x509.UnrecognizedExtension)
        certificate = _self_signed(
            ec.generate_private_key(ec.SECP256R1()), ((DICE_EVIDENCE_OID, dice.value),)
        )
    elif case == "lower ISV SVN":
        certificate = _certificate(home, MR_SERVER, svn=2)
    elif case == "debug enclave":
        certificate = _certificate(home, MR_SERVER, debug=True)
    else:
        certificate, nonce = _certificate(home, MR_SERVER, nonce=b"nonce B"), b"nonce A"
    with Server(ssl_echo(server_context(certificate))) as server:
        error = _refused(server.address, _verifier(home, MR_SERVER), nonce=nonce)
        server.wait()
    assert type(error) is expected
    if field is not None:
        assert isinstance(error, PolicyError) and error.field == field
    assert server.received == b""


def test_the_expected_nonce_is_accepted(home: Path) -> None:
    certificate = _certificate(home, MR_SERVER, nonce=b"nonce A")
    with Server(ssl_echo(server_context(certificate))) as server:
        with connect(server.address, _verifier(home, MR_SERVER), nonce=b"nonce A", timeout=TIMEOUT) as conn:
            assert conn.peer.nonce == b"nonce A"
            _echo_round_trip(conn)
        server.wait()


# A TLS 1.3 server written out by hand (RFC 8446, one cipher suite, X25519), because no TLS stack will present a
# certificate with a key that is not the certificate's: it sends the genuine server's certificate and signs the
# CertificateVerify with whatever key it is given.


def _u16(n: int) -> bytes:
    return struct.pack(">H", n)


def _u24(n: int) -> bytes:
    return struct.pack(">I", n)[1:]


def _expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = _u16(length) + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _read_record(conn: socket.socket) -> tuple[int, bytes]:
    header = _read_exact(conn, 5)
    return header[0], _read_exact(conn, struct.unpack(">H", header[3:5])[0])


def _read_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _client_hello(message: bytes) -> tuple[bytes, bytes]:
    """The legacy session id and the X25519 key share of a ClientHello handshake message."""
    assert message[0] == 1
    at = 4 + 2 + 32
    session_id = message[at + 1 : at + 1 + message[at]]
    at += 1 + message[at]
    at += 2 + struct.unpack(">H", message[at : at + 2])[0]  # Cipher suites.
    at += 1 + message[at]  # Compression methods.
    end = at + 2 + struct.unpack(">H", message[at : at + 2])[0]
    at += 2
    while at < end:
        kind, size = struct.unpack(">HH", message[at : at + 4])
        body = message[at + 4 : at + 4 + size]
        at += 4 + size
        if kind == 0x0033:  # key_share: a list of (group, key).
            pos = 2
            while pos < len(body):
                group, length = struct.unpack(">HH", body[pos : pos + 4])
                if group == 0x001D:
                    return session_id, body[pos + 4 : pos + 4 + length]
                pos += 4 + length
    raise AssertionError("the client offered no X25519 key share")


def forged_tls13(
    certificate_der: bytes, signing_key: ec.EllipticCurvePrivateKey
) -> Callable[[socket.socket, Server], None]:
    def handler(conn: socket.socket, server: Server) -> None:
        kind, client_hello = _read_record(conn)
        assert kind == 22
        session_id, client_share = _client_hello(client_hello)
        ephemeral = X25519PrivateKey.generate()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(client_share))
        share = ephemeral.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        extensions = (
            b"\x00\x2b" + _u16(2) + b"\x03\x04" + b"\x00\x33" + _u16(36) + b"\x00\x1d" + _u16(32) + share
        )
        body = b"\x03\x03" + os.urandom(32) + bytes([len(session_id)]) + session_id + b"\x13\x01\x00"
        body += _u16(len(extensions)) + extensions
        server_hello = b"\x02" + _u24(len(body)) + body
        conn.sendall(b"\x16\x03\x03" + _u16(len(server_hello)) + server_hello + b"\x14\x03\x03\x00\x01\x01")
        # The key schedule up to the handshake traffic secrets (RFC 8446 section 7.1).
        transcript = client_hello + server_hello
        derived = _expand_label(_extract(b"\0" * 32, b"\0" * 32), b"derived", hashlib.sha256().digest(), 32)
        handshake_secret = _extract(derived, shared)
        secrets = {
            label: _expand_label(handshake_secret, label, hashlib.sha256(transcript).digest(), 32)
            for label in (b"s hs traffic", b"c hs traffic")
        }
        flight = b"\x08" + _u24(2) + b"\x00\x00"  # EncryptedExtensions, empty.
        entries = _u24(len(certificate_der)) + certificate_der + b"\x00\x00"
        flight += b"\x0b" + _u24(4 + len(entries)) + b"\x00" + _u24(len(entries)) + entries
        signed = (
            b"\x20" * 64
            + b"TLS 1.3, server CertificateVerify\x00"
            + hashlib.sha256(transcript + flight).digest()
        )
        signature = signing_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        flight += b"\x0f" + _u24(4 + len(signature)) + b"\x04\x03" + _u16(len(signature)) + signature
        finished_key = _expand_label(secrets[b"s hs traffic"], b"finished", b"", 32)
        verify_data = hmac.new(
            finished_key, hashlib.sha256(transcript + flight).digest(), hashlib.sha256
        ).digest()
        flight += b"\x14" + _u24(32) + verify_data
        key, iv = (
            _expand_label(secrets[b"s hs traffic"], label, b"", n) for label, n in ((b"key", 16), (b"iv", 12))
        )
        header = b"\x17\x03\x03" + _u16(len(flight) + 1 + 16)
        conn.sendall(header + AESGCM(key).encrypt(iv, flight + b"\x16", header))
        # What the client sends back, decrypted with its handshake keys: the inner content types only.
        key, iv = (
            _expand_label(secrets[b"c hs traffic"], label, b"", n) for label, n in ((b"key", 16), (b"iv", 12))
        )
        sequence = 0
        while True:
            try:
                kind, payload = _read_record(conn)
            except (EOFError, OSError):
                return
            if kind == 0x17:
                nonce = bytes(a ^ b for a, b in zip(iv, sequence.to_bytes(12, "big"), strict=True))
                header = b"\x17\x03\x03" + _u16(len(payload))
                inner = AESGCM(key).decrypt(nonce, payload, header).rstrip(b"\0")
                sequence += 1
                server.peers.append(bytes([inner[-1]]))
            else:
                server.peers.append(bytes([kind]))

    return handler


def test_a_copied_certificate_without_its_key_fails_the_handshake(
    home: Path, server_cert: AttestedCertificate
) -> None:
    stolen = forged_tls13(server_cert.certificate_der, ec.generate_private_key(ec.SECP256R1()))
    with Server(stolen) as server:
        with pytest.raises(ChannelError):
            connect(server.address, _verifier(home, MR_SERVER), timeout=TIMEOUT)
        server.wait()
    # The client answered with an alert (content type 21), and nothing else: no application data (23).
    assert server.peers and set(server.peers) <= {b"\x14", b"\x15"} and b"\x15" in server.peers
    assert not server.errors


def test_the_hand_written_server_is_a_valid_tls13_server(
    home: Path, server_cert: AttestedCertificate
) -> None:
    # The control for the test above: signed with the right key, the same server completes the handshake.
    with Server(forged_tls13(server_cert.certificate_der, server_cert.private_key)) as server:
        with connect(server.address, _verifier(home, MR_SERVER), timeout=TIMEOUT) as conn:
            assert conn.peer.mr_enclave == MR_SERVER
        server.wait()
    assert b"\x16" in server.peers  # The client's Finished.


# -- mutual RA-TLS --------------------------------------------------------------------------------------------


def test_mutual_ra_tls_between_two_enclaves(
    home: Path, server_cert: AttestedCertificate, client_cert: AttestedCertificate
) -> None:
    with Server(engine_echo(server_cert, _verifier(home, MR_CLIENT))) as server:
        with connect(
            server.address, _verifier(home, MR_SERVER), certificate=client_cert, timeout=TIMEOUT
        ) as conn:
            assert conn.peer.mr_enclave == MR_SERVER
            _echo_round_trip(conn)
        server.wait()
    assert server.peers == [MR_CLIENT] and not server.errors


def _client_sees_the_connection_closed(
    address: tuple[str, int], verifier: PeerVerifier, **kwargs: Any
) -> None:
    # The server appraises the client after the client's handshake ended, so the refusal shows on the first read.
    try:
        with connect(address, verifier, timeout=TIMEOUT, **kwargs) as conn:
            conn.sendall(b"secret request")
            assert conn.recv() == b""
    except ChannelError:
        pass


@pytest.mark.parametrize("client", ["no certificate", "other enclave", "plain self-signed"])
def test_mutual_ra_tls_refuses_a_client_that_is_not_the_pinned_enclave(
    client: str, home: Path, server_cert: AttestedCertificate
) -> None:
    certificate = {
        "no certificate": None,
        "other enclave": _certificate(home, MR_OTHER),
        "plain self-signed": _self_signed(ec.generate_private_key(ec.SECP256R1())),
    }[client]
    with Server(engine_echo(server_cert, _verifier(home, MR_CLIENT))) as server:
        _client_sees_the_connection_closed(
            server.address, _verifier(home, MR_SERVER), certificate=certificate
        )
        server.wait()
    assert server.received == b"" and server.peers == []
    [error] = server.errors
    expected = {
        "no certificate": ChannelError,
        "other enclave": PolicyError,
        "plain self-signed": InvalidQuote,
    }
    assert type(error) is expected[client]


def test_accept_without_a_verifier_is_server_authentication_only(
    home: Path, server_cert: AttestedCertificate, client_cert: AttestedCertificate
) -> None:
    accepted: list[AttestedConnection] = []

    def handler(conn: socket.socket, server: Server) -> None:
        with accept(conn, server_cert, None, timeout=TIMEOUT) as attested:
            accepted.append(attested)
            with pytest.raises(UsageError):
                attested.peer  # noqa: B018
            _pump(attested.recv, attested.sendall, server)

    with Server(handler) as server:
        with connect(
            server.address, _verifier(home, MR_SERVER), certificate=client_cert, timeout=TIMEOUT
        ) as conn:
            _echo_round_trip(conn, b"x")
        server.wait()
    assert [c.attested for c in accepted] == [False] and not server.errors


def test_accept_gives_up_on_a_silent_client(server_cert: AttestedCertificate) -> None:
    def handler(conn: socket.socket, server: Server) -> None:
        accept(conn, server_cert, None, timeout=0.3)

    with Server(handler) as server, socket.create_connection(server.address, timeout=TIMEOUT) as silent:
        server.wait()
        assert silent.recv(10) == b""  # The server closed the socket.
    [error] = server.errors
    assert isinstance(error, ChannelError) and "timed out" in str(error)


# -- the httpx transport --------------------------------------------------------------------------------------

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
)


def _answer_one_request(read: Callable[[int], bytes], write: Callable[[bytes], None], server: Server) -> None:
    """Read an HTTP/1.1 request's head into ``server.received`` and answer it with RESPONSE."""
    while b"\r\n\r\n" not in server.received:
        data = read(65536)
        if not data:
            return
        server.received += data
    write(RESPONSE)


def http_responder(
    certificate: AttestedCertificate, verifier: PeerVerifier | None
) -> Callable[[socket.socket, Server], None]:
    """Answers one HTTP/1.1 request over RA-TLS (mutual when ``verifier`` is given)."""
    return _attested(certificate, verifier, _answer_one_request)


def http_responder_ssl(context: ssl.SSLContext) -> Callable[[socket.socket, Server], None]:
    def handler(conn: socket.socket, server: Server) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            _answer_one_request(tls.recv, tls.sendall, server)

    return handler


@pytest.fixture
def client_transport(home: Path) -> Iterator[Callable[..., httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(mr_enclave: bytes, **kwargs: Any) -> httpx.Client:
        clients.append(
            httpx.Client(transport=AttestedTransport(_verifier(home, mr_enclave), **kwargs), timeout=TIMEOUT)
        )
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def test_httpx_transport_reaches_an_attested_server(
    server_cert: AttestedCertificate, client_transport: Callable[..., httpx.Client]
) -> None:
    with Server(http_responder_ssl(server_context(server_cert, alpn=("http/1.1",)))) as server:
        response = client_transport(MR_SERVER).get(f"https://{server.address[0]}:{server.address[1]}/hello")
        server.wait()
    assert response.status_code == 200 and response.text == "hello"
    assert response.extensions["enklave.peer"].mr_enclave == MR_SERVER
    assert bytes(server.received).startswith(b"GET /hello HTTP/1.1\r\n")


def test_httpx_transport_with_mutual_ra_tls(
    home: Path,
    server_cert: AttestedCertificate,
    client_cert: AttestedCertificate,
    client_transport: Callable[..., httpx.Client],
) -> None:
    with Server(http_responder(server_cert, _verifier(home, MR_CLIENT))) as server:
        client = client_transport(MR_SERVER, certificate=client_cert)
        response = client.post(f"https://{server.address[0]}:{server.address[1]}/v1", content=b"body")
        server.wait()
    assert response.text == "hello" and server.peers == [MR_CLIENT]
    assert response.extensions["enklave.peer"].mr_enclave == MR_SERVER


def test_httpx_transport_refuses_the_wrong_enclave_before_sending(
    server_cert: AttestedCertificate, client_transport: Callable[..., httpx.Client]
) -> None:
    with Server(http_responder_ssl(server_context(server_cert))) as server:
        with pytest.raises(PolicyError) as info:
            client_transport(MR_OTHER).get(f"https://{server.address[0]}:{server.address[1]}/secret")
        server.wait()
    assert info.value.field == "mr_enclave"
    assert server.received == b""


def test_httpx_transport_maps_network_failures_and_refuses_plain_http(
    client_transport: Callable[..., httpx.Client],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        host, port = probe.getsockname()[:2]
    client = client_transport(MR_SERVER)
    with pytest.raises(httpx.ConnectError):
        client.get(f"https://{host}:{port}/")
    with pytest.raises(UsageError):
        client.get(f"http://{host}:{port}/")


def test_uvicorn_serves_starlette_over_ra_tls(
    server_cert: AttestedCertificate, client_transport: Callable[..., httpx.Client]
) -> None:
    if "ssl_context_factory" not in inspect.signature(uvicorn.Config).parameters:
        pytest.skip("this uvicorn takes TLS only from files")
    app = Starlette(routes=[Route("/who", lambda request: PlainTextResponse("enclave"))])
    factory = lambda config, default: server_context(server_cert, alpn=("http/1.1",))  # noqa: E731
    with serving(app, "ra-tls uvicorn", scheme="https", ssl_context_factory=factory) as url:
        client = client_transport(MR_SERVER)
        response = client.get(f"{url}/who")
        client.close()  # Before uvicorn stops, which waits for open keep-alive connections.
    assert response.text == "enclave"
    assert response.extensions["enklave.peer"].mr_enclave == MR_SERVER
