"""``enklave collateral fetch`` against a real HTTP server on 127.0.0.1 that imitates Intel PCS v4 / a PCCS.

The server answers from the real collateral in tests/assets/phala-dcap-qvl (see tests/assets/README.md), in
the shapes the PCS v4 API uses: DER CRLs, ``{"tcbInfo": ..., "signature": ...}`` bodies and URL-encoded PEM
issuer chains in headers. It serves only the paths below (anything else answers 404), binds an ephemeral port on
the loopback interface and is shut down by its fixture, so no test needs the internet.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from conftest import ASSETS
from enklave.attestation.collateral import QuoteCollateral
from enklave.cli import main
from enklave.cli._errors import EXIT_BAD_INPUT, EXIT_IO, EXIT_OK

REAL = ASSETS / "phala-dcap-qvl"
QUOTE = str(REAL / "sgx_quote")
COLLATERAL_JSON = REAL / "sgx_quote_collateral.json"
FMSPC = "00a067110000"
API = "/sgx/certification/v4"
TIMEOUT = ["--timeout", "5"]

Answer = tuple[int, dict[str, str], bytes]


def _pcs_answers(document: dict[str, str], root_crl_encoding: str) -> dict[str, Answer]:
    """What PCS v4 (or a PCCS) answers for each path, built from dcap-qvl's collateral JSON."""
    root_crl = bytes.fromhex(document["root_ca_crl"])
    return {
        f"{API}/pckcrl": (
            200,
            {"SGX-PCK-CRL-Issuer-Chain": quote(document["pck_crl_issuer_chain"])},
            bytes.fromhex(document["pck_crl"]),
        ),
        f"{API}/tcb": (
            200,
            {"TCB-Info-Issuer-Chain": quote(document["tcb_info_issuer_chain"])},
            f'{{"tcbInfo":{document["tcb_info"]},"signature":"{document["tcb_info_signature"]}"}}'.encode(),
        ),
        f"{API}/qe/identity": (
            200,
            {"SGX-Enclave-Identity-Issuer-Chain": quote(document["qe_identity_issuer_chain"])},
            f'{{"enclaveIdentity":{document["qe_identity"]},"signature":"{document["qe_identity_signature"]}"}}'.encode(),
        ),
        # A PCCS that is not Intel's serves the root CA CRL itself; some versions answer hex, Intel answers DER.
        f"{API}/rootcacrl": (200, {}, root_crl.hex().encode() if root_crl_encoding == "hex" else root_crl),
    }


def _query_matches(path: str, query: dict[str, list[str]]) -> bool:
    if path == f"{API}/pckcrl":
        return query == {"ca": ["processor"], "encoding": ["der"]}
    if path == f"{API}/tcb":
        return [value.lower() for value in query.get("fmspc", [])] == [FMSPC] and set(query) == {"fmspc"}
    return not query


@dataclass
class FakePcs:
    """The state of one fake PCS: its answers (tests may replace some), the requests and handler errors seen."""

    answers: dict[str, Answer]
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    url: str = ""


