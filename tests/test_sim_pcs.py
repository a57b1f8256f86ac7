"""The local PCS-compatible endpoint of the simulated platform: routes, errors, re-signing, and the real
``PcsCollateralSource`` against it (in process through Starlette's TestClient, and over a loopback uvicorn)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import uvicorn
from cryptography import x509

from enklave.attestation.collateral import QeIdentity, TcbInfo, parse_pem_chain
from enklave.attestation.evidence import collateral_request
from enklave.attestation.sources import HttpxTransport, PcsCollateralSource
from enklave.attestation.verify import verify_quote
from enklave.errors import CollateralUnavailable, PlatformError
from enklave.platform.simulated import SimulatedPlatform, platform_info, read_collateral, simulated_root
from enklave.platform.simulated.pcs import API_PREFIX, create_pcs_app
from enklave.sgx.quote import Quote
from enklave.sgx.report import ReportBody
from service_fixtures import TestClient  # an httpx.Client, which HttpxTransport can wrap

IDENTITY = ReportBody.build(mr_enclave=b"\x11" * 32, mr_signer=b"\x22" * 32, isv_prod_id=1, isv_svn=1)
NONCE = b"pcs test nonce"
T0 = datetime(2025, 5, 1, tzinfo=UTC)


@pytest.fixture
def quote(home: Path) -> bytes:
    return SimulatedPlatform.launch(IDENTITY, now=T0).get_quote(NONCE)


class Clock:
    """A settable clock for the endpoint."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + timedelta(hours=1))


@pytest.fixture
def client(quote: bytes, home: Path, clock: Clock) -> Iterator[TestClient]:
    with TestClient(create_pcs_app(home, clock=clock)) as test_client:
        yield test_client


def _fmspc() -> str:
    return platform_info().identity.fmspc.hex()


def test_tcb_info_route(client: TestClient) -> None:
    answer = client.get(f"{API_PREFIX}/tcb", params={"fmspc": _fmspc().upper()})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    info = TcbInfo.from_signed_json(answer.content)
    assert info == read_collateral().tcb_info
    chain = parse_pem_chain(unquote(answer.headers["TCB-Info-Issuer-Chain"]))
    assert chain == read_collateral().tcb_info_issuer_chain
    assert answer.headers["Request-ID"]
    # Lower-case FMSPC and update=early are accepted as by Intel.
    assert client.get(f"{API_PREFIX}/tcb", params={"fmspc": _fmspc(), "update": "early"}).status_code == 200


def test_qe_identity_and_crl_routes(client: TestClient) -> None:
    answer = client.get(f"{API_PREFIX}/qe/identity")
    assert answer.status_code == 200
    assert QeIdentity.from_signed_json(answer.content) == read_collateral().qe_identity
    assert "SGX-Enclave-Identity-Issuer-Chain" in answer.headers
    der = client.get(f"{API_PREFIX}/pckcrl", params={"ca": "platform", "encoding": "der"})
    assert der.status_code == 200
    assert x509.load_der_x509_crl(der.content) == read_collateral().pck_crl
    chain = parse_pem_chain(unquote(der.headers["SGX-PCK-CRL-Issuer-Chain"]))
    assert chain == read_collateral().pck_crl_issuer_chain
    pem = client.get(f"{API_PREFIX}/pckcrl", params={"ca": "platform"})
    assert pem.content.startswith(b"-----BEGIN X509 CRL-----")
    root = client.get(f"{API_PREFIX}/rootcacrl")
    assert x509.load_der_x509_crl(root.content) == read_collateral().root_ca_crl


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/tcb", {"fmspc": "000000000000"}, 404),
        ("/tcb", {}, 400),
        ("/tcb", {"fmspc": "00000000000"}, 400),
        ("/tcb", {"fmspc": "zz0000000000"}, 400),
        ("/tcb", {"fmspc": " 0000000000 "}, 400),
        ("/tcb", {"fmspc": "000000000000", "update": "never"}, 400),
        ("/tcb", {"fmspc": "000000000000", "extra": "1"}, 400),
        ("/pckcrl", {}, 400),
        ("/pckcrl", {"ca": "other"}, 400),
        ("/pckcrl", {"ca": "platform", "encoding": "xml"}, 400),
        ("/pckcrl", {"ca": "processor"}, 404),
        ("/qe/identity", {"update": "sometimes"}, 400),
        ("/rootcacrl", {"x": "y"}, 400),
        ("/pckcert", {}, 404),
        ("/../../etc/passwd", {}, 404),
    ],
)
def test_errors_are_json_with_intel_headers(
    client: TestClient, path: str, params: dict[str, str], status: int
) -> None:
    answer = client.get(API_PREFIX + path, params=params)
    assert answer.status_code == status
    body = answer.json()
    assert set(body) == {"error", "message"}
    assert answer.headers["Error-Code"] == body["error"]


