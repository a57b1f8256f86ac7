"""Attestation tokens: MAA claims, RS256 signing and JWKS, and the relying party's TokenVerifier."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from certificates import self_signed
from conftest import REAL_INSIDE
from enklave.attestation import EnclavePolicy, QuoteCollateral, verify_quote
from enklave.attestation._transport import HttpResponse, MockTransport
from enklave.attestation.tokens import (
    CLAIM_SIMULATED,
    CLAIM_TCB_EVALUATION_DATA_NUMBER,
    CLAIM_TCB_STATUS,
    HttpJwksSource,
    JwksSource,
    StaticJwksSource,
    TokenSigner,
    TokenVerifier,
    VerifiedToken,
    openid_configuration,
    sgx_claims,
    unsigned_token,
)
from enklave.errors import (
    BindingError,
    ExpiredError,
    InvalidToken,
    PolicyError,
    SignatureError,
    TransportError,
    UsageError,
)

ISSUER = "https://attest.example.test"
JKU = f"{ISSUER}/certs"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _key_and_certificate(bits: int = 2048) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    certificate = self_signed(
        key, "CN=attest.example.test", now=NOW, backdate=timedelta(days=1), validity=timedelta(days=365)
    )
    return key, certificate


@pytest.fixture(scope="module")
def signer() -> TokenSigner:
    key, certificate = _key_and_certificate()
    return TokenSigner(key, [certificate], issuer=ISSUER, jku=JKU)


@pytest.fixture(scope="module")
def other_signer() -> TokenSigner:
    key, certificate = _key_and_certificate()
    return TokenSigner(key, [certificate], issuer=ISSUER, jku=JKU)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class CountingSource(JwksSource):
    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.fetches = 0

    def fetch(self) -> dict[str, Any]:
        self.fetches += 1
        return json.loads(json.dumps(self.jwks))


def _verifier(signer: TokenSigner, **kwargs: Any) -> TokenVerifier:
    kwargs.setdefault("clock", Clock(NOW))
    return TokenVerifier(ISSUER, StaticJwksSource(signer.jwks()), **kwargs)


def _compact(header: bytes, claims: bytes, signature: str = "") -> str:
    return f"{_b64url(header)}.{_b64url(claims)}.{signature}"


def _raw_token(key: rsa.RSAPrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, claims, signature = token.split(".")
    pad = lambda text: text + "=" * (-len(text) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(header))),
        json.loads(base64.urlsafe_b64decode(pad(claims))),
        signature,
    )


# --- signing and the JWKS ---------------------------------------------------------------------------------


def test_sign_then_verify_round_trip(signer: TokenSigner) -> None:
    token = signer.sign({"x-ms-ver": "1.0", "nonce": "n-1"}, now=NOW)
    verified = _verifier(signer).verify(token, nonce="n-1")
    header, claims, _ = _parts(token)
    assert header == {"alg": "RS256", "jku": JKU, "kid": signer.kid, "typ": "JWT"}
    assert claims["iss"] == ISSUER and claims["x-ms-ver"] == "1.0"
    assert claims["iat"] == claims["nbf"] == int(NOW.timestamp())
    assert claims["exp"] == int((NOW + timedelta(hours=8)).timestamp())
    assert len(claims["jti"]) == 64
    assert dict(verified.claims) == claims and dict(verified.header) == header
    assert verified.expires_at == NOW + timedelta(hours=8) and verified.key_id == signer.kid
    assert verified.jwt == token
    # Each token gets its own id.
    assert _parts(signer.sign({}, now=NOW))[1]["jti"] != claims["jti"]


def test_jwks_shape_and_x5c_key_verifies_the_token(signer: TokenSigner) -> None:
    (entry,) = signer.jwks()["keys"]
    assert set(entry) == {"kty", "kid", "use", "alg", "n", "e", "x5c"}
    assert (entry["kty"], entry["use"], entry["alg"]) == ("RSA", "sig", "RS256")
    certificate = x509.load_der_x509_certificate(base64.b64decode(entry["x5c"][0], validate=True))
    assert certificate == signer.certificate_chain[0]
    # The kid has MAA's shape: standard base64 (padded) of a SHA-256.
    assert (
        entry["kid"]
        == signer.kid
        == base64.b64encode(hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()).decode()
    )
    public_key = certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert int.from_bytes(base64.urlsafe_b64decode(entry["n"] + "=="), "big") == public_key.public_numbers().n
    token = signer.sign({"a": 1}, now=NOW)
    signing_input, _, signature = token.rpartition(".")
    public_key.verify(
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
        signing_input.encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_signer_refuses_short_keys_mismatched_certificates_and_registered_claims(signer: TokenSigner) -> None:
    short_key, short_certificate = _key_and_certificate(1024)
    with pytest.raises(UsageError, match="1024 bits"):
        TokenSigner(short_key, [short_certificate], issuer=ISSUER, jku=JKU)
    other_key, _ = _key_and_certificate()
    with pytest.raises(UsageError, match="leaf certificate"):
        TokenSigner(other_key, signer.certificate_chain, issuer=ISSUER, jku=JKU)
    for name in ("iss", "exp", "jti"):
        with pytest.raises(UsageError, match=name):
            signer.sign({name: "mine"}, now=NOW)
    with pytest.raises(UsageError, match="timezone"):
        signer.sign({}, now=datetime(2026, 1, 1))  # A naive time is the point.


def test_unsigned_token_is_alg_none_and_refused(signer: TokenSigner) -> None:
    token = unsigned_token({"x-ms-ver": "1.0", "iss": ISSUER, "exp": int(NOW.timestamp()) + 60})
    header, claims, signature = _parts(token)
    assert header["alg"] == "none" and signature == ""
    assert claims["x-ms-ver"] == "1.0"
    with pytest.raises(SignatureError, match="never accepted"):
        _verifier(signer).verify(token)


def test_openid_configuration_names_the_jwks() -> None:
    document = openid_configuration(ISSUER, JKU, claims_supported=["x-ms-ver"])
    assert document["jwks_uri"] == JKU and document["issuer"] == ISSUER
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]


# --- what the verifier refuses ----------------------------------------------------------------------------


@pytest.mark.parametrize(("offset", "accepted"), [(-1, True), (0, False), (1, False)])
def test_expiry_edges_with_leeway(signer: TokenSigner, offset: int, accepted: bool) -> None:
    token = signer.sign({}, now=NOW)
    expiry = NOW + timedelta(hours=8)
    verifier = _verifier(signer, leeway=timedelta(seconds=60))
    at = expiry + timedelta(seconds=60 + offset)
    if accepted:
        verifier.verify(token, now=at)
    else:
        with pytest.raises(ExpiredError, match="expired"):
            verifier.verify(token, now=at)


@pytest.mark.parametrize(("offset", "accepted"), [(-1, False), (0, True), (1, True)])
def test_not_before_edges_with_leeway(signer: TokenSigner, offset: int, accepted: bool) -> None:
    token = signer.sign({}, now=NOW)
    verifier = _verifier(signer, leeway=timedelta(seconds=60))
    at = NOW - timedelta(seconds=60) + timedelta(seconds=offset)
    if accepted:
        verifier.verify(token, now=at)
    else:
        with pytest.raises(ExpiredError, match="not valid before"):
            verifier.verify(token, now=at)


def test_verifier_uses_its_clock(signer: TokenSigner) -> None:
    token = signer.sign({}, now=NOW)
    clock = Clock(NOW)
    verifier = _verifier(signer, clock=clock)
    verifier.verify(token)
    clock.now = NOW + timedelta(hours=9)
    with pytest.raises(ExpiredError):
        verifier.verify(token)


def test_wrong_issuer(signer: TokenSigner) -> None:
    token = signer.sign({}, now=NOW)
    verifier = TokenVerifier("https://other.example.test", StaticJwksSource(signer.jwks()), clock=Clock(NOW))
    with pytest.raises(PolicyError, match="issued by") as caught:
        verifier.verify(token)
    assert caught.value.field == "iss" and caught.value.actual == ISSUER


def test_wrong_key_from_another_jwks(signer: TokenSigner, other_signer: TokenSigner) -> None:
    token = signer.sign({}, now=NOW)
    with pytest.raises(SignatureError, match="no signing key"):
        _verifier(other_signer).verify(token)
    # Same kid, other key: the signature must not verify.
    impostor = other_signer.jwks()
    impostor["keys"][0]["kid"] = signer.kid
    verifier = TokenVerifier(ISSUER, StaticJwksSource(impostor), clock=Clock(NOW))
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(token)


def test_unknown_kid_refreshes_once_then_fails(signer: TokenSigner, other_signer: TokenSigner) -> None:
    source = CountingSource(signer.jwks())
    clock = Clock(NOW)
    verifier = TokenVerifier(
        ISSUER, source, clock=clock, min_refresh_interval=timedelta(seconds=30), leeway=timedelta(hours=1)
    )
    verifier.verify(signer.sign({}, now=NOW))
    assert source.fetches == 1
    stranger = other_signer.sign({}, now=NOW)
    clock.now = NOW + timedelta(seconds=31)
    with pytest.raises(SignatureError, match="no signing key"):
        verifier.verify(stranger)
    assert source.fetches == 2
    # A second unknown kid within the interval does not reach the source again.
    with pytest.raises(SignatureError):
        verifier.verify(stranger)
    assert source.fetches == 2
    # The issuer rotates its key: after the interval, the new kid is found.
    source.jwks = other_signer.jwks()
    clock.now = NOW + timedelta(seconds=62)
    assert verifier.verify(stranger).key_id == other_signer.kid
    assert source.fetches == 3


def test_hs256_with_the_public_key_as_secret_is_refused(signer: TokenSigner) -> None:
    public_pem = (
        signer.certificate_chain[0].public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    header = _b64url(json.dumps({"alg": "HS256", "kid": signer.kid, "typ": "JWT"}).encode())
    claims = _b64url(json.dumps({"iss": ISSUER, "exp": int(NOW.timestamp()) + 60}).encode())
    mac = hmac.new(public_pem, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    with pytest.raises(SignatureError, match="never accepted"):
        _verifier(signer).verify(f"{header}.{claims}.{_b64url(mac)}")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS256", "hs512"])
def test_none_and_hmac_algorithms_are_refused(signer: TokenSigner, alg: str) -> None:
    token = _raw_token_unsigned(alg, signer.kid)
    with pytest.raises(SignatureError, match="never accepted"):
        _verifier(signer).verify(token)
    with pytest.raises(UsageError):
        TokenVerifier(ISSUER, StaticJwksSource(signer.jwks()), algorithms=("RS256", alg))


def _raw_token_unsigned(alg: str, kid: str) -> str:
    header = _b64url(json.dumps({"alg": alg, "kid": kid}).encode())
    claims = _b64url(json.dumps({"iss": ISSUER, "exp": int(NOW.timestamp()) + 60}).encode())
    return f"{header}.{claims}."


def test_algorithm_not_in_the_allowed_list(signer: TokenSigner) -> None:
    key, _ = _key_and_certificate()
    token = _raw_token(key, {"alg": "PS256", "kid": signer.kid}, {"iss": ISSUER, "exp": 2**40})
    with pytest.raises(SignatureError, match="not allowed"):
        _verifier(signer).verify(token)


def test_tampered_payload_header_and_signature(signer: TokenSigner) -> None:
    verifier = _verifier(signer)
    token = signer.sign({"x-ms-sgx-mrenclave": "00" * 32}, now=NOW)
    header, claims, signature = token.split(".")
    _, payload, _ = _parts(token)
    forged_claims = _b64url(json.dumps({**payload, "x-ms-sgx-mrenclave": "11" * 32}).encode())
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(f"{header}.{forged_claims}.{signature}")
    decoded_header, _, _ = _parts(token)
    forged_header = _b64url(json.dumps({**decoded_header, "jku": "https://evil.example.test/certs"}).encode())
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(f"{forged_header}.{claims}.{signature}")
    raw_signature = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw_signature[10] ^= 1
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(f"{header}.{claims}.{_b64url(bytes(raw_signature))}")


def test_jku_of_the_token_is_never_fetched(signer: TokenSigner) -> None:
    attacker_key, _ = _key_and_certificate()
    transport = MockTransport({JKU: HttpResponse(200, {}, json.dumps(signer.jwks()).encode())})
    verifier = TokenVerifier(ISSUER, HttpJwksSource(JKU, transport), clock=Clock(NOW))
    evil = "https://evil.example.test/certs"
    token = _raw_token(
        attacker_key, {"alg": "RS256", "kid": "evil", "jku": evil}, {"iss": ISSUER, "exp": 2**40}
    )
    with pytest.raises(SignatureError):
        verifier.verify(token)
    assert [url for url, _ in transport.requests] == [JKU]


def test_nonce(signer: TokenSigner) -> None:
    verifier = _verifier(signer)
    token = signer.sign({"nonce": "abc"}, now=NOW)
    assert verifier.verify(token, nonce="abc").nonce == "abc"
    with pytest.raises(BindingError, match="nonce"):
        verifier.verify(token, nonce="abd")
    with pytest.raises(BindingError, match="nonce"):
        verifier.verify(signer.sign({}, now=NOW), nonce="abc")


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "compact JWS"),
        ("a.b", "compact JWS"),
        ("a.b.c.d", "compact JWS"),
        ("eyJ9.e30.", "base64url|JSON"),
        (_compact(b"[1]", b"{}"), "not a JSON object"),
        (_compact(b"{}", b"{}"), "no alg"),
        (_compact(b'{"alg":"RS256"}', b"{}"), "no kid"),
        (_compact(b'{"alg":"RS256","alg":"none"}', b"{}"), "JSON"),
        (_compact(b'{"alg":"RS256","kid":"k","crit":["x"]}', b"{}"), "critical"),
        (_compact(b'{"alg":"RS256","kid":"k"}', b"[]"), "not a JSON object"),
        (_compact(b"{}", b"{}", "AB"), "canonical"),
        ("x" * 300_000, "longer"),
    ],
)
def test_malformed_tokens(signer: TokenSigner, token: str, message: str) -> None:
    with pytest.raises(InvalidToken, match=message):
        _verifier(signer).verify(token)


def test_missing_or_bad_exp_is_malformed(signer: TokenSigner) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate = self_signed(key, "CN=k", now=NOW, backdate=timedelta(days=1), serial_number=2)
    own = TokenSigner(key, [certificate], issuer=ISSUER, jku=JKU)
    verifier = _verifier(own)
    for claims in ({"iss": ISSUER}, {"iss": ISSUER, "exp": "soon"}, {"iss": ISSUER, "exp": True}):
        token = _raw_token(key, {"alg": "RS256", "kid": own.kid}, claims)
        with pytest.raises(InvalidToken, match="exp"):
            verifier.verify(token)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_text_is_only_ever_invalid(text: str) -> None:
    verifier = TokenVerifier(ISSUER, StaticJwksSource({"keys": []}), clock=Clock(NOW))
    with pytest.raises(InvalidToken):
        verifier.verify(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=80), min_size=3, max_size=3))
def test_random_base64url_parts_are_only_ever_invalid(parts: list[bytes]) -> None:
    verifier = TokenVerifier(ISSUER, StaticJwksSource({"keys": []}), clock=Clock(NOW))
    with pytest.raises(InvalidToken):
        verifier.verify(".".join(_b64url(part) for part in parts))


# --- JWKS sources -----------------------------------------------------------------------------------------


def test_maa_style_jwks_with_only_x5c(signer: TokenSigner) -> None:
    (entry,) = signer.jwks()["keys"]
    minimal = {"keys": [{"kty": "RSA", "kid": entry["kid"], "x5c": entry["x5c"]}]}
    verifier = TokenVerifier(ISSUER, StaticJwksSource(minimal), clock=Clock(NOW))
    assert verifier.verify(signer.sign({}, now=NOW)).key_id == signer.kid


def test_jwks_whose_n_disagrees_with_x5c_is_refused(signer: TokenSigner, other_signer: TokenSigner) -> None:
    entry = signer.jwks()["keys"][0] | {"n": other_signer.jwks()["keys"][0]["n"]}
    verifier = TokenVerifier(ISSUER, StaticJwksSource({"keys": [entry]}), clock=Clock(NOW))
    with pytest.raises(InvalidToken, match="differ"):
        verifier.verify(signer.sign({}, now=NOW))


def test_jwks_x5c_certificate_of_an_unknown_x509_version_is_refused(signer: TokenSigner) -> None:
    (entry,) = signer.jwks()["keys"]
    der = base64.b64decode(entry["x5c"][0])
    at = der.index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT version v3; 5 is no X.509 version
    bad = base64.b64encode(der[: at + 4] + b"\x05" + der[at + 5 :]).decode()
    verifier = TokenVerifier(ISSUER, StaticJwksSource({"keys": [entry | {"x5c": [bad]}]}), clock=Clock(NOW))
    with pytest.raises(InvalidToken, match="not a base64 DER certificate"):
        verifier.verify(signer.sign({}, now=NOW))


def test_jwks_x5c_certificate_whose_key_does_not_load_is_refused(signer: TokenSigner) -> None:
    (entry,) = signer.jwks()["keys"]
    der = base64.b64decode(entry["x5c"][0])
    rsa_oid = bytes.fromhex("06092a864886f70d010101")  # rsaEncryption
    assert der.count(rsa_oid) == 1
    unknown = base64.b64encode(der.replace(rsa_oid, rsa_oid[:-1] + b"\x7f")).decode()  # UnsupportedAlgorithm
    verifier = TokenVerifier(
        ISSUER, StaticJwksSource({"keys": [entry | {"x5c": [unknown]}]}), clock=Clock(NOW)
    )
    with pytest.raises(InvalidToken, match="not a base64 DER certificate"):
        verifier.verify(signer.sign({}, now=NOW))


def test_http_jwks_source(signer: TokenSigner) -> None:
    good = MockTransport({JKU: HttpResponse(200, {}, json.dumps(signer.jwks()).encode())})
    assert HttpJwksSource(JKU, good).fetch() == signer.jwks()
    with pytest.raises(TransportError, match="500"):
        HttpJwksSource(JKU, MockTransport({JKU: HttpResponse(500, {}, b"")})).fetch()
    with pytest.raises(InvalidToken, match="JSON"):
        HttpJwksSource(JKU, MockTransport({JKU: HttpResponse(200, {}, b"<html>")})).fetch()


def test_verified_token_is_only_built_by_the_verifier() -> None:
    with pytest.raises(UsageError):
        VerifiedToken("t", {}, {}, ISSUER, "k", None, None, NOW, NOW, object())  # type: ignore[arg-type]


# --- MAA claims over a real verified quote, appraised by EnclavePolicy ------------------------------------


@pytest.fixture(scope="module")
def real_claims(real_quote: bytes, real_collateral: QuoteCollateral) -> dict[str, Any]:
    verified = verify_quote(real_quote, real_collateral, now=REAL_INSIDE)
    runtime = json.dumps({"keys": [{"kty": "RSA", "kid": "enclave"}]}).encode()
    return sgx_claims(
        verified,
        runtime_data=runtime,
        runtime_json=json.loads(runtime),
        init_time_data=None,
        nonce="n-42",
        collateral=real_collateral,
    )


REAL_MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"


def test_sgx_claims_of_the_real_quote(
    real_claims: dict[str, Any], real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    assert real_claims["x-ms-ver"] == "1.0" and real_claims["x-ms-attestation-type"] == "sgx"
    assert real_claims["x-ms-sgx-mrenclave"] == REAL_MRENCLAVE
    assert real_claims["x-ms-sgx-is-debuggable"] is False
    assert len(real_claims["x-ms-sgx-report-data"]) == 128
    assert base64.urlsafe_b64decode(real_claims["x-ms-sgx-ehd"] + "==").startswith(b'{"keys"')
    assert real_claims["x-ms-runtime"]["keys"][0]["kid"] == "enclave"
    assert real_claims[CLAIM_TCB_STATUS] == "ConfigurationAndSWHardeningNeeded"
    assert real_claims["x-enklave-advisory-ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert real_claims[CLAIM_SIMULATED] is False and real_claims["nonce"] == "n-42"
    # The lower of the two documents' numbers, as the verified quote reports it.
    lowest = min(
        real_collateral.tcb_info.tcb_evaluation_data_number,
        real_collateral.qe_identity.tcb_evaluation_data_number,
    )
    assert real_claims[CLAIM_TCB_EVALUATION_DATA_NUMBER] == lowest
    assert type(real_claims[CLAIM_TCB_EVALUATION_DATA_NUMBER]) is int and lowest > 0
    collateral = real_claims["x-ms-sgx-collateral"]
    assert set(collateral) == {
        "qeidcertshash", "qeidcrlhash", "qeidhash", "quotehash", "tcbinfocertshash", "tcbinfocrlhash", "tcbinfohash"
    }  # fmt: skip
    assert collateral["quotehash"] == hashlib.sha256(real_quote).hexdigest()
    assert collateral["tcbinfohash"] == hashlib.sha256(real_collateral.tcb_info.body).hexdigest()
    assert collateral["qeidcrlhash"] == collateral["tcbinfocrlhash"]


def _accepting_policy(**kwargs: Any) -> EnclavePolicy:
    return EnclavePolicy(
        mr_enclave=REAL_MRENCLAVE, accepted_tcb_statuses={"ConfigurationAndSWHardeningNeeded"}, **kwargs
    )


def test_a_token_states_its_collateral_recency_for_policies_that_require_one(
    signer: TokenSigner, real_claims: dict[str, Any]
) -> None:
    number = real_claims[CLAIM_TCB_EVALUATION_DATA_NUMBER]
    verified = _verifier(signer).verify(signer.sign(real_claims, now=NOW), nonce="n-42")
    assert verified.tcb_evaluation_data_number == number
    _accepting_policy(min_tcb_evaluation_data_number=number).appraise(verified)
    with pytest.raises(PolicyError) as caught:
        _accepting_policy(min_tcb_evaluation_data_number=number + 1).appraise(verified)
    assert (caught.value.field, caught.value.actual) == ("tcb_evaluation_data_number", number)
    # A token without the claim (another service's) passes only a policy that requires no minimum.
    without = {key: value for key, value in real_claims.items() if key != CLAIM_TCB_EVALUATION_DATA_NUMBER}
    other = _verifier(signer).verify(signer.sign(without, now=NOW), nonce="n-42")
    _accepting_policy().appraise(other)
    with pytest.raises(PolicyError, match=CLAIM_TCB_EVALUATION_DATA_NUMBER) as caught:
        _accepting_policy(min_tcb_evaluation_data_number=1).appraise(other)
    assert caught.value.field == "tcb_evaluation_data_number"


def test_enclave_policy_appraises_a_verified_token(signer: TokenSigner, real_claims: dict[str, Any]) -> None:
    verified = _verifier(signer).verify(signer.sign(real_claims, now=NOW), nonce="n-42")
    _accepting_policy().appraise(verified)
    assert verified.mr_enclave == bytes.fromhex(REAL_MRENCLAVE)
    assert verified.enclave_held_data is not None and verified.runtime_claims is not None
    with pytest.raises(PolicyError) as caught:
        EnclavePolicy(
            mr_enclave="00" * 32, accepted_tcb_statuses={"ConfigurationAndSWHardeningNeeded"}
        ).appraise(verified)
    assert caught.value.field == "mr_enclave"
    # The default TCB statuses do not include the real platform's.
    with pytest.raises(PolicyError) as caught:
        EnclavePolicy(mr_enclave=REAL_MRENCLAVE).appraise(verified)
    assert caught.value.field == "tcb_status"


def test_simulated_claim_is_rejected_by_default(signer: TokenSigner, real_claims: dict[str, Any]) -> None:
    verified = _verifier(signer).verify(signer.sign({**real_claims, CLAIM_SIMULATED: True}, now=NOW))
    assert verified.simulated is True
    with pytest.raises(PolicyError) as caught:
        _accepting_policy().appraise(verified)
    assert caught.value.field == "simulated"
    _accepting_policy(allow_simulated=True).appraise(verified)
    # An enklave-shaped token that lost the claim reads as simulated, the safe way.
    stripped = {key: value for key, value in real_claims.items() if key != CLAIM_SIMULATED}
    assert _verifier(signer).verify(signer.sign(stripped, now=NOW)).simulated is True


def test_missing_identity_claims_make_appraisal_fail(
    signer: TokenSigner, real_claims: dict[str, Any]
) -> None:
    claims = {key: value for key, value in real_claims.items() if key != "x-ms-sgx-mrenclave"}
    verified = _verifier(signer).verify(signer.sign(claims, now=NOW))
    with pytest.raises(PolicyError) as caught:
        _accepting_policy().appraise(verified)
    assert caught.value.field == "mr_enclave"


def test_jwks_key_for_another_algorithm_is_refused(signer: TokenSigner) -> None:
    jwks = signer.jwks()
    jwks["keys"][0]["alg"] = "RS384"
    verifier = TokenVerifier(ISSUER, StaticJwksSource(jwks), clock=Clock(NOW))
    with pytest.raises(SignatureError, match="is for RS384"):
        verifier.verify(signer.sign({}, now=NOW))


def test_weak_and_foreign_jwks_keys_are_skipped(signer: TokenSigner) -> None:
    short_key, _ = _key_and_certificate(1024)
    numbers = short_key.public_key().public_numbers()
    weak = {"kty": "RSA", "kid": "weak", "n": _b64url(numbers.n.to_bytes(128, "big")), "e": "AQAB"}
    foreign = {"kty": "EC", "kid": "ec", "crv": "P-256"}
    encryption = signer.jwks()["keys"][0] | {"use": "enc", "kid": "enc"}
    jwks = {"keys": [weak, foreign, encryption, *signer.jwks()["keys"]]}
    verifier = TokenVerifier(ISSUER, StaticJwksSource(jwks), clock=Clock(NOW))
    verifier.verify(signer.sign({}, now=NOW))
    header = {"alg": "RS256", "kid": "weak"}
    with pytest.raises(SignatureError, match="no signing key"):
        verifier.verify(_raw_token(short_key, header, {"iss": ISSUER, "exp": 2**40}))


def test_sgx_claims_optional_parts_and_argument_checks(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    verified = verify_quote(real_quote, real_collateral, now=REAL_INSIDE)
    bare = sgx_claims(
        verified, runtime_data=None, runtime_json=None, init_time_data=None, nonce=None, collateral=None
    )
    for absent in ("x-ms-sgx-ehd", "x-ms-runtime", "nonce", "x-ms-sgx-collateral", "x-ms-inittime"):
        assert absent not in bare
    with_init = sgx_claims(
        verified,
        runtime_data=None,
        runtime_json=None,
        init_time_data=b"\x00\xff",
        init_time_json={"a": 1},
        nonce=None,
        collateral=None,
        attestation_type="sgx-open-enclave",
    )
    assert with_init["x-enklave-inittime-data"] == "AP8" and with_init["x-ms-inittime"] == {"a": 1}
    assert with_init["x-ms-attestation-type"] == "sgx-open-enclave"
    with pytest.raises(UsageError, match="runtime_json"):
        sgx_claims(
            verified,
            runtime_data=None,
            runtime_json=[1],
            init_time_data=None,
            nonce=None,
            collateral=None,  # type: ignore[arg-type]
        )
    with pytest.raises(UsageError, match="VerifiedQuote"):
        sgx_claims(
            real_quote,
            runtime_data=None,
            runtime_json=None,
            init_time_data=None,
            nonce=None,
            collateral=None,  # type: ignore[arg-type]
        )
