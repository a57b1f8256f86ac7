"""The key broker end to end: real attestation tokens from the attestation service, release, refusals, the
audit log, restarts, storage at rest, malformed requests, and the command line.

The attestation service runs in simulation (simulated evidence allowed) over a loopback uvicorn, so the KBS
fetches and pins its JWKS by URL. An "enclave" (a key pair made by the test) puts its public JWK in the runtime
data of a simulated quote, gets an MAA token, and asks the KBS to release keys to it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey, RSAKey

from certificates import self_signed
from enklave.attestation.evidence import collateral_request
from enklave.attestation.tokens import TokenSigner
from enklave.attestation.verify import QuoteVerifier
from enklave.cli import main
from enklave.errors import BadDataError, EcallError, InvalidKey, PolicyError, UsageError
from enklave.platform.simulated import SimulatedCollateralSource, SimulatedPlatform, simulated_root
from enklave.services.attestation.app import create_app as create_maa_app
from enklave.services.attestation.client import AttestationClient
from enklave.services.attestation.service import AttestationService, ServiceConfig
from enklave.services.kbs import unwrap_released_key as unwrap_key
from enklave.services.kbs.app import create_app
from enklave.services.kbs.audit import AUDIT_LOG
from enklave.services.kbs.client import KbsClient
from enklave.services.kbs.keys import KeyRecord
from enklave.services.kbs.release_evidence import jwk_thumbprint, release_report_data
from enklave.services.kbs.service import (
    AUTHORITY_NAMESPACE,
    KEY_NAMESPACE,
    Authority,
    KbsConfig,
    KeyBrokerService,
)
from enklave.services.storage import SQLiteStorage, open_storage
from enklave.sgx.quote import Quote
from enklave.sgx.report import ReportBody
from service_fixtures import TestClient, enklave_home, serving

if TYPE_CHECKING:
    from postgres_server import RunningPostgres

# The session's PostgreSQL server and its per-test databases, shared with tests/test_storage.py.
pytest_plugins = ["postgres_server"]

MRENCLAVE = b"\x11" * 32
IDENTITY = ReportBody.build(mr_enclave=MRENCLAVE, mr_signer=b"\x22" * 32, isv_prod_id=9, isv_svn=4)
ADMIN = "kbs-admin-token-0123456789"
MAA = "http://maa.test"
KBS = "http://kbs.test"
V = "?api-version=7.4"


def policy(authority: str = MAA, mrenclave: str = MRENCLAVE.hex()) -> dict[str, Any]:
    return {
        "version": "1.0.0",
        "anyOf": [
            {
                "authority": authority,
                "allOf": [
                    {"claim": "x-ms-sgx-mrenclave", "equals": mrenclave},
                    {"claim": "x-ms-sgx-svn", "greaterOrEquals": 4},
                    {"claim": "x-enklave-simulated", "equals": True},
                ],
            }
        ],
    }


def _private_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    imported = RSAKey.import_key(pem) if isinstance(key, rsa.RSAPrivateKey) else ECKey.import_key(pem)
    return dict(imported.as_dict(private=True))


def _public(jwk: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in jwk.items() if name in ("kty", "n", "e", "crv", "x", "y")}


class Clock:
    """A clock the tests move (the KBS checks token lifetimes at this time)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from enklave_home(tmp_path_factory, "kbs-home")


@pytest.fixture(scope="module")
def platform(home: Path) -> SimulatedPlatform:
    return SimulatedPlatform.launch(IDENTITY, home=home)


@pytest.fixture(scope="module")
def maa(home: Path) -> Iterator[AttestationService]:
    storage = SQLiteStorage(home / "maa.db")
    config = ServiceConfig(data_dir=home / "maa", base_url=MAA, mode="sim", home=home, allow_simulated=True)
    with AttestationService(config, storage) as service:
        yield service
    storage.close()


def _serve(app: Any, name: str) -> Iterator[str]:
    with serving(app, name) as url:
        yield url


@pytest.fixture(scope="module")
def maa_url(maa: AttestationService) -> Iterator[str]:
    yield from _serve(create_maa_app(maa), "maa")


@pytest.fixture(scope="module")
def maa_client(maa: AttestationService) -> Iterator[AttestationClient]:
    with TestClient(create_maa_app(maa), base_url=MAA) as http:
        yield AttestationClient(MAA, client=http)


@pytest.fixture(scope="module")
def rsa_enclave() -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, _private_jwk(key)


