"""TLS that ends inside the enclave: TlsSessions (enclave side), TlsRelay (host side), the HTTPS echo example,
and the proof that the host process never holds the plaintext or the private key.

The first part drives TlsSessions in this process with a TlsEngine client, for the HTTP and stream forms and
their limits. The rest runs real enclave processes in simulation: the example as its README runs it (host.py in a
subprocess), and a test-only wrapper of the example enclave (built in a temporary directory, never shipped with
the example) that adds two ecalls: one hands out the enclave's private key so the proof can look for it, one
counts sessions. In those tests this process is the host.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h11
import pytest

from certificates import simulated_verifier
from enklave import host
from enklave.channels.engine import EngineState, TlsEngine
from enklave.channels.ratls import (
    AttestedCertificate,
    VerifiedPeer,
    create_attested_certificate,
)
from enklave.channels.relay import MAX_FEED, HttpLimits, TlsSessions, serve
from enklave.errors import BoundaryError, ChannelError, EcallError, UsageError
from enklave.platform.simulated import SimulatedPlatform
from enklave.runtime.bundle import Bundle, sign_bundle, write_bundle
from enklave.runtime.signing import load_signing_key
from enklave.sgx.report import ReportBody
from memory_scan import found_in_snapshot, snapshot_memory

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "https_echo"
SIGNING_KEY = Path(__file__).parent / "assets" / "enclaves" / "test-signing-key-a.pem"
SERVER_MR = bytes(range(32))
CLIENT_MR = bytes([9]) * 32
DEADLINE = 30.0

# The test-only wrapper: the example's enclave module plus what the proof needs. Never part of the example.
PROOF_ENTRY = '''\
"""Test-only: the https_echo enclave, plus an ecall that discloses its TLS private key (for the memory proof)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

import enclave as app
from enklave import enclave as api


@api.ecall
def test_private_key() -> list[bytes]:
    key = app.SESSIONS.certificate.private_key
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return [scalar, der]


@api.ecall
def test_session_count() -> int:
    return len(app.SESSIONS)
