"""TlsEngine: TLS 1.3 on memory buffers, appraising the peer before any application data, mutual RA-TLS."""

from __future__ import annotations

from pathlib import Path

import pytest

from certificates import simulated_verifier
from enklave.channels.engine import EngineState, TlsEngine
from enklave.channels.ratls import AttestedCertificate, create_attested_certificate
from enklave.errors import BindingError, ChannelError, PolicyError, UsageError
from enklave.platform.simulated import SimulatedPlatform
from enklave.sgx.report import ReportBody

SERVER_MR = bytes(range(32))
CLIENT_MR = bytes([7]) * 32


@pytest.fixture
def certificates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, AttestedCertificate]:
    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path))
    made = {}
    for name, mr in (("server", SERVER_MR), ("client", CLIENT_MR)):
        platform = SimulatedPlatform.launch(
            ReportBody.build(mr_enclave=mr, mr_signer=b"\x5a" * 32, isv_svn=2)
        )
        made[name] = create_attested_certificate(platform, nonce=b"n-" + name.encode())
    return made


def _run(server: TlsEngine, client: TlsEngine) -> None:
    """Exchange records until both handshakes finish; errors from either side propagate."""
    for _ in range(8):
        done = []
        for side, other in ((client, server), (server, client)):
            try:
                done.append(side.handshake())
            finally:
                other.receive_records(side.pending_records())
        if all(done):
            return
    raise AssertionError("the handshake did not finish")


def test_server_authenticated_channel_carries_data_both_ways(
    certificates: dict[str, AttestedCertificate],
) -> None:
    server = TlsEngine.server(certificates["server"])
    client = TlsEngine.client(simulated_verifier(SERVER_MR), nonce=b"n-server")
    _run(server, client)
    assert (
        client.peer is not None and client.peer.mr_enclave == SERVER_MR and client.peer.nonce == b"n-server"
    )
    assert server.peer is None

    client.write(b"request")
    records = client.pending_records()
    assert b"request" not in records
    server.receive_records(records)
    assert server.read() == b"request"
    server.write(b"response" * 10_000)
    client.receive_records(server.pending_records())
    received = b""
    while chunk := client.read():
        received += chunk
    assert received == b"response" * 10_000

    client.close()
    server.receive_records(client.pending_records())
    assert server.read() == b"" and server.state is EngineState.CLOSED
    with pytest.raises(ChannelError):
        client.write(b"after close")


def test_mutual_ra_tls_verifies_both_enclaves(certificates: dict[str, AttestedCertificate]) -> None:
    server = TlsEngine.server(
        certificates["server"], verifier=simulated_verifier(CLIENT_MR), nonce=b"n-client"
    )
    client = TlsEngine.client(simulated_verifier(SERVER_MR), certificate=certificates["client"])
    _run(server, client)
    assert server.peer is not None and server.peer.mr_enclave == CLIENT_MR
    assert client.peer is not None and client.peer.mr_enclave == SERVER_MR


def test_server_refuses_a_client_of_another_enclave_before_reading_its_data(
    certificates: dict[str, AttestedCertificate],
) -> None:
    server = TlsEngine.server(certificates["server"], verifier=simulated_verifier(SERVER_MR))
    client = TlsEngine.client(simulated_verifier(SERVER_MR), certificate=certificates["client"])
    # The client finishes first in TLS 1.3 and may send data at once; the server must not hand it out.
    client.handshake()
    server.receive_records(client.pending_records())
    server.handshake()
    client.receive_records(server.pending_records())
    assert client.handshake()
    client.write(b"early application data")
    server.receive_records(client.pending_records())
    with pytest.raises(PolicyError):
        server.handshake()
    assert server.state is EngineState.FAILED and server.peer is None
    with pytest.raises(ChannelError):
        server.read()


def test_server_requires_a_client_certificate_when_it_has_a_verifier(
    certificates: dict[str, AttestedCertificate],
) -> None:
    server = TlsEngine.server(certificates["server"], verifier=simulated_verifier(CLIENT_MR))
    client = TlsEngine.client(simulated_verifier(SERVER_MR))
    with pytest.raises(ChannelError, match="certificate"):
        _run(server, client)


def test_client_refuses_another_enclave_and_a_stale_nonce(
    certificates: dict[str, AttestedCertificate],
) -> None:
    with pytest.raises(PolicyError):
        _run(TlsEngine.server(certificates["client"]), TlsEngine.client(simulated_verifier(SERVER_MR)))
    client = TlsEngine.client(simulated_verifier(SERVER_MR), nonce=b"another nonce")
    with pytest.raises(BindingError):
        _run(TlsEngine.server(certificates["server"]), client)
    assert client.state is EngineState.FAILED
    with pytest.raises(ChannelError):
        client.write(b"secret")


def test_no_application_data_before_the_handshake(certificates: dict[str, AttestedCertificate]) -> None:
    client = TlsEngine.client(simulated_verifier(SERVER_MR))
    with pytest.raises(ChannelError, match="handshake"):
        client.write(b"too early")
    with pytest.raises(ChannelError, match="handshake"):
        client.read()


def test_tampered_records_fail_the_connection(certificates: dict[str, AttestedCertificate]) -> None:
    server = TlsEngine.server(certificates["server"])
    client = TlsEngine.client(simulated_verifier(SERVER_MR))
    _run(server, client)
    client.write(b"x" * 100)
    records = bytearray(client.pending_records())
    records[-5] ^= 1
    server.receive_records(bytes(records))
    with pytest.raises(ChannelError):
        server.read()
    assert server.state is EngineState.FAILED


def test_garbage_instead_of_a_handshake_is_a_channel_error(
    certificates: dict[str, AttestedCertificate],
) -> None:
    server = TlsEngine.server(certificates["server"])
    server.receive_records(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ChannelError):
        server.handshake()
    with pytest.raises(ChannelError):
        server.handshake()


def test_client_needs_a_verifier(certificates: dict[str, AttestedCertificate]) -> None:
    with pytest.raises(UsageError):
        TlsEngine.client(None)  # type: ignore[arg-type]