def _handler_for(pcs: FakePcs) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            pcs.requests.append(self.path)
            parts = urlsplit(self.path)
            answer = pcs.answers.get(parts.path)
            if answer is None or not _query_matches(parts.path, parse_qs(parts.query)):
                answer = (404, {"Content-Type": "application/json"}, b'{"error":"not found"}')
            status, headers, body = answer
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output clean: no access log on standard error."""

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    pcs: FakePcs

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Recorded instead of printed, and checked when the fixture tears the server down.
        self.pcs.errors.append(f"handler error for {client_address}")


@pytest.fixture(params=["der", "hex"])
def pcs(request: pytest.FixtureRequest) -> Iterator[FakePcs]:
    state = FakePcs(_pcs_answers(json.loads(COLLATERAL_JSON.read_text()), request.param))
    server = _QuietServer(("127.0.0.1", 0), _handler_for(state))
    server.pcs = state
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    # A short poll interval, so that shutdown() returns quickly at teardown.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-pcs", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert not state.errors


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def expected() -> QuoteCollateral:
    return QuoteCollateral.from_json(COLLATERAL_JSON.read_bytes())


def test_fetch_by_quote_then_verify(capsys: pytest.CaptureFixture[str], pcs: FakePcs, tmp_path: Path) -> None:
    output = tmp_path / "c.json"
    code, out, err = run(capsys, "collateral", "fetch", "--quote", QUOTE, "--pcs-url", pcs.url, *TIMEOUT,
                         "-o", str(output))  # fmt: skip
    assert code == EXIT_OK, err
    assert out == ""
    assert f"FMSPC {FMSPC}" in err
    assert QuoteCollateral.from_json(output.read_bytes()) == expected()
    # The root CA CRL came from the PCCS itself, not from Intel's certificate server.
    assert f"{API}/rootcacrl" in pcs.requests
    assert list(tmp_path.iterdir()) == [output]

    code, _, err = run(capsys, "quote", "verify", QUOTE, "--collateral", str(output), "--at", "2025-07-01T00:00:00Z",
                       "--accept-status", "ConfigurationAndSWHardeningNeeded")  # fmt: skip
    assert code == EXIT_OK, err


def test_fetch_by_fmspc_to_standard_output(capsys: pytest.CaptureFixture[str], pcs: FakePcs) -> None:
    code, out, err = run(capsys, "collateral", "fetch", "--fmspc", FMSPC.upper(), "--ca", "processor",
                         "--pcs-url", pcs.url, *TIMEOUT, "-o", "-")  # fmt: skip
    assert code == EXIT_OK, err
    assert QuoteCollateral.from_json(out) == expected()


def _assert_failed(code: int, expected_code: int, out: str, err: str, directory: Path) -> None:
    assert code == expected_code, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("enklave: error: "), err
    # Nothing written, not even a temporary file.
    assert list(directory.iterdir()) == []


@pytest.mark.parametrize("status", [404, 500])
def test_an_error_status_is_an_io_error(
    capsys: pytest.CaptureFixture[str], pcs: FakePcs, tmp_path: Path, status: int
) -> None:
    pcs.answers[f"{API}/tcb"] = (status, {"Error-Code": "Unavailable"}, b"")
    code, out, err = run(capsys, "collateral", "fetch", "--quote", QUOTE, "--pcs-url", pcs.url, *TIMEOUT,
                         "-o", str(tmp_path / "c.json"))  # fmt: skip
    _assert_failed(code, EXIT_IO, out, err, tmp_path)
    assert f"HTTP {status}" in err


@pytest.mark.parametrize(
    "body", [b"", b"{not json", b'{"tcbInfo":{"id":"SGX"},"signature":"00"}', b"\xff" * 64]
)  # fmt: skip
def test_a_malformed_body_is_bad_input(
    capsys: pytest.CaptureFixture[str], pcs: FakePcs, tmp_path: Path, body: bytes
) -> None:
    status, headers, _ = pcs.answers[f"{API}/tcb"]
    pcs.answers[f"{API}/tcb"] = (status, headers, body)
    code, out, err = run(capsys, "collateral", "fetch", "--quote", QUOTE, "--pcs-url", pcs.url, *TIMEOUT,
                         "-o", str(tmp_path / "c.json"))  # fmt: skip
    _assert_failed(code, EXIT_BAD_INPUT, out, err, tmp_path)


def test_a_missing_issuer_chain_header_is_bad_input(
    capsys: pytest.CaptureFixture[str], pcs: FakePcs, tmp_path: Path
) -> None:
    _, _, body = pcs.answers[f"{API}/qe/identity"]
    pcs.answers[f"{API}/qe/identity"] = (200, {}, body)
    code, out, err = run(capsys, "collateral", "fetch", "--quote", QUOTE, "--pcs-url", pcs.url, *TIMEOUT,
                         "-o", str(tmp_path / "c.json"))  # fmt: skip
    _assert_failed(code, EXIT_BAD_INPUT, out, err, tmp_path)
    assert "SGX-Enclave-Identity-Issuer-Chain" in err


def test_a_failed_fetch_leaves_an_existing_file_unchanged(
    capsys: pytest.CaptureFixture[str], pcs: FakePcs, tmp_path: Path
) -> None:
    output = tmp_path / "c.json"
    output.write_text("previous")
    del pcs.answers[f"{API}/rootcacrl"]
    code, _, err = run(capsys, "collateral", "fetch", "--quote", QUOTE, "--pcs-url", pcs.url, *TIMEOUT,
                       "-o", str(output))  # fmt: skip
    assert code == EXIT_IO, err
    assert output.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [output]


def test_an_unreachable_service_is_an_io_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out, err = run(capsys, "collateral", "fetch", "--quote", QUOTE, "--pcs-url", f"http://127.0.0.1:{port}",
                         *TIMEOUT, "-o", str(tmp_path / "c.json"))  # fmt: skip
    _assert_failed(code, EXIT_IO, out, err, tmp_path)