def test_other_methods_are_refused(client: TestClient) -> None:
    answer = client.post(f"{API_PREFIX}/qe/identity")
    assert answer.status_code == 405
    assert answer.json()["error"] == "MethodNotAllowed"


def test_repeated_parameters_are_refused(client: TestClient) -> None:
    answer = client.get(f"{API_PREFIX}/tcb?fmspc={_fmspc()}&fmspc={_fmspc()}")
    assert answer.status_code == 400


def test_pcs_collateral_source_against_the_endpoint(client: TestClient, quote: bytes, clock: Clock) -> None:
    source = PcsCollateralSource("http://testserver", transport=HttpxTransport(client=client))
    request = collateral_request(Quote.from_bytes(quote))
    collateral = source.fetch(request.fmspc, request.ca)
    assert collateral == read_collateral()
    verified = verify_quote(quote, collateral, now=clock.now, roots=[simulated_root()])
    assert verified.simulated
    assert verified.report_data.startswith(NONCE)
    with pytest.raises(CollateralUnavailable, match="404"):
        source.fetch(request.fmspc, "processor")


def test_endpoint_resigns_stale_collateral(client: TestClient, quote: bytes, clock: Clock) -> None:
    before = read_collateral()
    clock.now = T0 + timedelta(days=45)
    source = PcsCollateralSource("http://testserver", transport=HttpxTransport(client=client))
    collateral = source.fetch(before.fmspc, "platform")
    assert collateral.tcb_info.issue_date == clock.now
    assert collateral.qe_identity.issue_date == clock.now
    assert collateral.pck_crl.last_update_utc == clock.now
    # The new set is stored for everyone, and it verifies at the new time where the old one has expired.
    assert read_collateral() == collateral
    assert verify_quote(quote, collateral, now=clock.now, roots=[simulated_root()]).simulated


def test_app_needs_a_provisioned_platform(home: Path) -> None:
    with pytest.raises(PlatformError, match="enklave sim init"):
        create_pcs_app(home)


@pytest.fixture
def loopback_pcs(quote: bytes, home: Path) -> Iterator[str]:
    """The endpoint served by uvicorn on an ephemeral port of 127.0.0.1, stopped at teardown."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_pcs_app(home), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sim-pcs", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the loopback PCS did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_pcs_collateral_source_over_loopback_http(loopback_pcs: str, quote: bytes) -> None:
    request = collateral_request(Quote.from_bytes(quote))
    with HttpxTransport(timeout=5) as transport:
        collateral = PcsCollateralSource(loopback_pcs, transport=transport).fetch(request.fmspc, request.ca)
    # This server runs on the real clock, so it re-signed the collateral of T0 at the current time.
    now = datetime.now(UTC)
    assert collateral.tcb_info.issue_date <= now < collateral.tcb_info.next_update
    verified = verify_quote(quote, collateral, now=now, roots=[simulated_root()])
    assert verified.simulated
    assert verified.fmspc == platform_info().identity.fmspc


def test_cli_sim_pcs_serves_until_stopped(tmp_path: Path) -> None:
    # Find a free loopback port; the tiny race with another process taking it first only makes the test fail.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ENKLAVE_HOME": str(tmp_path)}
    command = [sys.executable, "-m", "enklave", "sim", "pcs", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}{API_PREFIX}/qe/identity"
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"enklave sim pcs did not serve: {process.poll()}")
                time.sleep(0.1)
        assert answer.status_code == 200
        # The command provisioned the platform it serves.
        assert QeIdentity.from_signed_json(answer.content) == read_collateral(tmp_path).qe_identity
    finally:
        process.terminate()
        process.communicate(timeout=20)
