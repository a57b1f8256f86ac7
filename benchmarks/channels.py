"""Attested channels against their plain counterparts, in the same run on loopback.

* Handshakes: a TLS 1.3 connection (connect, handshake, one byte each way, close) to a plain ``ssl`` server with
  a self-signed P-256 certificate, against the same to an RA-TLS server (``server_context`` with a certificate
  from the simulated platform) through ``enklave.channels.tls.connect``, which also verifies the quote and
  appraises the policy; collateral is cached (``CachingCollateralSource`` in front of the simulated PCS, and the
  ``PeerVerifier``'s ``QuoteVerifier`` caching the collateral checks), as a long-running client has it. Both
  servers run on a thread of this process with the same options (TLS 1.3 only, no session tickets).
* Relay bulk: MB/s of application data sent over TLS 1.3 to a server that counts it and answers with the count:
  directly to an ``ssl`` server thread, against through ``enklave.channels.relay`` into a simulated enclave that
  ends the TLS connection itself (every chunk crosses the host/enclave boundary as TLS records).
* HPKE: encapsulated request/response round trips per second (client encapsulates, gateway decapsulates and
  encapsulates the response, client decapsulates; X25519, HKDF-SHA256, AES-128-GCM) for 1 KiB and 1 MiB bodies,
  against AES-128-GCM alone sealing and opening the same request and response with one long-lived key.

Rounds alternate baseline and enklave; medians are reported.

Usage: python benchmarks/channels.py [--seconds 12] [--rounds 5] [--bulk-mib 64] [--json]
"""

from __future__ import annotations

import json
import os
import platform
import socket
import ssl
import statistics
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# A sibling module: Python puts the directory of the script it runs first on sys.path.
from _harness import alternating_arguments, self_signed, signed_copy
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enklave import host
from enklave.attestation.policy import EnclavePolicy
from enklave.attestation.sources import CachingCollateralSource
from enklave.channels.ohttp import OhttpClient, OhttpServer, SymmetricSuite
from enklave.channels.ratls import AttestedCertificate, PeerVerifier, create_attested_certificate
from enklave.channels.relay import serve
from enklave.channels.tls import connect, server_context
from enklave.platform.simulated import SimulatedCollateralSource, SimulatedPlatform, simulated_root
from enklave.sgx.report import ReportBody

IDENTITY = ReportBody.build(mr_enclave=b"\x33" * 32, mr_signer=b"\x44" * 32, isv_prod_id=1, isv_svn=1)
SINK_ENCLAVE = Path(__file__).resolve().parent / "enclaves" / "tls_sink"
HPKE_SUITE = SymmetricSuite(kdf_id=0x0001, aead_id=0x0001)  # HKDF-SHA256, AES-128-GCM


def rate(function: Callable[[], object], seconds: float, *, warm_up: int = 5) -> float:
    """Calls per second over about ``seconds`` after ``warm_up`` calls."""
    for _ in range(warm_up):
        function()
    calls = 0
    start = time.perf_counter()
    while True:
        function()
        calls += 1
        now = time.perf_counter()
        if now - start >= seconds:
            return calls / (now - start)


def alternate(
    pairs: dict[str, Callable[[], object]], seconds: float, rounds: int, *, warm_up: int = 5
) -> dict[str, float]:
    """Median rate of each function over ``rounds`` alternating rounds sharing ``seconds``."""
    rates: dict[str, list[float]] = {name: [] for name in pairs}
    share = seconds / (rounds * len(pairs))
    for _ in range(rounds):
        for name, function in pairs.items():
            rates[name].append(rate(function, share, warm_up=warm_up))
    return {name: statistics.median(values) for name, values in rates.items()}


# -- handshakes -------------------------------------------------------------------------------------------------


