"""Interoperability: Microsoft's own SDK, ``azure-security-attestation``, against a local enklave service.

The service runs over HTTPS on an ephemeral port of 127.0.0.1 (uvicorn, a throwaway CA made here), allows
simulated evidence, and has an admin token. The SDK attests simulated SGX quotes and Open Enclave reports and
validates enklave's tokens with its own code (signature against the service's ``/certs``, lifetime, issuer);
the tests assert on what the SDK parsed out of them.

Two facts about the SDK shape this module:

* Its only release (1.0.0) speaks api-version ``2020-10-01``, which the service accepts next to
  ``2022-08-01`` (same bodies and claims for these operations; 2022-08-01 only adds the request nonce). The SDK
  runs unmodified: a pipeline policy only records the requests it sends.
* It always sends ``Authorization: Bearer`` from a ``TokenCredential`` (azure-core refuses that over plain
  HTTP, hence HTTPS). The attest routes ignore it; the policy routes take the admin token from it, so the
  administration client works with a credential that hands out the admin token.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.security.attestation import (
    AttestationAdministrationClient,
    AttestationClient,
    AttestationToken,
    AttestationTokenValidationException,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from enklave.platform.simulated import SimulatedPlatform
from enklave.services.attestation import DEFAULT_SGX_POLICY, policy_hash
from enklave.services.attestation.app import create_app
from enklave.services.attestation.service import AttestationService, ServiceConfig
from enklave.services.storage import SQLiteStorage
from enklave.sgx.oe import wrap_quote_legacy
from enklave.sgx.report import ReportBody
from service_fixtures import enklave_home, loopback_socket, serving

MR_ENCLAVE = b"\x31" * 32
MR_SIGNER = b"\x42" * 32
IDENTITY = ReportBody.build(mr_enclave=MR_ENCLAVE, mr_signer=MR_SIGNER, isv_prod_id=7, isv_svn=3)
ADMIN = "azure-sdk-admin-token-0123456789"
RUNTIME = {"jwk": {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "BBBB"}}
ISSUE_CUSTOM = (
    "version=1.0; authorizationrules { => permit(); };"
    ' issuancerules { => issue(type="azure-sdk", value="was-here"); };'
)
TIMEOUTS: dict[str, Any] = {"connection_timeout": 10, "read_timeout": 60, "retry_total": 0}


class _StaticCredential:
    """A TokenCredential that hands out a fixed bearer token (the SDK insists on one)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


