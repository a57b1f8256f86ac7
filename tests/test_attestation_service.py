"""The attestation service end to end: its enclave, the MAA REST API, the client, and restarts.

One service runs for the module (simulated evidence allowed, an admin token configured), served in process
through Starlette's TestClient and once over a loopback uvicorn; a second one with the defaults shows what is
refused when nothing is configured. Quotes come from the simulated platform in the test's ENKLAVE_HOME.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enklave.attestation._transport import HttpxTransport
from enklave.attestation.evidence import collateral_request
from enklave.attestation.policy import EnclavePolicy
from enklave.attestation.sources import SERVICE_MAX_AGE, CachingCollateralSource
from enklave.attestation.tokens import HttpJwksSource, StaticJwksSource, TokenVerifier
from enklave.attestation.verify import verify_quote
from enklave.errors import (
    BindingError,
    InvalidPolicy,
    PolicyError,
    SignatureError,
    TransportError,
    UsageError,
    VerificationError,
)
from enklave.platform.simulated import SimulatedCollateralSource, SimulatedPlatform, simulated_root
from enklave.services.attestation import DEFAULT_SGX_POLICY, policy_hash
from enklave.services.attestation.app import create_app
from enklave.services.attestation.client import AttestationClient
from enklave.services.attestation.service import (
    SERVICE_QUOTE_OID,
    AttestationService,
    ServiceConfig,
)
from enklave.services.storage import SQLiteStorage, Storage, open_storage
from enklave.sgx.oe import wrap_quote_legacy
from enklave.sgx.quote import Quote
from enklave.sgx.report import ReportBody
from service_fixtures import TestClient, enklave_home, serving

if TYPE_CHECKING:
    from postgres_server import RunningPostgres

# The session's PostgreSQL server and its per-test databases, shared with tests/test_storage.py.
pytest_plugins = ["postgres_server"]

IDENTITY = ReportBody.build(mr_enclave=b"\x11" * 32, mr_signer=b"\x22" * 32, isv_prod_id=9, isv_svn=4)
ADMIN = "admin-token-0123456789abcdef"
BASE = "http://testserver"
V = "?api-version=2022-08-01"
RUNTIME = {"jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}
DENY_ALL = "version=1.0; authorizationrules { => deny(); };"
ISSUE_CUSTOM = (
    "version=1.0; authorizationrules { => permit(); };"
    ' issuancerules { => issue(type="custom", value="yes"); };'
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claims_of(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def header_of(token: str) -> dict[str, object]:
    part = token.split(".", maxsplit=1)[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from enklave_home(tmp_path_factory, "maa-home")


@pytest.fixture(scope="module")
def platform(home: Path) -> SimulatedPlatform:
    return SimulatedPlatform.launch(IDENTITY, home=home)


@pytest.fixture(scope="module")
def runtime_bytes() -> bytes:
    return json.dumps(RUNTIME, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def quote(platform: SimulatedPlatform, runtime_bytes: bytes) -> bytes:
    return platform.get_quote(hashlib.sha256(runtime_bytes).digest())


def _config(home: Path, name: str, **options: object) -> ServiceConfig:
    return ServiceConfig(data_dir=home / name, base_url=BASE, mode="sim", home=home, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def storage(home: Path) -> Iterator[SQLiteStorage]:
    db = SQLiteStorage(home / "maa.db")
    yield db
    db.close()


@pytest.fixture(scope="module")
def service(home: Path, storage: SQLiteStorage) -> Iterator[AttestationService]:
    with AttestationService(
        _config(home, "maa", allow_simulated=True, admin_token=ADMIN), storage
    ) as started:
        yield started


@pytest.fixture(scope="module")
def http(service: AttestationService) -> Iterator[TestClient]:
    with TestClient(create_app(service), base_url=BASE, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def client(http: TestClient) -> AttestationClient:
    return AttestationClient(BASE, client=http)


@pytest.fixture(scope="module")
def strict_service(home: Path) -> Iterator[tuple[AttestationService, TestClient]]:
    """Defaults: simulated evidence refused, no admin token (policy management disabled).

    The host is handed the simulated collateral (no network in tests): the refusal comes from the enclave.
    """
    db = SQLiteStorage(home / "strict.db")
    config = _config(home, "strict", collateral_source=SimulatedCollateralSource(home))
    with (
        AttestationService(config, db) as started,
        TestClient(create_app(started), base_url=BASE, raise_server_exceptions=False) as http,
    ):
        yield started, http
    db.close()


@pytest.fixture
def reset_policy(client: AttestationClient) -> Iterator[None]:
    yield
    client.reset_policy("SgxEnclave", ADMIN)


def _verifier(service: AttestationService) -> TokenVerifier:
    return TokenVerifier(BASE, StaticJwksSource(service.certs().body))


# -- attestation ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loopback(service: AttestationService) -> Iterator[str]:
    """The same service over uvicorn on an ephemeral port of 127.0.0.1 (its issuer stays BASE)."""
    with serving(create_app(service), "attestation service") as url:
        yield url


def test_attest_a_simulated_quote_over_http_and_verify_the_token(
    loopback: str, quote: bytes, runtime_bytes: bytes
) -> None:
    with AttestationClient(loopback, timeout=30) as remote:
        token = remote.attest_sgx(quote, runtime_json=RUNTIME, nonce="nonce-1")
        metadata = remote.openid_metadata()
    assert metadata["issuer"] == BASE
    assert metadata["jwks_uri"] == f"{BASE}/certs"
    # The relying party fetches the JWKS from /certs itself.
    with HttpxTransport(timeout=10) as transport:
        verifier = TokenVerifier(BASE, HttpJwksSource(f"{loopback}/certs", transport))
        verified = verifier.verify(token, nonce="nonce-1")
    claims = verified.claims
    assert claims["x-ms-sgx-mrenclave"] == (b"\x11" * 32).hex()
    assert claims["x-ms-sgx-mrsigner"] == (b"\x22" * 32).hex()
    assert claims["x-ms-sgx-product-id"] == 9
    assert claims["x-ms-sgx-svn"] == 4
    assert claims["x-ms-sgx-ehd"] == b64url(runtime_bytes)
    assert claims["x-ms-runtime"] == RUNTIME
    assert claims["x-enklave-simulated"] is True
    assert claims["x-ms-policy-hash"] == policy_hash(DEFAULT_SGX_POLICY)
    # The default policy's issuance rules ran.
    assert claims["sgx-mrenclave"] == (b"\x11" * 32).hex()
    assert claims["tee"] == "sgx"
    assert header_of(token)["jku"] == f"{BASE}/certs"
    EnclavePolicy(mr_enclave=b"\x11" * 32, allow_simulated=True).appraise(verified)
    with pytest.raises(PolicyError):
        EnclavePolicy(mr_enclave=b"\x11" * 32).appraise(verified)


def test_binary_runtime_data_and_open_enclave_reports(
    client: AttestationClient, service: AttestationService, quote: bytes, runtime_bytes: bytes
) -> None:
    token = client.attest_open_enclave(wrap_quote_legacy(quote), runtime_data=runtime_bytes)
    claims = _verifier(service).verify(token).claims
    assert claims["x-ms-sgx-ehd"] == b64url(runtime_bytes)
    assert "x-ms-runtime" not in claims
    assert claims["x-ms-sgx-mrenclave"] == (b"\x11" * 32).hex()


def test_runtime_data_that_the_quote_does_not_bind_is_refused(
    client: AttestationClient, http: TestClient, quote: bytes
) -> None:
    with pytest.raises(BindingError, match="RuntimeDataMismatch"):
        client.attest_sgx(quote, runtime_json={"jwk": "another key"})
    response = http.post(f"/attest/SgxEnclave{V}", json={"quote": b64url(quote), "runtimeData": {
        "data": b64url(b"other"), "dataType": "Binary"}})  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "RuntimeDataMismatch"


def test_simulated_evidence_is_refused_unless_allowed(
    strict_service: tuple[AttestationService, TestClient], quote: bytes
) -> None:
    _service, http = strict_service
    response = http.post(f"/attest/SgxEnclave{V}", json={"quote": b64url(quote)})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "EvidenceVerificationFailed"
    assert "root" in error["message"]
    with pytest.raises(VerificationError):
        AttestationClient(BASE, client=http).attest_sgx(quote)


def test_a_draft_policy_gives_an_unsigned_token_that_verifiers_refuse(
    client: AttestationClient, service: AttestationService, quote: bytes
) -> None:
    token = client.attest_sgx(quote, draft_policy=ISSUE_CUSTOM)
    assert header_of(token)["alg"] == "none"
    assert token.endswith(".")
    claims = claims_of(token)
    assert claims["custom"] == "yes"
    assert claims["x-ms-policy-hash"] == policy_hash(ISSUE_CUSTOM)
    with pytest.raises(SignatureError):
        _verifier(service).verify(token)
    # A draft is evaluated: a denying draft is refused like a stored policy.
    with pytest.raises(PolicyError):
        client.attest_sgx(quote, draft_policy=DENY_ALL)
    with pytest.raises(InvalidPolicy):
        client.attest_sgx(quote, draft_policy="version=1.0; nonsense")


# -- policies ------------------------------------------------------------------------------------------------


def test_policy_management_needs_the_admin_token(http: TestClient) -> None:
    url = f"/policies/SgxEnclave{V}"
    assert http.put(url, content=DENY_ALL).status_code == 401
    assert http.put(url, content=DENY_ALL, headers={"authorization": "Bearer wrong-token"}).status_code == 403
    assert http.put(url, content=DENY_ALL, headers={"authorization": f"Basic {ADMIN}"}).status_code == 401
    assert http.post(f"/policies/SgxEnclave:reset{V}").status_code == 401
    # None of those changed the policy.
    assert http.get(url).status_code == 200
    assert AttestationClient(BASE, client=http).get_policy("SgxEnclave") == DEFAULT_SGX_POLICY


def test_policy_management_is_disabled_without_a_configured_token(
    strict_service: tuple[AttestationService, TestClient],
) -> None:
    _service, http = strict_service
    response = http.put(
        f"/policies/SgxEnclave{V}", content=DENY_ALL, headers={"authorization": "Bearer x" * 4}
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "PolicyManagementDisabled"
    with pytest.raises(UsageError):
        AttestationClient(BASE, client=http).set_policy("SgxEnclave", DENY_ALL, ADMIN)


@pytest.mark.usefixtures("reset_policy")
def test_a_stored_policy_is_used_and_reset(
    client: AttestationClient, service: AttestationService, quote: bytes
) -> None:
    client.set_policy("SgxEnclave", DENY_ALL, ADMIN)
    assert client.get_policy("SgxEnclave") == DENY_ALL
    with pytest.raises(PolicyError, match="PolicyEvaluationError"):
        client.attest_sgx(quote)
    # Open Enclave has its own policy, still the default.
    client.attest_open_enclave(wrap_quote_legacy(quote))
    client.set_policy("SgxEnclave", ISSUE_CUSTOM, ADMIN)
    claims = _verifier(service).verify(client.attest_sgx(quote)).claims
    assert claims["custom"] == "yes"
    assert claims["x-ms-policy-hash"] == policy_hash(ISSUE_CUSTOM)
    client.reset_policy("SgxEnclave", ADMIN)
    assert client.get_policy("SgxEnclave") == DEFAULT_SGX_POLICY
    assert "custom" not in claims_of(client.attest_sgx(quote))


def test_policy_answers_are_signed_by_the_service(http: TestClient, service: AttestationService) -> None:
    token = http.get(f"/policies/SgxEnclave{V}").json()["token"]
    claims = _verifier(service).verify(token).claims
    assert set(claims) >= {"x-ms-policy"}
    assert not any(name.startswith("x-ms-sgx") for name in claims)


def test_a_policy_that_does_not_parse_is_refused_with_its_position(http: TestClient) -> None:
    response = http.put(
        f"/policies/SgxEnclave{V}", content="version=1.0; authorizationrules { => permit() };",
        headers={"authorization": f"Bearer {ADMIN}"},
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidPolicy"
    assert "line 1" in response.json()["error"]["message"]


def test_restart_keeps_the_signing_key_and_the_policies(home: Path, quote: bytes) -> None:
    db_path = home / "restart.db"
    _check_restart(
        _config(home, "restart", allow_simulated=True, admin_token=ADMIN),
        lambda: SQLiteStorage(db_path),
        quote,
    )


def test_restart_on_postgresql_keeps_the_signing_key_and_the_policies(
    home: Path, quote: bytes, postgres_server: RunningPostgres, postgres_database: str
) -> None:
    config = _config(home, "restart-pg", allow_simulated=True, admin_token=ADMIN)
    url = postgres_server.url(postgres_database)
    _check_restart(config, lambda: open_storage(url), quote)


def _check_restart(config: ServiceConfig, open_db: Callable[[], Storage], quote: bytes) -> None:
    db = open_db()
    with AttestationService(config, db) as first:
        kid = first.kid
        response = first.set_policy("SgxEnclave", ISSUE_CUSTOM.encode(), f"Bearer {ADMIN}")
        assert response.status == 200
    db.close()
    db = open_db()
    try:
        with AttestationService(config, db) as second:
            assert second.kid == kid
            with TestClient(create_app(second), base_url=BASE) as http:
                again = AttestationClient(BASE, client=http)
                assert again.get_policy("SgxEnclave") == ISSUE_CUSTOM
                token = again.attest_sgx(quote)
            assert header_of(token)["kid"] == kid
            assert _verifier(second).verify(token).claims["custom"] == "yes"
    finally:
        db.close()


# -- the service's own evidence -------------------------------------------------------------------------------


def test_accepting_simulated_evidence_is_part_of_the_service_enclaves_measurement(
    service: AttestationService, strict_service: tuple[AttestationService, TestClient]
) -> None:
    # The setting is a measured file of the bundle, not a launch-time switch of the host: the two services'
    # own quotes show two MRENCLAVEs, so a relying party pinning the strict one cannot be served by the other.
    lenient = Quote.from_bytes(service.quote).body.mr_enclave
    strict = Quote.from_bytes(strict_service[0].quote).body.mr_enclave
    assert lenient != strict


def test_the_signing_certificate_carries_a_quote_that_binds_its_key(
    service: AttestationService, client: AttestationClient, home: Path
) -> None:
    chains = client.signing_certificates()
    assert list(chains) == [service.kid]
    certificate = chains[service.kid][0]
    assert certificate == service.certificate
    extension = certificate.extensions.get_extension_for_oid(SERVICE_QUOTE_OID).value
    assert isinstance(extension, x509.UnrecognizedExtension)
    quote = extension.value
    request = collateral_request(Quote.from_bytes(quote))
    collateral = SimulatedCollateralSource(home).fetch(request.fmspc, request.ca)
    verified = verify_quote(quote, collateral, now=datetime.now(UTC), roots=[simulated_root(home)])
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert bytes(verified.body.report_data) == hashlib.sha256(spki).digest() + bytes(32)
    assert verified.simulated
    # The sealed state in storage is not the key in clear: the public modulus does not even appear in it.
    sealed = service.storage.get("enclave-state", "sealed")
    assert sealed is not None
    modulus = certificate.public_key().public_numbers().n.to_bytes(384, "big")  # type: ignore[union-attr]
    assert modulus[:64] not in sealed


# -- bad requests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query", ["", "?api-version=2018-09-01-preview", "?api-version=", "?other=2022-08-01"]
)
def test_the_api_version_is_required(http: TestClient, quote: bytes, query: str) -> None:
    response = http.post(f"/attest/SgxEnclave{query}", json={"quote": b64url(quote)})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidApiVersion"
    assert http.get(f"/policies/SgxEnclave{query}").status_code == 400


def _data(data: bytes, kind: str) -> dict[str, str]:
    return {"data": b64url(data), "dataType": kind}


def _bad_bodies() -> list[tuple[str, bytes]]:
    good = {"quote": b64url(b"\x03\x00" + bytes(100))}
    return [
        ("empty", b""),
        ("null", b"null"),
        ("array", b"[]"),
        ("truncated json", b'{"quote": "AAAA'),
        ("not utf-8", b'{"quote": "\xff\xfe"}'),
        ("deep nesting", b"[" * 100_000),
        ("duplicate keys", b'{"quote": "AAAA", "quote": "AAAA"}'),
        ("nan", b'{"quote": NaN}'),
        ("quote not a string", b'{"quote": 12}'),
        ("no quote", b'{"nonce": "x"}'),
        ("empty quote", b'{"quote": ""}'),
        ("not base64url", b'{"quote": "!!!!"}'),
        ("standard base64", b'{"quote": "ab+/"}'),
        ("impossible length", b'{"quote": "A"}'),
        ("unknown member", json.dumps({**good, "extra": 1}).encode()),
        ("garbage quote", json.dumps(good).encode()),
        ("short quote", json.dumps({"quote": b64url(b"\x03\x00\x02\x00")}).encode()),
        ("runtime not object", json.dumps({**good, "runtimeData": "x"}).encode()),
        ("runtime bad type", json.dumps({**good, "runtimeData": {"data": "AA", "dataType": "Xml"}}).encode()),
        ("runtime json invalid", json.dumps({**good, "runtimeData": _data(b"{", "JSON")}).encode()),
        ("runtime json array", json.dumps({**good, "runtimeData": _data(b"[1]", "JSON")}).encode()),
        ("init time bad", json.dumps({**good, "initTimeData": {"data": 5}}).encode()),
        ("nonce not string", json.dumps({**good, "nonce": 5}).encode()),
        ("draft not string", json.dumps({**good, "draftPolicyForAttestation": ["x"]}).encode()),
        ("report on sgx", json.dumps({"report": good["quote"]}).encode()),
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "body"), _bad_bodies(), ids=[name for name, _ in _bad_bodies()])
def test_malformed_requests_answer_4xx_json(http: TestClient, name: str, body: bytes) -> None:
    response = http.post(f"/attest/SgxEnclave{V}", content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, (name, response.text)
    assert isinstance(response.json()["error"]["code"], str)


def test_malformed_evidence_in_valid_json_answers_4xx(http: TestClient, quote: bytes) -> None:
    cases = [
        ("SgxEnclave", {"quote": b64url(quote[:-1])}),
        ("SgxEnclave", {"quote": b64url(quote + b"\x00")}),
        ("SgxEnclave", {"quote": b64url(wrap_quote_legacy(quote))}),
        ("OpenEnclave", {"report": b64url(b"\x01\x00\x00\x00" + bytes(40))}),
        ("OpenEnclave", {"quote": b64url(quote)}),
        ("Tdx", {"quote": b64url(quote)}),
    ]
    for kind, body in cases:
        response = http.post(f"/attest/{kind}{V}", json=body)
        assert 400 <= response.status_code < 500, (kind, response.text)
        assert "error" in response.json()


def test_oversized_bodies_and_unknown_routes_answer_4xx_json(http: TestClient) -> None:
    huge = http.post(f"/attest/SgxEnclave{V}", content=b"x" * ((1 << 20) + 1))
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "RequestTooLarge"
    assert http.get("/nowhere").status_code == 404
    assert http.get("/nowhere").json()["error"]["code"] == "NotFound"
    assert http.get(f"/attest/SgxEnclave{V}").status_code == 405
    assert http.get(f"/policies/Tdx{V}").status_code == 400
    admin = {"authorization": f"Bearer {ADMIN}"}
    assert http.put(f"/policies/SgxEnclave{V}", content=b"\xff\xfe", headers=admin).status_code == 400
    assert http.put(f"/policies/SgxEnclave{V}", content=b"a.b.c", headers=admin).status_code == 400
    assert http.put(f"/policies/SgxEnclave{V}", content=b"", headers=admin).status_code == 400
    assert http.post(f"/policies/SgxEnclave{V}", headers=admin).status_code == 405


_MEMBERS = st.sampled_from(
    ["quote", "report", "runtimeData", "initTimeData", "nonce", "draftPolicyForAttestation"]
)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=300) | st.dictionaries(_MEMBERS, _VALUES).map(lambda d: json.dumps(d).encode())
)
def test_fuzzed_requests_never_answer_500(http: TestClient, body: bytes) -> None:
    response = http.post(f"/attest/SgxEnclave{V}", content=body)
    assert 400 <= response.status_code < 500
    assert "error" in response.json()


# -- the client's error mapping --------------------------------------------------------------------------------


def test_client_maps_server_failures_and_network_errors_to_transport_error() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/certs":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(503, json={"error": {"code": "ServiceUnavailable", "message": "down"}})

    remote = AttestationClient("http://maa.invalid", transport=httpx.MockTransport(answer))
    with pytest.raises(TransportError, match="503"):
        remote.attest_sgx(b"\x03\x00")
    with pytest.raises(TransportError):
        remote.signing_certificates()
    with pytest.raises(UsageError):
        remote.attest_sgx(b"\x03", runtime_data=b"x", runtime_json={"a": 1})


@pytest.mark.usefixtures("reset_policy")
def test_a_policy_cannot_issue_claims_in_the_service_namespaces(
    client: AttestationClient, service: AttestationService, quote: bytes
) -> None:
    forging = (
        "version=1.0; authorizationrules { => permit(); }; issuancerules {"
        ' => issue(type="x-ms-runtime", value="forged"); => issue(type="x-enklave-simulated", value=false);'
        ' => issue(type="nonce", value="forged"); => issue(type="mine", value=1); };'
    )
    client.set_policy("SgxEnclave", forging, ADMIN)
    claims = _verifier(service).verify(client.attest_sgx(quote)).claims
    assert "x-ms-runtime" not in claims
    assert "nonce" not in claims
    assert claims["x-enklave-simulated"] is True
    assert claims["mine"] == 1


def test_the_default_collateral_cache_refreshes_daily_as_a_pccs_does(service: AttestationService) -> None:
    # nextUpdate is the latest date Intel reissues collateral: a revocation can come sooner, so the service does
    # not keep a set until then.
    source = service._source
    assert isinstance(source, CachingCollateralSource)
    assert source._max_age == SERVICE_MAX_AGE == timedelta(days=1)