'''

PROOF_TOML = """\
[enclave]
name = "https_echo_proof"
entry = "proof_entry"
files = ["enclave.py", "proof_entry.py"]
product_id = 2
security_version = 1
debug = false
threads = 4
heap_size = "64M"
"""


# -- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("relay-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENKLAVE_HOME", str(path))
        patch.setenv("ENKLAVE_MODE", "sim")
        yield path


@pytest.fixture(scope="module")
def certificates(home: Path) -> dict[str, AttestedCertificate]:
    made = {}
    for name, mr in (("server", SERVER_MR), ("client", CLIENT_MR)):
        platform = SimulatedPlatform.launch(
            ReportBody.build(mr_enclave=mr, mr_signer=b"\x5a" * 32), home=home
        )
        made[name] = create_attested_certificate(platform)
    return made


def _sign(source: Path, name: str) -> tuple[Path, Bundle]:
    bundle = sign_bundle(source / "enklave.toml", load_signing_key(SIGNING_KEY))
    path = source / "build" / f"{name}.enclave"
    write_bundle(bundle, path)
    return path, bundle


@pytest.fixture(scope="module")
def proof(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[host.Enclave, Bundle]]:
    source = tmp_path_factory.mktemp("proof-enclave")
    shutil.copy(EXAMPLE / "enclave.py", source / "enclave.py")
    (source / "proof_entry.py").write_text(PROOF_ENTRY)
    (source / "enklave.toml").write_text(PROOF_TOML)
    path, bundle = _sign(source, "https_echo_proof")
    with host.load(path, mode="sim", home=home, timeout=DEADLINE) as enclave:
        yield enclave, bundle


@pytest.fixture
def relay(proof: tuple[host.Enclave, Bundle]) -> Iterator[int]:
    with serve(proof[0], "127.0.0.1", 0, idle_timeout=DEADLINE) as running:
        yield running.port
    _wait_for(lambda: proof[0].ecall.test_session_count() == 0, "the relay closed its sessions")


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


# -- in-process helpers: a TlsEngine client against TlsSessions ------------------------------------------------


def _connect(feed: Callable[[bytes], bytes], client: TlsEngine) -> None:
    """Run the handshake; the client's Finished goes out with its first data."""
    client.handshake()
    client.receive_records(feed(client.pending_records()))
    assert client.handshake()


def _exchange(feed: Callable[[bytes], bytes], client: TlsEngine, data: bytes) -> bytes:
    client.write(data)
    client.receive_records(feed(client.pending_records()))
    received = b""
    while chunk := client.read():
        received += chunk
    return received


def _request(method: str, target: str, body: bytes = b"", extra: str = "") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: enclave\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def _responses(raw: bytes, methods: list[str]) -> list[tuple[int, dict[str, str], bytes]]:
    """Parse one response per method in ``methods`` (fewer if the connection ended) with an h11 client."""
    connection = h11.Connection(h11.CLIENT)
    connection.receive_data(raw)
    parsed: list[tuple[int, dict[str, str], bytes]] = []
    for method in methods:
        connection.send(
            h11.Request(method=method, target="/", headers=[("host", "x"), ("content-length", "0")])
        )
        connection.send(h11.EndOfMessage())
        status, headers, body = 0, {}, b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                return parsed
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        parsed.append((status, headers, body))
        if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
            break
        connection.start_next_cycle()
    return parsed


def _echo_app(
    method: str, target: str, headers: list[tuple[str, str]], body: bytes
) -> tuple[int, list[tuple[str, str]], bytes]:
    if target == "/boom":
        raise RuntimeError("secret detail in a message")
    return 200, [("x-method", method), ("x-target", target)], body


def _http_session(
    certificates: dict[str, AttestedCertificate], limits: HttpLimits | None = None
) -> tuple[TlsSessions, int, TlsEngine, Callable[[bytes], bytes]]:
    sessions = TlsSessions.http(_echo_app, certificate=certificates["server"], limits=limits)
    session = sessions.open()
    client = TlsEngine.client(simulated_verifier(SERVER_MR))

    def feed(records: bytes) -> bytes:
        return sessions.feed(session, records)

    _connect(feed, client)
    return sessions, session, client, feed


# -- TlsSessions in this process -------------------------------------------------------------------------------


def test_http_sessions_answer_keep_alive_and_pipelined_requests(
    certificates: dict[str, AttestedCertificate],
) -> None:
    sessions, session, client, feed = _http_session(certificates)
    assert client.peer is not None and client.peer.mr_enclave == SERVER_MR
    first = _responses(_exchange(feed, client, _request("POST", "/one", b"body one")), ["POST"])
    assert first == [(200, {"x-method": "POST", "x-target": "/one", "content-length": "8"}, b"body one")]
    # Two pipelined requests in one batch of records, a HEAD among them: it gets the length but no body.
    raw = _exchange(feed, client, _request("HEAD", "/h") + _request("PUT", "/two", b"\x00\xff"))
    answers = _responses(raw, ["HEAD", "PUT"])
    assert [(status, body) for status, _, body in answers] == [(200, b""), (200, b"\x00\xff")]
    assert answers[0][1]["content-length"] == "0"
    # A chunked body and an Expect: 100-continue request are framed by h11.
    chunked = b"POST /c HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert _responses(_exchange(feed, client, chunked), ["POST"])[0][2] == b"abc"
    head = b"POST /e HTTP/1.1\r\nHost: e\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    assert _exchange(feed, client, head).startswith(b"HTTP/1.1 100 Continue\r\n")
    assert _responses(_exchange(feed, client, b"ok"), ["POST"])[0][2] == b"ok"
    # The client closes: close_notify both ways, the session ends and its slot stays until close().
    client.close()
    client.receive_records(feed(client.pending_records()))
    assert client.read() == b"" and client.state is EngineState.CLOSED
    with pytest.raises(ChannelError, match="ended"):
        feed(b"")
    assert len(sessions) == 1
    assert sessions.close(session) == b""
    assert len(sessions) == 0 and sessions.close(session) == b""


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (_request("POST", "/big", b"x" * 101), 413),
        (
            b"POST /big HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n"
            + b"x" * 101
            + b"\r\n",
            413,
        ),
        (b"GET / HTTP/1.1\r\nHost: e\r\nX-Long: " + b"a" * 300 + b"\r\n\r\n", 431),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (_request("GET", "/boom"), 500),
    ],
    ids=["declared-body", "chunked-body", "head", "malformed", "app-error"],
)
def test_http_limits_and_errors_answer_once_and_close(
    certificates: dict[str, AttestedCertificate], request_bytes: bytes, status: int
) -> None:
    limits = HttpLimits(max_head=200, max_body=100)
    sessions, session, client, feed = _http_session(certificates, limits)
    raw = _exchange(feed, client, request_bytes)
    assert _responses(raw, ["POST"]) == [(status, {"content-length": "0", "connection": "close"}, b"")]
    # The application's exception message never reaches the client, and the session is over.
    assert b"secret" not in raw and client.state is EngineState.CLOSED
    with pytest.raises(ChannelError):
        feed(b"")
    sessions.close(session)


def test_http_pipelining_is_bounded(certificates: dict[str, AttestedCertificate]) -> None:
    _, _, client, feed = _http_session(certificates, HttpLimits(max_pipelined=3))
    raw = _exchange(feed, client, b"".join(_request("GET", f"/{n}") for n in range(5)))
    assert [headers["x-target"] for _, headers, _ in _responses(raw, ["GET"] * 5)] == ["/0", "/1", "/2"]
    assert client.state is EngineState.CLOSED


class _Upper:
    """A byte-stream handler: upper-cases what it gets and ends the session after a line "bye"."""

    def __init__(self, peer: VerifiedPeer | None) -> None:
        self.peer = peer
        self.closed = False

    def received(self, data: bytes) -> bytes:
        self.closed = data.endswith(b"bye\n")
        return data.upper()


def test_stream_handlers_and_mutual_ra_tls(certificates: dict[str, AttestedCertificate]) -> None:
    handlers: list[_Upper] = []

    def factory(peer: VerifiedPeer | None) -> _Upper:
        handlers.append(_Upper(peer))
        return handlers[-1]

    sessions = TlsSessions(
        factory, certificate=certificates["server"], verifier=simulated_verifier(CLIENT_MR)
    )
    session = sessions.open()
    client = TlsEngine.client(simulated_verifier(SERVER_MR), certificate=certificates["client"])
    _connect(lambda records: sessions.feed(session, records), client)
    assert _exchange(lambda records: sessions.feed(session, records), client, b"hello ") == b"HELLO "
    assert handlers[0].peer is not None and handlers[0].peer.mr_enclave == CLIENT_MR
    assert _exchange(lambda records: sessions.feed(session, records), client, b"bye\n") == b"BYE\n"
    assert client.state is EngineState.CLOSED  # The handler closed: close_notify came with its reply.

    # A client without a certificate is refused before any handler exists; close() gives the alert.
    session = sessions.open()
    anonymous = TlsEngine.client(simulated_verifier(SERVER_MR))
    anonymous.handshake()
    anonymous.receive_records(sessions.feed(session, anonymous.pending_records()))
    anonymous.handshake()
    with pytest.raises(ChannelError):
        sessions.feed(session, anonymous.pending_records())
    assert sessions.close(session) != b""
    assert len(handlers) == 1


def test_session_table_and_inputs_are_bounded(certificates: dict[str, AttestedCertificate]) -> None:
    sessions = TlsSessions(_Upper, certificate=certificates["server"], max_sessions=2, max_feed=1000)
    first, second = sessions.open(), sessions.open()
    assert first != second
    with pytest.raises(ChannelError, match="too many TLS sessions"):
        sessions.open()
    with pytest.raises(BoundaryError, match="over the limit 1000"):
        sessions.feed(first, b"\x16" * 1001)
    with pytest.raises(ChannelError, match="no such TLS session"):
        sessions.feed(first ^ 1, b"")
    with pytest.raises(UsageError):
        sessions.feed(first, "text")  # type: ignore[arg-type]
    sessions.close(second)
    assert sessions.open() not in (first, second)
    with pytest.raises(UsageError):
        HttpLimits(max_body=0)
    with pytest.raises(UsageError):
        TlsSessions(_Upper, max_sessions=0)


# -- the example, as its README runs it ------------------------------------------------------------------------


def _stdlib_context() -> ssl.SSLContext:
    # A plain TLS client that skips attestation, like curl -k; the certificate is appraised separately.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _https(
    port: int, method: str, target: str, body: bytes
) -> tuple[http.client.HTTPResponse, bytes, bytes, str]:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=_stdlib_context(), timeout=DEADLINE)
    try:
        connection.request(method, target, body=body)
        response = connection.getresponse()
        data = response.read()
        sock = connection.sock
        assert isinstance(sock, ssl.SSLSocket)
        certificate = sock.getpeercert(binary_form=True)
        assert certificate is not None
        return response, data, certificate, str(sock.version())
    finally:
        connection.close()


def test_the_example_serves_https_from_the_enclave_to_a_stdlib_client(home: Path, tmp_path: Path) -> None:
    app = tmp_path / "https_echo"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("build", "__pycache__"))
    _, bundle = _sign(app, "https_echo")
    process = subprocess.Popen(
        [sys.executable, "host.py", "--port", "0"], cwd=app, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    watchdog = threading.Timer(60, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().decode() for _ in range(3)]
        assert lines[0].strip() == f"started the enclave in sim mode; MRENCLAVE {bundle.mr_enclave.hex()}"
        listening = re.fullmatch(r"listening on https://127\.0\.0\.1:(\d+)/ \(Ctrl-C to stop\)\n", lines[2])
        assert listening is not None, lines
        response, data, certificate, version = _https(
            int(listening.group(1)), "POST", "/some/path", b"echo me"
        )
        assert (response.status, data, version) == (200, b"echo me", "TLSv1.3")
        assert response.getheader("x-echo-method") == "POST"
        assert response.getheader("x-echo-target") == "/some/path"
        # The certificate the stdlib client got verifies as the example enclave, by the bundle's MRENCLAVE.
        peer = simulated_verifier(bytes(bundle.mr_enclave)).verify(certificate)
        assert peer.mr_enclave == bytes(bundle.mr_enclave) and peer.quote.simulated
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=DEADLINE)
        assert process.returncode == 0, err
        assert b"stopping" in out
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()


# -- the proof: the host process never holds the plaintext or the private key -----------------------------------

PROOF_CLIENT = """\
import json, os, socket, sys
import h11
from enklave.attestation.policy import EnclavePolicy
from enklave.channels.engine import TlsEngine
from enklave.channels.ratls import PeerVerifier
from enklave.platform.simulated import SimulatedCollateralSource, simulated_root

port, mr_enclave = int(sys.argv[1]), bytes.fromhex(sys.argv[2])
policy = EnclavePolicy(mr_enclave=mr_enclave, allow_simulated=True)
engine = TlsEngine.client(PeerVerifier(collateral_source=SimulatedCollateralSource(), policy=policy,
                                       roots=[simulated_root()]))
sock = socket.create_connection(("127.0.0.1", port), timeout=30)
sent, received = bytearray(), bytearray()

def flush():
    records = engine.pending_records()
    sock.sendall(records)
    sent.extend(records)

def pull():
    data = sock.recv(65536)
    if not data:
        sys.exit("the relay closed the connection")
    received.extend(data)
    engine.receive_records(data)

while not engine.handshake():
    flush()
    pull()
flush()
marker = os.urandom(32)
body = marker.hex().encode() + marker
engine.write(b"POST /proof HTTP/1.1\\r\\nHost: e\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
flush()
parser = h11.Connection(h11.CLIENT)
parser.send(h11.Request(method="POST", target="/proof", headers=[("host", "e"), ("content-length", str(len(body)))]))
parser.send(h11.Data(data=body))
parser.send(h11.EndOfMessage())
echo = b""
while not isinstance(event := parser.next_event(), h11.EndOfMessage):
    if event is h11.NEED_DATA:
        pull()
        while chunk := engine.read():
            parser.receive_data(chunk)
    elif isinstance(event, h11.Data):
        echo += event.data
if echo != body:
    sys.exit("the echo differs from the request body")
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps({"marker": marker.hex(), "sent": bytes(sent[-64:]).hex(), "received": bytes(received[-64:]).hex(),
                  "peer": engine.peer.mr_enclave.hex()}), flush=True)
sys.stdin.readline()
"""


def test_the_host_process_never_holds_the_plaintext_or_the_private_key(
    proof: tuple[host.Enclave, Bundle], relay: int, tmp_path: Path
) -> None:
    enclave, bundle = proof
    script = tmp_path / "proof_client.py"
    script.write_text(PROOF_CLIENT)
    # The client runs in its own process, so that this process is only the host: it relays, and that is all.
    client = subprocess.Popen(
        [sys.executable, str(script), str(relay), bundle.mr_enclave.hex()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    watchdog = threading.Timer(60, client.kill)
    watchdog.start()
    try:
        assert client.stdin is not None and client.stdout is not None and client.stderr is not None
        # 1. The client got its echo and waits, connection open; it has printed nothing else yet.
        assert client.stdout.readline() == b"ready\n", client.stderr.read().decode()
        # 2. Snapshot this process's memory before it learns the marker or the key.
        size = snapshot_memory(tmp_path / "memory")
        assert size > 1 << 20
        # 3. Now learn what to look for: the marker from the client, the key through the test-only ecall.
        client.stdin.write(b"go\n")
        client.stdin.flush()
        facts = json.loads(client.stdout.readline())
        scalar, pkcs8 = enclave.ecall.test_private_key()
        assert facts["peer"] == bundle.mr_enclave.hex()  # The client attested the enclave it talked to.
        marker = bytes.fromhex(facts["marker"])
        secrets = {
            "marker": marker,
            "marker hex": marker.hex().encode(),
            "key scalar": scalar,
            "key PKCS#8": pkcs8,
        }
        # Control: the same scan must find what the host did hold, the last TLS records it relayed each way.
        relayed = {
            "relayed records in": bytes.fromhex(facts["sent"]),
            "relayed records out": bytes.fromhex(facts["received"]),
        }
        found = found_in_snapshot(tmp_path / "memory", {**secrets, **relayed})
        assert found & set(secrets) == set()
        assert found >= set(relayed)
        client.stdin.write(b"bye\n")
        client.stdin.flush()
        assert client.wait(timeout=DEADLINE) == 0, client.stderr.read().decode()
    finally:
        watchdog.cancel()
        if client.poll() is None:
            client.kill()
            client.wait()


# -- a hostile or careless host, hostile clients ---------------------------------------------------------------


def _enclave_session(enclave: host.Enclave) -> tuple[int, TlsEngine]:
    session = enclave.ecall.tls_open()
    client = TlsEngine.client(simulated_verifier(bytes(enclave.info.mr_enclave)))
    _connect(lambda records: enclave.ecall.tls_feed(session, records), client)
    return session, client


def test_a_host_that_mixes_sessions_gets_failures_not_plaintext(proof: tuple[host.Enclave, Bundle]) -> None:
    enclave, _ = proof
    (first, alice), (second, _bob) = _enclave_session(enclave), _enclave_session(enclave)
    secret = os.urandom(16).hex().encode()
    alice.write(_request("POST", "/", secret))
    records = alice.pending_records()
    # Alice's records (her Finished and request) fed to Bob's session: TLS fails, and the alert carries nothing.
    with pytest.raises(EcallError) as refused:
        enclave.ecall.tls_feed(second, records)
    assert refused.value.type_name == "ChannelError"
    alert = enclave.ecall.tls_close(second)
    assert alert and secret not in alert
    # Alice's own session is untouched: the same records there give her the echo.
    reply = enclave.ecall.tls_feed(first, records)
    assert secret not in reply
    alice.receive_records(reply)
    assert _responses(alice.read(), ["POST"])[0][2] == secret
    # Replaying them to her session is refused too.
    with pytest.raises(EcallError):
        enclave.ecall.tls_feed(first, records)
    assert secret not in enclave.ecall.tls_close(first)
    assert enclave.ecall.test_session_count() == 0


def test_oversize_input_and_too_many_sessions_leave_the_enclave_serving(
    proof: tuple[host.Enclave, Bundle], relay: int
) -> None:
    enclave, _ = proof
    session = enclave.ecall.tls_open()
    with pytest.raises(BoundaryError, match="exceeds the declared maximum"):
        enclave.ecall.tls_feed(session, b"\x16" * (MAX_FEED + 1))
    enclave.ecall.tls_close(session)
    opened = [enclave.ecall.tls_open() for _ in range(256)]
    with pytest.raises(EcallError) as refused:
        enclave.ecall.tls_open()
    assert refused.value.type_name == "ChannelError"
    # The relay closes a connection the enclave has no session for.
    with socket.create_connection(("127.0.0.1", relay), timeout=DEADLINE) as sock:
        assert sock.recv(1) == b""
    for session in opened:
        enclave.ecall.tls_close(session)
    response, data, _, _ = _https(relay, "PUT", "/after", b"still serving")
    assert (response.status, data) == (200, b"still serving")


def test_clients_that_leave_mid_handshake_or_speak_plain_http_are_dropped(
    proof: tuple[host.Enclave, Bundle], relay: int
) -> None:
    enclave, _ = proof
    hello = TlsEngine.client(simulated_verifier(bytes(enclave.info.mr_enclave)))
    hello.handshake()
    client_hello = hello.pending_records()
    with socket.create_connection(("127.0.0.1", relay), timeout=DEADLINE) as sock:
        sock.sendall(client_hello[:40])
    with socket.create_connection(("127.0.0.1", relay), timeout=DEADLINE) as sock:
        sock.sendall(client_hello)
        assert sock.recv(5)[:1] == b"\x16"  # The server's first flight, then the client leaves.
    # Plain HTTP and a malformed handshake record: the enclave refuses them, the relay closes the connection
    # (after the TLS alert, when OpenSSL sends one: it sends none to what is not TLS at all).
    for garbage, alert in ((_request("GET", "/"), b""), (b"\x16\x03\x01\x00\x05hello", b"\x15")):
        with socket.create_connection(("127.0.0.1", relay), timeout=DEADLINE) as sock:
            sock.sendall(garbage)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            assert answer[:1] == alert
    _wait_for(lambda: enclave.ecall.test_session_count() == 0, "the enclave freed the sessions")
    response, data, _, _ = _https(relay, "POST", "/", b"next client")
    assert (response.status, data) == (200, b"next client")


def test_relay_bounds_connections_and_closes_gracefully(proof: tuple[host.Enclave, Bundle]) -> None:
    enclave, _ = proof
    with pytest.raises(UsageError, match="no ecall"):
        serve(enclave, "127.0.0.1", 0, feed_ecall="absent")
    running = serve(enclave, "127.0.0.1", 0, max_connections=1)
    with running:
        assert running.address[0] == "127.0.0.1"
        held = _stdlib_context().wrap_socket(socket.create_connection(("127.0.0.1", running.port), timeout=5))
        assert held.version() == "TLSv1.3"
        with socket.create_connection(("127.0.0.1", running.port), timeout=DEADLINE) as extra:
            assert extra.recv(1) == b""  # Over the cap: closed at once.
        assert running.connections == 1 and enclave.ecall.test_session_count() == 1
    # Closing the relay ended the held connection and its enclave session, and stopped listening.
    assert held.recv(1) == b""
    held.close()
    assert running.wait(0) and enclave.ecall.test_session_count() == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", running.port), timeout=DEADLINE)