class _ApiVersion(SansIOHTTPPolicy):
    """Records the URLs of the SDK's requests (to show which api-version it speaks)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def on_request(self, request: PipelineRequest) -> None:
        self.seen.append(request.http_request.url)


class _Tampering(RequestsTransport):
    """A transport that flips one character of the claims of every attestation token it receives."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        response = super().send(request, **kwargs)
        if "/attest/" in request.url and response.status_code == 200:
            token = json.loads(response.internal_response.content)["token"]
            header, claims, signature = token.split(".")
            # Change a character inside the claims segment (not its last one, whose low bits may be padding).
            flipped = claims[:10] + ("A" if claims[10] != "A" else "B") + claims[11:]
            tampered = json.dumps({"token": f"{header}.{flipped}.{signature}"}).encode()
            response.internal_response._content = tampered
        return response


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    ca: Path
    service: AttestationService


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost, as PEM files."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("enklave interop test CA"))
        .issuer_name(_name("enklave interop test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_path, cert_path, key_path


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from enklave_home(tmp_path_factory, "azure-interop")


@pytest.fixture(scope="module")
def platform(home: Path) -> SimulatedPlatform:
    return SimulatedPlatform.launch(IDENTITY, home=home)


@pytest.fixture(scope="module")
def endpoint(home: Path) -> Iterator[Endpoint]:
    """The service over HTTPS on 127.0.0.1; its issuer is the URL the SDK is given."""
    ca, cert, key = _write_tls(home)
    sock = loopback_socket()
    url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    storage = SQLiteStorage(home / "maa.db")
    config = ServiceConfig(
        data_dir=home / "maa", base_url=url, mode="sim", home=home, allow_simulated=True, admin_token=ADMIN
    )
    try:
        with AttestationService(config, storage) as service:
            app = create_app(service)
            options = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
            with serving(app, "HTTPS attestation service", sock=sock, scheme="https", **options) as served:
                assert served == url
                yield Endpoint(url, ca, service)
    finally:
        sock.close()
        storage.close()


def _client(endpoint: Endpoint, **options: Any) -> tuple[AttestationClient, _ApiVersion, _StaticCredential]:
    versions = _ApiVersion()
    credential = _StaticCredential("not-an-aad-token")
    client = AttestationClient(
        endpoint.url,
        credential,
        connection_verify=str(endpoint.ca),
        per_call_policies=[versions],
        validate_issuer=True,
        issuer=endpoint.url,
        **TIMEOUTS,
        **options,
    )
    return client, versions, credential


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _runtime_bytes() -> bytes:
    return json.dumps(RUNTIME, separators=(",", ":")).encode()


def test_the_sdk_attests_a_simulated_sgx_quote_and_validates_the_token(
    endpoint: Endpoint, platform: SimulatedPlatform
) -> None:
    runtime = _runtime_bytes()
    quote = platform.get_quote(hashlib.sha256(runtime).digest())
    client, versions, credential = _client(endpoint)
    with client:
        result, token = client.attest_sgx_enclave(quote, runtime_json=runtime)
    # The SDK checked the RS256 signature against /certs (by kid), the lifetime and the issuer.
    assert token.algorithm == "RS256"
    assert token.key_id == endpoint.service.kid
    assert token.key_url == f"{endpoint.url}/certs"
    assert result.issuer == endpoint.url
    assert result.mr_enclave == MR_ENCLAVE.hex()
    assert result.mr_signer == MR_SIGNER.hex()
    assert result.product_id == 7
    assert result.svn == 3
    assert result.is_debuggable is False
    assert result.verifier_type == "sgx"
    assert result.enclave_held_data == runtime
    assert result.runtime_claims == RUNTIME
    # x-ms-policy-hash is SHA256(BASE64URL(policy)); the SDK hands it back decoded.
    assert result.policy_hash == hashlib.sha256(b64url(DEFAULT_SGX_POLICY.encode()).encode()).digest()
    assert result.sgx_collateral
    assert result.unique_id
    # The raw claims as the SDK decoded them: enklave's own marker for simulated evidence is there.
    claims = json.loads(token.body_bytes)
    assert claims["x-enklave-simulated"] is True
    assert claims["x-ms-policy-hash"] == policy_hash(DEFAULT_SGX_POLICY)
    # The SDK spoke 2020-10-01 and sent its bearer token, which the attest route ignores.
    assert any("api-version=2020-10-01" in url for url in versions.seen)
    assert credential.scopes


def test_the_sdk_attests_an_open_enclave_report_with_binary_runtime_data(
    endpoint: Endpoint, platform: SimulatedPlatform
) -> None:
    runtime = b"\x00binary runtime data\xff"
    quote = platform.get_quote(hashlib.sha256(runtime).digest())
    client, _versions, _credential = _client(endpoint)
    with client:
        result, token = client.attest_open_enclave(wrap_quote_legacy(quote), runtime_data=runtime)
    assert token.key_id == endpoint.service.kid
    assert result.issuer == endpoint.url
    assert result.mr_enclave == MR_ENCLAVE.hex()
    assert result.mr_signer == MR_SIGNER.hex()
    assert result.product_id == 7
    assert result.svn == 3
    assert result.enclave_held_data == runtime
    # Binary runtime data is held, not parsed into runtime claims.
    assert result.runtime_claims is None
    assert result.verifier_type == "sgx"


def test_runtime_data_the_quote_does_not_bind_is_refused_through_the_sdk(
    endpoint: Endpoint, platform: SimulatedPlatform
) -> None:
    quote = platform.get_quote(hashlib.sha256(_runtime_bytes()).digest())
    client, _versions, _credential = _client(endpoint)
    with client, pytest.raises(HttpResponseError) as caught:
        client.attest_sgx_enclave(quote, runtime_json=b'{"jwk": "another key"}')
    assert caught.value.status_code == 400
    assert "RuntimeDataMismatch" in str(caught.value)


def test_the_sdk_refuses_a_token_tampered_in_transit(endpoint: Endpoint, platform: SimulatedPlatform) -> None:
    quote = platform.get_quote(bytes(32))
    transport = _Tampering(connection_verify=str(endpoint.ca))
    client, _versions, _credential = _client(endpoint, transport=transport)
    with client, pytest.raises(AttestationTokenValidationException, match="signature"):
        client.attest_sgx_enclave(quote)


def test_the_sdk_refuses_a_token_from_another_issuer(endpoint: Endpoint, platform: SimulatedPlatform) -> None:
    quote = platform.get_quote(bytes(32))
    client, _versions, _credential = _client(endpoint)
    with client, pytest.raises(AttestationTokenValidationException, match="issuer"):
        client.attest_sgx_enclave(quote, issuer="https://someone-else.attest.azure.net")


def test_the_sdk_reads_the_metadata_and_the_signing_certificates(endpoint: Endpoint) -> None:
    client, _versions, _credential = _client(endpoint)
    with client:
        metadata = client.get_open_id_metadata()
        signers = client.get_signing_certificates()
    assert metadata["issuer"] == endpoint.url
    assert metadata["jwks_uri"] == f"{endpoint.url}/certs"
    assert [signer.key_id for signer in signers] == [endpoint.service.kid]
    pem = endpoint.service.certificate.public_bytes(serialization.Encoding.PEM).decode()
    assert signers[0].certificates[0].split() == pem.split()


def test_the_sdk_administration_client_gets_sets_and_resets_policies(
    endpoint: Endpoint, platform: SimulatedPlatform
) -> None:
    options: dict[str, Any] = {
        "connection_verify": str(endpoint.ca),
        "per_call_policies": [_ApiVersion()],
        "validate_issuer": True,
        "issuer": endpoint.url,
        **TIMEOUTS,
    }
    admin = AttestationAdministrationClient(endpoint.url, _StaticCredential(ADMIN), **options)
    stranger = AttestationAdministrationClient(endpoint.url, _StaticCredential("x" * 32), **options)
    quote = platform.get_quote(bytes(32))
    with admin, stranger:
        policy, _token = admin.get_policy("SgxEnclave")
        assert policy == DEFAULT_SGX_POLICY
        # A caller without the admin token cannot change it.
        with pytest.raises(HttpResponseError) as caught:
            stranger.set_policy("SgxEnclave", ISSUE_CUSTOM)
        assert caught.value.status_code == 403
        try:
            # The SDK uploads the policy as an unsigned JWS; the service takes the admin bearer token.
            result, _token = admin.set_policy("SgxEnclave", ISSUE_CUSTOM)
            assert result.policy_resolution == "Updated"
            # The hash of the JWS that the SDK uploaded, computed the way Microsoft's samples do.
            body = {"AttestationPolicy": b64url(ISSUE_CUSTOM.encode())}
            uploaded = AttestationToken(body=body).to_jwt_string()
            assert result.policy_token_hash == hashlib.sha256(uploaded.encode()).digest()
            assert admin.get_policy("SgxEnclave")[0] == ISSUE_CUSTOM
            client, _versions, _credential = _client(endpoint)
            with client:
                _result, token = client.attest_sgx_enclave(quote)
            assert json.loads(token.body_bytes)["azure-sdk"] == "was-here"
        finally:
            reset, _token = admin.reset_policy("SgxEnclave")
        assert reset.policy_resolution == "Removed"
        assert admin.get_policy("SgxEnclave")[0] == DEFAULT_SGX_POLICY