@pytest.fixture(scope="module")
def ec_enclave() -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, _private_jwk(key)


def _token(platform: SimulatedPlatform, client: AttestationClient, runtime: dict[str, Any] | None) -> str:
    if runtime is None:
        return client.attest_sgx(platform.get_quote(b""))
    data = json.dumps(runtime, separators=(",", ":")).encode()
    return client.attest_sgx(platform.get_quote(hashlib.sha256(data).digest()), runtime_json=runtime)


@pytest.fixture(scope="module")
def rsa_token(platform: SimulatedPlatform, maa_client: AttestationClient, rsa_enclave: Any) -> str:
    runtime = {"keys": [{"kid": "enclave-rsa", "key_ops": ["encrypt"], **_public(rsa_enclave[1])}]}
    return _token(platform, maa_client, runtime)


@pytest.fixture(scope="module")
def ec_token(platform: SimulatedPlatform, maa_client: AttestationClient, ec_enclave: Any) -> str:
    return _token(platform, maa_client, {"keys": [_public(ec_enclave[1])]})


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def kbs_storage(home: Path) -> Iterator[SQLiteStorage]:
    storage = SQLiteStorage(home / "kbs.db")
    yield storage
    storage.close()


def _kbs_config(home: Path, maa_url: str, clock: Clock) -> KbsConfig:
    return KbsConfig(
        data_dir=home / "kbs",
        authorities=(Authority(MAA, jwks_url=f"{maa_url}/certs"),),
        admin_token=ADMIN,
        mode="sim",
        home=home,
        clock=clock,
    )


@pytest.fixture(scope="module")
def kbs(home: Path, maa_url: str, clock: Clock, kbs_storage: SQLiteStorage) -> Iterator[KeyBrokerService]:
    with KeyBrokerService(_kbs_config(home, maa_url, clock), kbs_storage) as service:
        yield service


@pytest.fixture(scope="module")
def http(kbs: KeyBrokerService) -> Iterator[TestClient]:
    with TestClient(create_app(kbs), base_url=KBS, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def admin(http: TestClient) -> KbsClient:
    return KbsClient(KBS, admin_token=ADMIN, client=http)


@pytest.fixture(scope="module")
def keys(admin: KbsClient) -> dict[str, dict[str, Any]]:
    return {
        "aes": admin.create_key("aes-key", "oct", policy()),
        "rsa": admin.create_key("rsa-key", "RSA", policy(), key_size=2048),
        "ec": admin.create_key("ec-key", "EC", policy(), crv="P-384"),
        "other-enclave": admin.create_key("other-enclave", "oct", policy(mrenclave="33" * 32)),
        "other-authority": admin.create_key("other-authority", "oct", policy(authority="https://other")),
    }


def _forged(issuer: str, claims: dict[str, Any]) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    certificate = self_signed(key, "CN=forger", now=now, backdate=timedelta(days=1))
    signer = TokenSigner(key, [certificate], issuer=issuer, jku=f"{issuer}/certs")
    unregistered = {
        name: value for name, value in claims.items() if name not in ("iss", "iat", "nbf", "exp", "jti")
    }
    return signer.sign(unregistered, now=now)


def _claims(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


# -- release -------------------------------------------------------------------------------------------------


def test_release_wraps_keys_to_the_enclave_key_in_the_token(
    admin: KbsClient, keys: dict[str, Any], rsa_token: str, ec_token: str, rsa_enclave: Any, ec_enclave: Any
) -> None:
    # AES: 32 bytes, the same on every release, to RSA and to EC recipients.
    first = admin.release("aes-key", rsa_token)
    assert first.count(".") == 4
    material = unwrap_key(first, rsa_enclave[1])
    assert len(material) == 32
    assert unwrap_key(admin.release("aes-key", rsa_token), rsa_enclave[1]) == material
    to_ec = admin.release("aes-key", ec_token)
    assert to_ec.startswith("hpke.")  # P-256 recipients get HPKE (RFC 9180), RSA ones a JWE
    assert unwrap_key(to_ec, ec_enclave[1]) == material
    # RSA and EC: a PKCS#8 private key whose public half is the one the broker shows.
    private = serialization.load_der_private_key(
        unwrap_key(admin.release("rsa-key", rsa_token), rsa_enclave[1]), None
    )
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048
    shown = keys["rsa"]["key"]
    assert private.public_key().public_numbers().n == int.from_bytes(
        base64.urlsafe_b64decode(shown["n"] + "=" * (-len(shown["n"]) % 4)), "big"
    )
    ec_private = serialization.load_der_private_key(
        unwrap_key(admin.release("ec-key", rsa_token), rsa_enclave[1]), None
    )
    assert isinstance(ec_private, ec.EllipticCurvePrivateKey)
    assert ec_private.curve.name == "secp384r1"


def test_the_start_up_line_names_the_identity_recipients_pin(kbs: KeyBrokerService) -> None:
    # What an operator copies into the inference service's --kbs-mrsigner and --kbs-isv-prod-id.
    from enklave.cli.kbs import _banner

    info = kbs.info
    line = _banner(kbs)
    assert line.startswith(
        f"key broker: enclave {info.mr_enclave.hex()} (sim mode), signer {info.mr_signer.hex()}, "
    )
    assert "product id 2; trusting " in line
    assert all(issuer in line for issuer in kbs.pinned)


def test_key_views_never_hold_private_or_secret_material(admin: KbsClient, keys: dict[str, Any]) -> None:
    for view in [*admin.list_keys(), admin.get_key("rsa-key"), admin.get_key("aes-key")]:
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(view["key"])
        assert view["attributes"]["exportable"] is True
    assert keys["aes"]["key"] == {"kid": "aes-key", "kty": "oct", "key_size": 256}
    assert keys["ec"]["key"]["crv"] == "P-384"
    data = keys["aes"]["release_policy"]["data"]
    assert json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))["version"] == "1.0.0"
    assert {view["key"]["kid"] for view in admin.list_keys()} >= {"aes-key", "rsa-key", "ec-key"}


