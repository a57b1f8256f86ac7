"""The trusted part of enklave's attestation service: the token signing key and every check a token vouches for.

The host (``enklave.services.attestation.service``) owns the sockets, the storage and the collateral cache; it
is not trusted. It hands this enclave the raw request, the policy text it stored and the collateral it
fetched, and gets back a token or an error. What the host could do wrong is bounded: bad collateral or a stale
clock make verification fail or describe the evidence as of another time, and a policy text the host swapped
is visible in the token's ``x-ms-policy-hash`` (signed policies, checked in here, are the next step).

Ecalls:

* ``init(sealed_state, issuer)``: unseal the RSA-3072 signing key, or create it on first start together with a
  self-signed certificate that carries this enclave's quote over SHA-256(SubjectPublicKeyInfo) in the
  extension :data:`SERVICE_QUOTE_OID`; returns the sealed state, the certificate, the quote and the JWKS.
* ``policy_token(claims_json)``: a signed answer for policy management, with ``x-ms-policy*`` claims only.
* ``attest(request_json, attestation_type, policy_text, collateral_json, now)``: returns JSON, either
  ``{"token": jwt}`` or ``{"error": {"status", "code", "message"}}`` for evidence or requests that are refused.

Whether simulated evidence is accepted is part of the enclave's measurement (``settings.json`` in the bundle),
never a per-request choice and never something the host can switch at launch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from enklave import enclave
from enklave._json import loads
from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.tokens import TokenSigner, sgx_claims, unsigned_token
from enklave.attestation.trust import TrustedRoot, intel_sgx_root
from enklave.attestation.verify import QuoteVerifier
from enklave.errors import (
    BoundaryError,
    EnklaveError,
    InvalidCollateral,
    InvalidPolicy,
    InvalidQuote,
    PolicyError,
    UsageError,
    VerificationError,
)
from enklave.platform.simulated import simulated_root
from enklave.services._response import Refused
from enklave.services.attestation.policy import (
    MAX_POLICY_CHARS,
    Claim,
    Policy,
    evaluate,
    parse_policy,
    policy_hash,
    policy_text_from_jws,
)
from enklave.services.attestation.request import MAX_REQUEST_SIZE, parse_attest_request
from enklave.sgx.oe import unwrap_evidence

SERVICE_QUOTE_OID = x509.ObjectIdentifier("2.25.62700995316416914379449823944621140356")
"""The certificate extension holding the service enclave's raw SGX quote (a UUID OID, ITU-T X.667)."""

SETTINGS_FILE = "settings.json"
_STATE_AAD = b"enklave attestation service state v1"
_STATE_VERSION = 1
_KEY_BITS = 3072
_MAX_STATE_SIZE = 64 << 10
_MAX_COLLATERAL_SIZE = 4 << 20
_TOKEN_LIFETIME = timedelta(hours=8)
_CERTIFICATE_LIFETIME = timedelta(days=3650)
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
# Claims the service states itself: a policy may not issue a claim of these names or prefixes, so that no policy
# can make a token say something about the evidence (runtime data, simulation, nonce) that was not verified.
_RESERVED = frozenset({"iss", "iat", "nbf", "exp", "jti", "nonce"})
_RESERVED_PREFIXES = ("x-ms-", "x-enklave-")
_COLLATERAL_CACHE_SIZE = 16
_POLICY_CACHE_SIZE = 16
_MAX_POLICY_RESULT = 2 * MAX_POLICY_CHARS + 4096
_POLICY_RESULT_CLAIMS = frozenset({
    "x-ms-policy", "x-ms-policy-result", "x-ms-policy-token-hash", "x-ms-policy-signer",
})  # fmt: skip
_SIGNING_ONLY = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True, slots=True)
class _Service:
    signer: TokenSigner
    verifier: QuoteVerifier


_lock = threading.Lock()
# The one service state, replaced as a whole by init (a holder rather than a rebound global).
_current: dict[str, _Service] = {}
_collateral: OrderedDict[bytes, QuoteCollateral] = OrderedDict()
_policies: OrderedDict[bytes, Policy] = OrderedDict()


def _roots() -> list[TrustedRoot]:
    roots = [intel_sgx_root()]
    settings = loads(enclave.bundle_file(SETTINGS_FILE))
    if settings.get("allow_simulated") is True:
        # The simulated platform's root is public data in the data directory; evidence it vouches for is marked
        # simulated by the verifier and says so in every token.
        home = os.environ.get("ENKLAVE_HOME")
        roots.append(simulated_root(home or None))
    return roots


def _certificate(key: rsa.RSAPrivateKey, quote: bytes) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "enklave"),
            x509.NameAttribute(NameOID.COMMON_NAME, "enklave attestation service token signing"),
        ]
    )
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + _CERTIFICATE_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_SIGNING_ONLY, critical=True)
        .add_extension(x509.UnrecognizedExtension(SERVICE_QUOTE_OID, quote), critical=False)
        .sign(key, hashes.SHA256())
    )