def plain_server_context() -> ssl.SSLContext:
    """A self-signed P-256 certificate with the options ``server_context`` uses, loaded from a temporary file."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = self_signed(key, "plain TLS baseline")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.num_tickets = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "baseline.pem"
        made = AttestedCertificate(key, certificate)
        path.write_bytes(made.certificate_pem + made.private_key_pem())
        context.load_cert_chain(path)
    return context


@contextmanager
def tls_server(
    context: ssl.SSLContext, answer: Callable[[ssl.SSLSocket], bytes]
) -> Iterator[tuple[str, int]]:
    """A TLS server thread on loopback sending ``answer(connection)`` on each connection it accepts."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_connections() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                with context.wrap_socket(raw, server_side=True) as tls:
                    tls.sendall(answer(tls))
            except (OSError, ConnectionError):
                continue

    thread = threading.Thread(target=serve_connections, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()
    finally:
        listener.close()
        thread.join(timeout=5)


def ping(connection: ssl.SSLSocket) -> bytes:
    """The handshake servers' answer: one byte for one byte."""
    return b"!" if connection.recv(1) else b""


def plain_handshake(address: tuple[str, int]) -> Callable[[], None]:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.minimum_version = client.maximum_version = ssl.TLSVersion.TLSv1_3

    def once() -> None:
        with socket.create_connection(address) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = client.wrap_socket(raw)
            tls.sendall(b"?")
            if tls.recv(1) != b"!":
                raise RuntimeError("the plain server did not answer")
            tls.close()

    return once


def attested_handshake(address: tuple[str, int], verifier: PeerVerifier) -> Callable[[], None]:
    def once() -> None:
        with connect(address, verifier) as connection:
            connection.sendall(b"?")
            if connection.recv(1) != b"!":
                raise RuntimeError("the RA-TLS server did not answer")
            if connection.peer.mr_enclave != IDENTITY.mr_enclave:
                raise RuntimeError("the RA-TLS server is not the expected enclave")

    return once


def measure_handshakes(seconds: float, rounds: int) -> dict[str, float]:
    platform_ = SimulatedPlatform.launch(IDENTITY)
    attested = server_context(create_attested_certificate(platform_))
    verifier = PeerVerifier(
        collateral_source=CachingCollateralSource(SimulatedCollateralSource()),
        policy=EnclavePolicy(mr_enclave=bytes(IDENTITY.mr_enclave), allow_simulated=True),
        roots=[simulated_root()],
    )
    with (
        tls_server(plain_server_context(), ping) as plain_address,
        tls_server(attested, ping) as attested_address,
    ):
        return alternate(
            {
                "plain": plain_handshake(plain_address),
                "ra_tls": attested_handshake(attested_address, verifier),
            },
            seconds,
            rounds,
        )


# -- relay bulk -------------------------------------------------------------------------------------------------


def count_bytes(read: Callable[[int], bytes]) -> int:
    """The direct server's side of the sink protocol: 8-byte length, that many bytes; returns the count."""
    head = b""
    while len(head) < 8:
        chunk = read(8 - len(head))
        if not chunk:
            raise ConnectionError("the client left early")
        head += chunk
    (expected,) = struct.unpack(">Q", head)
    count = 0
    while count < expected:
        chunk = read(256 * 1024)
        if not chunk:
            raise ConnectionError("the client left early")
        count += len(chunk)
    return count


def count(connection: ssl.SSLSocket) -> bytes:
    """The direct sink's answer: how many bytes arrived, as the enclave's sink answers."""
    return struct.pack(">Q", count_bytes(connection.recv))


def send_bulk(address: tuple[str, int], payload: bytes) -> Callable[[], None]:
    """One TLS 1.3 connection sending ``payload`` to a sink and reading back its count."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.minimum_version = client.maximum_version = ssl.TLSVersion.TLSv1_3

    def once() -> None:
        with socket.create_connection(address) as raw, client.wrap_socket(raw) as tls:
            tls.sendall(struct.pack(">Q", len(payload)))
            tls.sendall(payload)
            answer = b""
            while len(answer) < 8:
                chunk = tls.recv(8 - len(answer))
                if not chunk:
                    raise ConnectionError("the sink closed early")
                answer += chunk
            if struct.unpack(">Q", answer)[0] != len(payload):
                raise RuntimeError("the sink counted another number of bytes")

    return once


def measure_relay(bulk_mib: int, seconds: float, rounds: int, home: Path) -> dict[str, float]:
    payload = os.urandom(bulk_mib << 20)
    bundle_path = signed_copy(SINK_ENCLAVE, home.parent)
    direct_context = server_context(create_attested_certificate(SimulatedPlatform.launch(IDENTITY)))
    with (
        tls_server(direct_context, count) as direct_address,
        host.load(bundle_path, mode="sim", home=home) as enclave,
        serve(enclave, "127.0.0.1", 0) as relay,
    ):
        rates = alternate(
            {
                "direct": send_bulk(direct_address, payload),
                "relay": send_bulk(("127.0.0.1", relay.port), payload),
            },
            seconds,
            rounds,
            warm_up=1,
        )
    return {name: value * len(payload) / 1e6 for name, value in rates.items()}


# -- HPKE -------------------------------------------------------------------------------------------------------


def hpke_round_trip(body: bytes) -> Callable[[], None]:
    limit = len(body) + 4096
    gateway = OhttpServer.generate(suites=(HPKE_SUITE,), max_message_size=limit)
    client = OhttpClient(gateway.key_config, suite=HPKE_SUITE, max_message_size=limit)

    def once() -> None:
        encapsulated, client_context = client.encapsulate_request(body)
        request, response_context = gateway.decapsulate_request(encapsulated)
        response = response_context.encapsulate_response(request)
        if len(client_context.decapsulate_response(response)) != len(body):
            raise RuntimeError("HPKE round trip lost bytes")

    return once


def aes_gcm_round_trip(body: bytes) -> Callable[[], None]:
    aead = AESGCM(AESGCM.generate_key(bit_length=128))

    def once() -> None:
        nonce = os.urandom(12)
        request = aead.decrypt(nonce, aead.encrypt(nonce, body, None), None)
        nonce = os.urandom(12)
        if len(aead.decrypt(nonce, aead.encrypt(nonce, request, None), None)) != len(body):
            raise RuntimeError("AES-GCM round trip lost bytes")

    return once


def measure_hpke(seconds: float, rounds: int) -> dict[str, float]:
    results: dict[str, float] = {}
    for label, size in (("1KiB", 1024), ("1MiB", 1 << 20)):
        body = os.urandom(size)
        measured = alternate(
            {"aes_gcm": aes_gcm_round_trip(body), "hpke": hpke_round_trip(body)}, seconds / 2, rounds
        )
        results.update({f"{name}_{label}": value for name, value in measured.items()})
    return results


# -- report -----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = alternating_arguments(__doc__, seconds=12.0, rounds=5)
    parser.add_argument("--bulk-mib", type=int, default=64, help="MiB sent per connection in the relay test")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="enklave-bench-") as tmp:
        home = Path(tmp) / "home"
        os.environ["ENKLAVE_HOME"] = str(home)
        handshakes = measure_handshakes(options.seconds, options.rounds)
        bulk = measure_relay(options.bulk_mib, options.seconds, options.rounds, home)
        hpke = measure_hpke(options.seconds, options.rounds)

    results = {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "plain_handshakes_per_s": round(handshakes["plain"], 1),
        "ra_tls_handshakes_per_s": round(handshakes["ra_tls"], 1),
        "handshake_time_ratio": round(handshakes["plain"] / handshakes["ra_tls"], 2),
    }
    results["direct_tls_mb_per_s"] = round(bulk["direct"], 1)
    results["relay_mb_per_s"] = round(bulk["relay"], 1)
    results["relay_ratio"] = round(bulk["relay"] / bulk["direct"], 2)
    for label in ("1KiB", "1MiB"):
        results[f"aes_gcm_{label}_per_s"] = round(hpke[f"aes_gcm_{label}"], 1)
        results[f"hpke_{label}_per_s"] = round(hpke[f"hpke_{label}"], 1)
        results[f"hpke_{label}_ratio"] = round(hpke[f"hpke_{label}"] / hpke[f"aes_gcm_{label}"], 2)
    if options.json:
        print(json.dumps(results, indent=2))
        return
    print(f"Python {results['python']} on {results['machine']}")
    print(f"{'':36} {'baseline':>12} {'enklave':>12} {'ratio':>7}")
    print(
        f"{'TLS 1.3 connections / s':36} {handshakes['plain']:12.0f} {handshakes['ra_tls']:12.0f}"
        f" {handshakes['ra_tls'] / handshakes['plain']:7.2f}"
        f"   (time ratio {results['handshake_time_ratio']}, target <= 2)"
    )
    print(
        f"{'bulk MB/s (direct TLS / host relay)':36} {bulk['direct']:12.0f} {bulk['relay']:12.0f}"
        f" {results['relay_ratio']:7.2f}   (target >= 0.8)"
    )
    for label in ("1KiB", "1MiB"):
        base, ours = hpke[f"aes_gcm_{label}"], hpke[f"hpke_{label}"]
        print(
            f"{'round trips / s, ' + label + ' (AES-GCM / HPKE)':36} {base:12.0f} {ours:12.0f} {ours / base:7.2f}"
        )


if __name__ == "__main__":
    main()