@pytest.mark.parametrize(
    ("key", "code"),
    [("other-enclave", "ReleasePolicyNotSatisfied"), ("other-authority", "ReleasePolicyNotSatisfied")],
)
def test_release_is_refused_when_a_policy_clause_fails(
    http: TestClient, keys: dict[str, Any], rsa_token: str, key: str, code: str
) -> None:
    answer = http.post(f"/keys/{key}/release{V}", json={"target": rsa_token})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == code
    assert "value" not in answer.json()


def test_release_is_refused_for_expired_forged_untrusted_and_keyless_tokens(
    admin: KbsClient,
    http: TestClient,
    keys: dict[str, Any],
    rsa_token: str,
    clock: Clock,
    platform: SimulatedPlatform,
    maa_client: AttestationClient,
) -> None:
    claims = _claims(rsa_token)
    cases = {
        "UntrustedAuthority": _forged("https://evil.test", claims),
        "TokenVerificationFailed": _forged(MAA, claims),
        "MissingRuntimeKey": _token(platform, maa_client, None),
    }
    for code, token in cases.items():
        answer = http.post(f"/keys/aes-key/release{V}", json={"target": token})
        assert (answer.status_code, answer.json()["error"]["code"]) == (403, code)
    # A token that does not carry the nonce the caller asks for.
    answer = http.post(f"/keys/aes-key/release{V}", json={"target": rsa_token, "nonce": "n-1"})
    assert answer.status_code == 403
    clock.offset = timedelta(days=2)
    try:
        with pytest.raises(PolicyError, match="TokenExpired"):
            admin.release("aes-key", rsa_token)
    finally:
        clock.offset = timedelta(0)


def test_the_audit_log_records_releases_and_refusals_without_key_material(
    admin: KbsClient, keys: dict[str, Any], rsa_token: str, rsa_enclave: Any, kbs_storage: SQLiteStorage
) -> None:
    material = unwrap_key(admin.release("aes-key", rsa_token), rsa_enclave[1])
    with pytest.raises(PolicyError):
        admin.release("other-enclave", rsa_token)
    records = admin.audit_log()
    released, refused = records[-2], records[-1]
    jti = _claims(rsa_token)["jti"]
    assert released["outcome"] == "released" and released["key"] == "aes-key"
    assert refused["outcome"] == "refused" and refused["key"] == "other-enclave"
    assert refused["reason"].startswith("ReleasePolicyNotSatisfied")
    for record in (released, refused):
        assert record["iss"] == MAA
        assert record["mrenclave"] == MRENCLAVE.hex()
        assert record["mrsigner"] == (b"\x22" * 32).hex()
        assert (record["product_id"], record["svn"], record["jti"]) == (9, 4, jti)
        assert record["token_verified"] is True
    raw = b"".join(entry.data for entry in kbs_storage.read_log(AUDIT_LOG, limit=1000))
    assert material not in raw
    assert base64.b64encode(material) not in raw