def _spki_hash(key: rsa.RSAPublicKey) -> bytes:
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def _create() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)
    # The quote binds the key: its report data is SHA-256 of the certificate's SubjectPublicKeyInfo.
    quote = enclave.get_quote(_spki_hash(key.public_key()))
    return key, _certificate(key, quote)


def _restore(sealed_state: bytes) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    state = cbor2.loads(enclave.unseal(sealed_state, policy="unique", aad=_STATE_AAD))
    if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
        raise BoundaryError("the sealed service state has an unknown layout")
    try:
        key = serialization.load_der_private_key(state["key"], password=None)
        certificate = x509.load_der_x509_certificate(state["certificate"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BoundaryError("the sealed service state is damaged") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise BoundaryError("the sealed service state holds no RSA key")
    return key, certificate


@enclave.ecall
def init(
    sealed_state: Annotated[bytes, enclave.MaxSize(_MAX_STATE_SIZE)] | None,
    issuer: Annotated[str, enclave.MaxSize(2048)],
) -> dict[str, bytes]:
    """Unseal (or create) the signing key and get ready to attest as ``issuer`` (the service's base URL)."""
    if sealed_state is None:
        key, certificate = _create()
    else:
        key, certificate = _restore(sealed_state)
    certificate_der = certificate.public_bytes(serialization.Encoding.DER)
    state = {
        "version": _STATE_VERSION,
        "key": key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "certificate": certificate_der,
    }
    sealed = enclave.seal(cbor2.dumps(state), policy="unique", aad=_STATE_AAD)
    signer = TokenSigner(
        key, [certificate], issuer=issuer, jku=f"{issuer.rstrip('/')}/certs", lifetime=_TOKEN_LIFETIME
    )
    quote = certificate.extensions.get_extension_for_oid(SERVICE_QUOTE_OID).value
    if not isinstance(quote, x509.UnrecognizedExtension):
        raise BoundaryError("the service certificate's quote extension is malformed")
    with _lock:
        _current["service"] = _Service(signer, QuoteVerifier(_roots()))
        _collateral.clear()
        _policies.clear()
    jwks = json.dumps(signer.jwks()).encode("utf-8")
    return {"sealed_state": sealed, "certificate": certificate_der, "quote": quote.value, "jwks": jwks}


@enclave.ecall
def policy_token(claims_json: Annotated[str, enclave.MaxSize(_MAX_POLICY_RESULT)]) -> str:
    """Sign a policy management answer (MAA's PolicyResult): only the ``x-ms-policy*`` claims, so the host can
    never get an attestation claim signed this way."""
    with _lock:
        service = _current.get("service")
    if service is None:
        raise UsageError("policy_token was called before init")
    try:
        claims = loads(claims_json)
    except ValueError as exc:
        raise BoundaryError("the policy result claims are not JSON") from exc
    if not isinstance(claims, dict) or not claims or not set(claims) <= _POLICY_RESULT_CLAIMS:
        raise BoundaryError("a policy result may only carry x-ms-policy claims")
    if not all(isinstance(value, str) for value in claims.values()):
        raise BoundaryError("policy result claims must be strings")
    return service.signer.sign(claims, now=datetime.now(UTC))


def _parse_collateral(collateral_json: str) -> QuoteCollateral:
    # The same collateral comes back for every quote of a platform; parsing it once keeps the verifier's
    # caches (keyed by object) effective.
    digest = hashlib.sha256(collateral_json.encode("utf-8")).digest()
    with _lock:
        cached = _collateral.get(digest)
    if cached is not None:
        return cached
    try:
        parsed = QuoteCollateral.from_json(collateral_json)
    except InvalidCollateral as exc:
        raise Refused(502, "InvalidCollateral", f"the collateral for this quote is unusable: {exc}") from exc
    with _lock:
        _collateral[digest] = parsed
        while len(_collateral) > _COLLATERAL_CACHE_SIZE:
            _collateral.popitem(last=False)
    return parsed


def _parsed_policy(text: str) -> Policy:
    # Parsing the default policy takes about 1 ms, as long as verifying the quote; the stored policy comes
    # back on every request, so its parsed (frozen) form is kept, keyed by the digest of the exact text.
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    with _lock:
        cached = _policies.get(digest)
        if cached is not None:
            _policies.move_to_end(digest)
            return cached
    parsed = parse_policy(text)
    with _lock:
        _policies[digest] = parsed
        while len(_policies) > _POLICY_CACHE_SIZE:
            _policies.popitem(last=False)
    return parsed


def _incoming(claims: dict[str, Any]) -> list[Claim]:
    # The policy language has scalar claims only: lists become several claims of one type, objects (the
    # collateral hashes, x-ms-runtime) are not offered to the policy.
    incoming = []
    for name, value in claims.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str | int | bool):
                incoming.append(Claim(name, item))
    return incoming


def _policy_text(policy: str, what: str) -> str:
    try:
        return policy_text_from_jws(policy) if _COMPACT_JWS.fullmatch(policy) else policy
    except InvalidPolicy as exc:
        raise Refused(400, "InvalidPolicy", f"{what}: {exc}") from exc


def _attest(
    request_json: str, attestation_type: str, policy_text: str, collateral_json: str, now: int
) -> str:
    with _lock:
        service = _current.get("service")
    if service is None:
        raise UsageError("attest was called before init")
    at = datetime.fromtimestamp(now, UTC)
    # 1. The request, parsed here again: the host's reading is not trusted.
    try:
        request = parse_attest_request(request_json, attestation_type)
    except BoundaryError as exc:
        raise Refused(400, "InvalidParameter", str(exc)) from exc
    # 2. The quote, out of its Open Enclave envelope when it has one.
    try:
        quote = (
            unwrap_evidence(request.evidence)[1] if attestation_type == "OpenEnclave" else request.evidence
        )
        collateral = _parse_collateral(collateral_json)
        # 3. DCAP verification against Intel's root (and the simulated root when configured at launch).
        verified = service.verifier.verify(quote, collateral, now=at)
    except InvalidQuote as exc:
        raise Refused(400, "InvalidEvidence", str(exc)) from exc
    except VerificationError as exc:
        raise Refused(400, "EvidenceVerificationFailed", str(exc)) from exc
    # 4. Runtime data binding, as MAA does it: SHA-256(runtimeData) is the first half of the report data.
    runtime = request.runtime_data
    if runtime is not None and not hmac.compare_digest(
        hashlib.sha256(runtime.data).digest(), bytes(verified.body.report_data)[:32]
    ):
        raise Refused(
            400, "RuntimeDataMismatch", "SHA-256 of runtimeData does not match the quote's report data[0:32]"
        )
    init_time = request.init_time_data
    claims = sgx_claims(
        verified,
        runtime_data=runtime.data if runtime else None,
        runtime_json=runtime.json if runtime else None,
        init_time_data=init_time.data if init_time else None,
        init_time_json=init_time.json if init_time else None,
        nonce=request.nonce,
        collateral=collateral,
    )
    # 5. The policy: the draft from the request, else the one the host stored (or the default).
    draft = request.draft_policy is not None
    chosen = request.draft_policy if request.draft_policy is not None else policy_text
    text = _policy_text(chosen, "the draft policy" if draft else "the stored policy")
    try:
        result = evaluate(_parsed_policy(text), _incoming(claims))
    except InvalidPolicy as exc:
        raise Refused(400, "InvalidPolicy", str(exc)) from exc
    except PolicyError as exc:
        raise Refused(400, "PolicyEvaluationError", f"attestation policy evaluation failed: {exc}") from exc
    claims["x-ms-policy-hash"] = policy_hash(text)
    for name, value in result.issued_claims().items():
        # A policy adds claims; it never restates what the service vouches for, nor writes in its namespaces.
        if name not in claims and name not in _RESERVED and not name.startswith(_RESERVED_PREFIXES):
            claims[name] = value
    # 6. A draft policy gets an unsigned token, as MAA answers; otherwise the enclave-held key signs.
    if draft:
        issued = int(at.timestamp())
        lifetime = int(_TOKEN_LIFETIME.total_seconds())
        return unsigned_token({
            **claims, "iss": service.signer.issuer, "iat": issued, "nbf": issued, "exp": issued + lifetime,
        })  # fmt: skip
    return service.signer.sign(claims, now=at)


@enclave.ecall
def attest(
    request_json: Annotated[str, enclave.MaxSize(MAX_REQUEST_SIZE)],
    attestation_type: Annotated[str, enclave.MaxSize(32)],
    policy_text: Annotated[str, enclave.MaxSize(MAX_POLICY_CHARS * 2)],
    collateral_json: Annotated[str, enclave.MaxSize(_MAX_COLLATERAL_SIZE)],
    now: int,
) -> str:
    """Attest one request; returns ``{"token": ...}`` or ``{"error": {"status", "code", "message"}}`` as JSON."""
    try:
        return json.dumps(
            {"token": _attest(request_json, attestation_type, policy_text, collateral_json, now)}
        )
    except Refused as refused:
        error = refused.to_error()
    except UsageError:
        # Misuse inside the service is a bug: let it reach the host as an ecall failure (a 500 there).
        raise
    except EnklaveError as exc:
        # Any other enklave error is about the evidence or the request.
        error = {"status": 400, "code": "InvalidParameter", "message": str(exc)}
    return json.dumps({"error": error})