def test_storage_never_holds_key_material_in_clear(
    admin: KbsClient, keys: dict[str, Any], rsa_token: str, rsa_enclave: Any, home: Path
) -> None:
    material = unwrap_key(admin.release("aes-key", rsa_token), rsa_enclave[1])
    rsa_der = unwrap_key(admin.release("rsa-key", rsa_token), rsa_enclave[1])
    private = serialization.load_der_private_key(rsa_der, None)
    assert isinstance(private, rsa.RSAPrivateKey)
    prime = private.private_numbers().p.to_bytes(128, "big")
    files = [path for path in home.glob("kbs.db*") if path.is_file()]
    assert files
    stored = b"".join(path.read_bytes() for path in files)
    for secret in (material, prime, rsa_der[-64:]):
        for form in (
            secret,
            base64.b64encode(secret),
            base64.urlsafe_b64encode(secret).rstrip(b"="),
            secret.hex().encode(),
        ):
            assert form not in stored


def test_storage_tampering_with_a_policy_does_not_release(
    http: TestClient, admin: KbsClient, keys: dict[str, Any], rsa_token: str, kbs_storage: SQLiteStorage
) -> None:
    # Whoever writes the database swaps the refusing policy of other-enclave for the permissive one.
    victim = KeyRecord.from_json(kbs_storage.get(KEY_NAMESPACE, "other-enclave") or b"")
    permissive = KeyRecord.from_json(kbs_storage.get(KEY_NAMESPACE, "aes-key") or b"")
    forged = KeyRecord(
        victim.name,
        victim.spec,
        permissive.policy_json,
        victim.created,
        victim.updated,
        None,
        victim.encrypted,
    )
    kbs_storage.put(KEY_NAMESPACE, "other-enclave", forged.to_json())
    try:
        answer = http.post(f"/keys/other-enclave/release{V}", json={"target": rsa_token})
        assert answer.status_code == 500
        assert answer.json()["error"]["code"] == "KeyIntegrityError"
    finally:
        kbs_storage.put(KEY_NAMESPACE, "other-enclave", victim.to_json())


def test_a_new_policy_goes_through_the_enclave(
    admin: KbsClient, keys: dict[str, Any], rsa_token: str, rsa_enclave: Any
) -> None:
    admin.create_key("movable", "oct", policy(mrenclave="44" * 32))
    with pytest.raises(PolicyError):
        admin.release("movable", rsa_token)
    admin.set_release_policy("movable", policy())
    assert len(unwrap_key(admin.release("movable", rsa_token), rsa_enclave[1])) == 32
    admin.delete_key("movable")
    with pytest.raises(BadDataError, match="404"):
        admin.get_key("movable")


def test_restart_keeps_keys_and_pinned_authorities(
    home: Path, kbs: KeyBrokerService, keys: dict[str, Any], rsa_token: str, rsa_enclave: Any, clock: Clock
) -> None:
    with TestClient(create_app(kbs), base_url=KBS) as http:
        before = unwrap_key(KbsClient(KBS, client=http).release("aes-key", rsa_token), rsa_enclave[1])
    storage = SQLiteStorage(home / "kbs.db")
    # The JWKS URL is dead now: the restarted broker uses the keys it pinned.
    config = _kbs_config(home, "http://127.0.0.1:9", clock)
    try:
        with KeyBrokerService(config, storage) as restarted:
            assert restarted.pinned == kbs.pinned
            with TestClient(create_app(restarted), base_url=KBS) as http:
                after = KbsClient(KBS, client=http).release("aes-key", rsa_token)
    finally:
        storage.close()
    assert unwrap_key(after, rsa_enclave[1]) == before


def test_restart_on_postgresql_keeps_keys(
    home: Path,
    maa_url: str,
    clock: Clock,
    rsa_token: str,
    rsa_enclave: Any,
    postgres_server: RunningPostgres,
    postgres_database: str,
) -> None:
    config = dataclasses.replace(_kbs_config(home, maa_url, clock), data_dir=home / "kbs-pg")
    storage = open_storage(postgres_server.url(postgres_database))
    try:
        with KeyBrokerService(config, storage) as first, TestClient(create_app(first), base_url=KBS) as http:
            KbsClient(KBS, admin_token=ADMIN, client=http).create_key("pg-key", "oct", policy())
            before = unwrap_key(KbsClient(KBS, client=http).release("pg-key", rsa_token), rsa_enclave[1])
    finally:
        storage.close()
    # A second broker on the same database (a restart, or a replica), with the JWKS URL dead: pinned keys serve.
    restarted = dataclasses.replace(_kbs_config(home, "http://127.0.0.1:9", clock), data_dir=home / "kbs-pg")
    storage = open_storage(postgres_server.url(postgres_database))
    try:
        with (
            KeyBrokerService(restarted, storage) as second,
            TestClient(create_app(second), base_url=KBS) as http,
        ):
            after = unwrap_key(KbsClient(KBS, client=http).release("pg-key", rsa_token), rsa_enclave[1])
    finally:
        storage.close()
    assert len(before) == 32
    assert after == before


def test_a_host_that_pins_a_key_of_its_own_gets_no_key_released(
    home: Path, maa_url: str, clock: Clock, rsa_token: str
) -> None:
    # A KBS with a key, then a host that rewrites the pinned JWKS in storage to a key it holds (so that it could
    # mint tokens) and restarts the broker: the authorities are measured, so the restarted enclave has another
    # MRENCLAVE, cannot unseal the key-encryption key, and does not start.
    config = dataclasses.replace(_kbs_config(home, maa_url, clock), data_dir=home / "kbs-swap")
    storage = SQLiteStorage(home / "kbs-swap.db")
    try:
        with KeyBrokerService(config, storage) as first, TestClient(create_app(first), base_url=KBS) as http:
            KbsClient(KBS, admin_token=ADMIN, client=http).create_key("swap-key", "oct", policy())
            assert KbsClient(KBS, client=http).release("swap-key", rsa_token)
        forger = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
        own_jwks = {"keys": [{"kty": "RSA", "kid": "forged", "use": "sig", "alg": "RS256",
                              "n": _b64url(forger.n.to_bytes(256, "big")), "e": "AQAB"}]}  # fmt: skip
        (name,) = storage.keys(AUTHORITY_NAMESPACE)
        storage.put(AUTHORITY_NAMESPACE, name, json.dumps({"issuer": MAA, "jwks": own_jwks}).encode())
        with pytest.raises(EcallError, match="SealingError"):
            KeyBrokerService(config, storage).start()
    finally:
        storage.close()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- malformed requests --------------------------------------------------------------------------------------


def test_management_needs_the_admin_token(http: TestClient, keys: dict[str, Any]) -> None:
    assert http.get(f"/keys{V}").status_code == 401
    assert (
        http.get(f"/keys{V}", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 403
    )
    answer = http.post(f"/keys/x/create{V}", json={"kty": "oct", "release_policy": policy()})
    assert answer.status_code == 401
    with pytest.raises(UsageError):
        KbsClient(KBS, client=http).list_keys()


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", f"/keys/aes-key/release{V}", b"not json", 400),
        ("POST", f"/keys/aes-key/release{V}", b"[]", 400),
        ("POST", f"/keys/aes-key/release{V}", b"{}", 400),
        ("POST", f"/keys/aes-key/release{V}", b'{"target": "a.b.c"}', 400),
        ("POST", f"/keys/aes-key/release{V}", b'{"target": 5}', 400),
        ("POST", f"/keys/aes-key/release{V}", b'{"target": "x", "nonce": 1}', 400),
        ("POST", "/keys/aes-key/release", b'{"target": "x"}', 400),
        ("POST", f"/keys/no-such-key/release{V}", b'{"target": "x"}', 404),
        ("POST", f"/keys/bad_name!/release{V}", b'{"target": "x"}', 400),
        ("POST", f"/keys/aes-key/unknown{V}", b"{}", 404),
        ("PUT", f"/keys/aes-key{V}", b"{}", 405),
        ("GET", f"/nowhere{V}", b"", 404),
        ("POST", f"/keys/new-key/create{V}", b'{"kty": "RSA", "key_size": 1024, "release_policy": {}}', 400),
        ("POST", f"/keys/new-key/create{V}", b'{"kty": "DES", "release_policy": {}}', 400),
        ("POST", f"/keys/new-key/create{V}", b'{"kty": "oct"}', 400),
        ("POST", f"/keys/new-key/create{V}", b'{"kty": "oct", "release_policy": {"version": "9"}}', 400),
        ("POST", f"/keys/new-key/create{V}", b'{"kty": "oct", "release_policy": {"data": "!!"}}', 400),
        (
            "POST",
            f"/keys/aes-key/create{V}",
            json.dumps({"kty": "oct", "release_policy": policy()}).encode(),
            409,
        ),
        ("PATCH", f"/keys/aes-key{V}", b'{"release_policy": 3}', 400),
        ("PATCH", f"/keys/no-such-key{V}", b"{}", 404),
        ("GET", f"/audit{V}&after=-1", b"", 400),
        ("POST", f"/keys/aes-key/release{V}", b"x" * (600 << 10), 413),
        # JSON nested deeper than the decoder recurses.
        ("POST", f"/keys/aes-key/release{V}", b"[" * 100_000 + b"]" * 100_000, 400),
        ("POST", f"/keys/nested/create{V}", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400),
        ("PATCH", f"/keys/aes-key{V}", b"[" * 100_000, 400),
    ],
)
def test_malformed_requests_answer_4xx_json(
    http: TestClient, keys: dict[str, Any], method: str, path: str, body: bytes, status: int
) -> None:
    answer = http.request(method, path, content=body, headers=_auth())
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] and error["message"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["target", "nonce", "kty", "release_policy"]),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                lambda inner: (
                    st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
                ),
                max_leaves=8,
            ),
        ).map(lambda value: json.dumps(value).encode()),
    ),
    action=st.sampled_from(["release", "create"]),
)
def test_fuzzed_requests_never_answer_500(
    http: TestClient, keys: dict[str, Any], body: bytes, action: str
) -> None:
    answer = http.post(f"/keys/fuzz-{action}/{action}{V}", content=body, headers=_auth())
    assert 400 <= answer.status_code < 500 or (action == "create" and answer.status_code == 200)
    if answer.status_code == 200:
        http.delete(f"/keys/fuzz-create{V}", headers=_auth())


# -- command line --------------------------------------------------------------------------------------------


def test_cli_creates_lists_shows_and_releases(
    kbs: KeyBrokerService,
    tmp_path: Path,
    rsa_token: str,
    rsa_enclave: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN)
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(policy()))
    attestation = tmp_path / "token.jwt"
    attestation.write_text(rsa_token)
    out = tmp_path / "wrapped.jwe"
    for url in _serve(create_app(kbs), "kbs"):
        common = ["kbs", "key", "--url", url, "--admin-token-file", str(token_file)]
        assert (
            main(
                [
                    *common,
                    "create",
                    "cli-key",
                    "--type",
                    "ec",
                    "--curve",
                    "P-256",
                    "--policy",
                    str(policy_file),
                ]
            )
            == 0
        )
        assert json.loads(capsys.readouterr().out)["key"]["crv"] == "P-256"
        assert main([*common, "list"]) == 0
        assert "cli-key" in {view["key"]["kid"] for view in json.loads(capsys.readouterr().out)}
        assert main([*common, "show", "cli-key"]) == 0
        assert json.loads(capsys.readouterr().out)["key"]["kty"] == "EC"
        assert main([*common, "release", "cli-key", "--token", str(attestation), "--out", str(out)]) == 0
        assert main([*common, "show", "no-such-key"]) == 3
        assert (
            main(
                [
                    "kbs",
                    "key",
                    "--url",
                    url,
                    "release",
                    "cli-key",
                    "--token",
                    str(policy_file),
                    "--out",
                    str(out),
                ]
            )
            == 3
        )
    assert out.stat().st_mode & 0o077 == 0
    private = serialization.load_der_private_key(unwrap_key(out.read_text().strip(), rsa_enclave[1]), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)


def test_a_release_answer_carries_the_kbs_enclave_quote_binding_it(
    kbs: KeyBrokerService,
    admin: KbsClient,
    keys: dict[str, Any],
    rsa_token: str,
    ec_token: str,
    rsa_enclave: Any,
    ec_enclave: Any,
    home: Path,
) -> None:
    verifier = QuoteVerifier([simulated_root(home)])
    source = SimulatedCollateralSource(home)
    for name, token, recipient in (
        ("aes-key", rsa_token, rsa_enclave[1]),
        ("ec-key", ec_token, ec_enclave[1]),
    ):
        released = admin.release_with_evidence(name, token)
        request = collateral_request(Quote.from_bytes(released.quote))
        verified = verifier.verify(
            released.quote, source.fetch(request.fmspc, request.ca), now=datetime.now(UTC)
        )
        # The quote is the key broker enclave's own, and it binds this name, this recipient and this value.
        assert bytes(verified.mr_enclave) == bytes(kbs.info.mr_enclave)
        assert bytes(verified.mr_signer) == bytes(kbs.info.mr_signer)
        assert verified.isv_prod_id == kbs.info.isv_prod_id == 2
        assert bytes(verified.report_data) == release_report_data(name, _public(recipient), released.value)
        assert unwrap_key(released.value, recipient)
        # Any other name, recipient or value gives other report data.
        other = rsa_enclave[1] if recipient is ec_enclave[1] else ec_enclave[1]
        assert release_report_data("rsa-key", _public(recipient), released.value) != verified.report_data
        assert release_report_data(name, _public(other), released.value) != verified.report_data
        assert release_report_data(name, _public(recipient), released.value + "A") != verified.report_data
    # The plain answer keeps its shape: "value" as before, with the quote beside it.
    raw = admin._request("POST", "/keys/aes-key/release", json_body={"target": rsa_token}, admin=False)
    assert set(raw) == {"value", "quote"}


def test_the_release_binding_is_length_prefixed_over_rfc_7638_thumbprints() -> None:
    # RFC 7638 section 3.1's example key and thumbprint.
    jwk = {
        "kty": "RSA",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiF"
        "V4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu"
        "6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awa"
        "pJzKnqDKgw",
    }
    assert (
        base64.urlsafe_b64encode(jwk_thumbprint(jwk)).rstrip(b"=")
        == b"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    )
    ec_jwk = {"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ", "d": "secret"}
    assert jwk_thumbprint(ec_jwk) == hashlib.sha256(b'{"crv":"P-256","kty":"EC","x":"eA","y":"eQ"}').digest()
    data = release_report_data("k", ec_jwk, "w")
    message = b"".join(
        len(part).to_bytes(4, "big") + part
        for part in (b"enklave kbs release v1", b"k", jwk_thumbprint(ec_jwk), b"w")
    )
    assert data == hashlib.sha256(message).digest() + bytes(32)
    # Length prefixes: moving a byte between the name and the value changes the binding.
    assert release_report_data("ab", ec_jwk, "c") != release_report_data("a", ec_jwk, "bc")
    for bad in (
        {"kty": "oct", "k": "AA"},
        {"kty": "EC", "crv": "P-256", "x": "eA"},
        {"kty": "RSA", "n": 5, "e": "AQAB"},
    ):
        with pytest.raises(InvalidKey):
            jwk_thumbprint(bad)


def test_release_with_evidence_refuses_an_answer_without_a_usable_quote() -> None:
    value = "hpke." + "A" * 120

    def answer(body: dict[str, Any]) -> KbsClient:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
        return KbsClient(KBS, transport=transport)

    assert answer({"value": value}).release("k", "t") == value
    for body in ({"value": value}, {"value": value, "quote": "*"}, {"value": value, "quote": 5},
                 {"value": value, "quote": "A" * 100_000}):  # fmt: skip
        with pytest.raises(BadDataError):
            answer(body).release_with_evidence("k", "t")
    assert answer({"value": value, "quote": "AAEC"}).release_with_evidence("k", "t").quote == b"\x00\x01\x02"


def test_a_release_policy_can_require_collateral_from_after_a_tcb_recovery(
    admin: KbsClient, rsa_token: str, rsa_enclave: Any
) -> None:
    # The attestation token states the lowest tcbEvaluationDataNumber of the collateral used; requiring one above
    # it refuses the release, as a policy written after a TCB recovery refuses evidence judged with older collateral.
    number = _claims(rsa_token)["x-enklave-tcb-evaluation-data-number"]
    assert type(number) is int and number > 0
    for name, minimum, released in (("tcb-current", number, True), ("tcb-recovered", number + 1, False)):
        rules = policy()
        rules["anyOf"][0]["allOf"].append(
            {"claim": "x-enklave-tcb-evaluation-data-number", "greaterOrEquals": minimum}
        )
        admin.create_key(name, "oct", rules)
        if released:
            assert unwrap_key(admin.release(name, rsa_token), rsa_enclave[1])
        else:
            with pytest.raises(PolicyError, match="ReleasePolicyNotSatisfied"):
                admin.release(name, rsa_token)
