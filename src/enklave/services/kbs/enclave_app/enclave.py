"""The trusted part of enklave's key broker: the key-encryption key, key creation and every release check.

The host (``enklave.services.kbs.service``) owns the sockets and the storage; it is not trusted with key
material. It hands this enclave encrypted key records, release policies and attestation tokens, and gets back
encrypted records, public keys and wrapped keys. Key material exists in clear only in here.

Ecalls:

* ``init(sealed_kek)``: unseal the key-encryption key (KEK, AES-256), or create it on first start, and load the
  trusted authorities (``{issuer: JWKS}``) from ``authorities.json`` in the bundle; returns the sealed KEK
  (sealed to this MRENCLAVE).
* ``create_key(name, spec_json, policy_json)``: create a key in here; returns the canonical policy, the
  encrypted key material (AES-256-GCM under the KEK, bound to name, spec and policy) and the public JWK.
* ``set_policy(name, spec_json, old_policy_json, encrypted, new_policy_json)``: re-bind a key to a new policy.
* ``release(name, spec_json, policy_json, encrypted, token, nonce, now)``: verify the token with the pinned
  authority of its issuer, evaluate the key's release policy over its claims, and wrap the key material to the
  public key the attested enclave put in ``x-ms-runtime``; returns JSON ``{"value": jwe, "quote": base64url,
  "audit": {...}}`` or ``{"error": {"status", "code", "message"}, "audit": {...}}``. The quote is this enclave's,
  over :func:`~enklave.services.kbs.release_evidence.release_report_data` of the key name, the recipient key and
  the wrapped value: the recipient checks it, so a host cannot pass off a value it wrapped itself as a release.
  The audit record never holds key material.

What the host could do wrong is bounded: a record it swapped or whose policy it changed does not decrypt (the
associated data binds name, spec and policy). Time is the host's: a host that sets the clock back can make an
expired attestation token valid again, so token lifetimes bound nothing against the host itself. The
authorities and their pinned keys are a measured file of the bundle: a host that changes them (to trust a key of
its own) gets an enclave with another MRENCLAVE, which cannot unseal the KEK, so no key is ever released by it.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from datetime import UTC, datetime
from typing import Annotated, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enklave import enclave
from enklave._json import loads
from enklave.attestation._jwks import b64url_encode
from enklave.attestation.tokens import MAX_TOKEN_SIZE, StaticJwksSource, TokenVerifier
from enklave.errors import (
    BindingError,
    BoundaryError,
    ExpiredError,
    InvalidKey,
    InvalidPolicy,
    InvalidToken,
    PolicyError,
    SealingError,
    SignatureError,
    TransportError,
    UsageError,
)
from enklave.services._response import Refused
from enklave.services.kbs.keys import KeySpec, check_key_name, record_aad
from enklave.services.kbs.release_evidence import release_report_data
from enklave.services.kbs.release_policy import ReleasePolicy
from enklave.services.kbs.wrapping import wrap_released_key

_KEK_AAD = b"enklave kbs key-encryption key v1"
_KEK_SIZE = 32
_NONCE_SIZE = 12
_MAX_POLICY = 64 << 10
_MAX_RECORD = 64 << 10
_MAX_AUTHORITIES = 1 << 20
AUTHORITIES_FILE = "authorities.json"
_AUDIT_CLAIMS = {
    "iss": "iss",
    "jti": "jti",
    "mrenclave": "x-ms-sgx-mrenclave",
    "mrsigner": "x-ms-sgx-mrsigner",
    "product_id": "x-ms-sgx-product-id",
    "svn": "x-ms-sgx-svn",
}

_lock = threading.Lock()
# The one state, replaced as a whole by init: the KEK and a verifier per pinned authority.
_state: dict[str, Any] = {}


def _kek() -> AESGCM:
    with _lock:
        kek = _state.get("kek")
    if not isinstance(kek, AESGCM):
        raise UsageError("the key broker enclave was called before init")
    return kek


def _verifiers() -> dict[str, TokenVerifier]:
    with _lock:
        verifiers = _state.get("verifiers")
    if not isinstance(verifiers, dict):
        raise UsageError("the key broker enclave was called before init")
    return verifiers


@enclave.ecall
def init(
    sealed_kek: Annotated[bytes, enclave.MaxSize(4096)] | None,
) -> bytes:
    """Unseal (or create) the KEK and load the measured authorities; returns the sealed KEK."""
    if sealed_kek is None:
        kek = enclave.random_bytes(_KEK_SIZE)
    else:
        kek = enclave.unseal(sealed_kek, policy="unique", aad=_KEK_AAD)
        if len(kek) != _KEK_SIZE:
            raise BoundaryError("the sealed key-encryption key has the wrong size")
    authorities_json = enclave.bundle_file(AUTHORITIES_FILE)
    if len(authorities_json) > _MAX_AUTHORITIES:
        raise BoundaryError("the measured authorities file is too large")
    try:
        authorities = loads(authorities_json)
    except ValueError as exc:
        raise BoundaryError("the authorities are not JSON") from exc
    if not isinstance(authorities, dict):
        raise BoundaryError("the authorities must be an object of issuer to JWKS")
    verifiers = {}
    for issuer, jwks in authorities.items():
        if not isinstance(jwks, dict):
            raise BoundaryError("each authority's JWKS must be an object")
        # The keys are pinned: the verifier only ever sees this JWKS, never the token's jku or x5c.
        verifiers[issuer] = TokenVerifier(issuer, StaticJwksSource(jwks))
    with _lock:
        _state["kek"] = AESGCM(kek)
        _state["verifiers"] = verifiers
    return enclave.seal(kek, policy="unique", aad=_KEK_AAD)


def _spec(spec_json: str) -> KeySpec:
    try:
        document = loads(spec_json)
        return KeySpec.parse(document["kty"], document.get("key_size"), document.get("crv"))
    except (ValueError, KeyError, TypeError) as exc:
        raise BoundaryError("the key spec is malformed") from exc


def _encrypt(material: bytes, aad: bytes) -> bytes:
    nonce = enclave.random_bytes(_NONCE_SIZE)
    return nonce + _kek().encrypt(nonce, material, aad)


def _decrypt(encrypted: bytes, aad: bytes) -> bytes:
    try:
        return _kek().decrypt(encrypted[:_NONCE_SIZE], encrypted[_NONCE_SIZE:], aad)
    except (InvalidTag, ValueError) as exc:
        raise SealingError(
            "the key record does not decrypt: it was tampered with, or its name, type or policy was changed"
        ) from exc


def _public_jwk(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> dict[str, str]:
    if isinstance(private, rsa.RSAPrivateKey):
        numbers = private.public_key().public_numbers()
        return {
            "kty": "RSA",
            "n": b64url_encode(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url_encode(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
        }
    point = private.public_key().public_numbers()
    size = (private.curve.key_size + 7) // 8
    return {
        "kty": "EC",
        "crv": "P-256" if isinstance(private.curve, ec.SECP256R1) else "P-384",
        "x": b64url_encode(point.x.to_bytes(size, "big")),
        "y": b64url_encode(point.y.to_bytes(size, "big")),
    }


def _canonical_policy(policy_json: str) -> str:
    return ReleasePolicy.from_json(policy_json).to_json()


@enclave.ecall
def create_key(
    name: Annotated[str, enclave.MaxSize(128)],
    spec_json: Annotated[str, enclave.MaxSize(256)],
    policy_json: Annotated[str, enclave.MaxSize(_MAX_POLICY)],
) -> dict[str, bytes]:
    """Create a key in here: ``{"policy": canonical policy, "encrypted": bytes, "public_jwk": JSON or ""}``.

    Raises :class:`InvalidPolicy` for a policy that does not parse and :class:`BoundaryError` for a bad name
    or spec. AES keys are 32 random bytes; RSA and EC private keys are kept as PKCS#8 DER.
    """
    check_key_name(name)
    spec = _spec(spec_json)
    policy = _canonical_policy(policy_json)
    public = ""
    if spec.kty == "oct":
        material = enclave.random_bytes(32)
    else:
        private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if spec.kty == "RSA":
            private = rsa.generate_private_key(public_exponent=65537, key_size=spec.size or 2048)
        else:
            curve = ec.SECP256R1() if spec.curve == "P-256" else ec.SECP384R1()
            private = ec.generate_private_key(curve)
        material = private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public = json.dumps(_public_jwk(private), sort_keys=True)
    encrypted = _encrypt(material, record_aad(name, spec, policy))
    return {"policy": policy.encode(), "encrypted": encrypted, "public_jwk": public.encode()}


@enclave.ecall
def set_policy(
    name: Annotated[str, enclave.MaxSize(128)],
    spec_json: Annotated[str, enclave.MaxSize(256)],
    old_policy_json: Annotated[str, enclave.MaxSize(_MAX_POLICY)],
    encrypted: Annotated[bytes, enclave.MaxSize(_MAX_RECORD)],
    new_policy_json: Annotated[str, enclave.MaxSize(_MAX_POLICY)],
) -> dict[str, bytes]:
    """Re-encrypt a key under a new policy binding: ``{"policy": canonical new policy, "encrypted": bytes}``."""
    check_key_name(name)
    spec = _spec(spec_json)
    policy = _canonical_policy(new_policy_json)
    material = _decrypt(encrypted, record_aad(name, spec, old_policy_json))
    return {"policy": policy.encode(), "encrypted": _encrypt(material, record_aad(name, spec, policy))}


def _unverified_claims(token: str) -> dict[str, Any]:
    # Only for choosing the authority and for the audit record of a refusal: never trusted for a decision.
    try:
        part = token.split(".")[1]
        claims = loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def _audit(claims: dict[str, Any], verified: bool) -> dict[str, Any]:
    record: dict[str, Any] = {"token_verified": verified}
    for field, claim in _AUDIT_CLAIMS.items():
        value = claims.get(claim)
        if isinstance(value, str):
            record[field] = value[:256]
        elif isinstance(value, int) and not isinstance(value, bool):
            record[field] = value
    return record


def _runtime_key(claims: Any) -> dict[str, Any]:
    """The enclave's public key from ``x-ms-runtime``: the first RSA/EC entry of ``keys`` (as Azure's secure
    key release samples put it), or ``jwk``."""
    runtime = claims.get("x-ms-runtime")
    if isinstance(runtime, dict):
        keys = runtime.get("keys")
        if isinstance(keys, list):
            for entry in keys:
                if isinstance(entry, dict) and entry.get("kty") in ("RSA", "EC"):
                    return entry
        single = runtime.get("jwk")
        if isinstance(single, dict):
            return single
    raise Refused(
        403, "MissingRuntimeKey", "the token's x-ms-runtime claim holds no RSA or EC public key to wrap to"
    )


def _release(
    name: str,
    spec_json: str,
    policy_json: str,
    encrypted: bytes,
    token: str,
    nonce: str | None,
    now: int,
    seen: dict[str, bool],
) -> tuple[str, bytes]:
    at = datetime.fromtimestamp(now, UTC)
    # 1. The authority: the token's (unverified) issuer selects a pinned verifier; unknown issuers are refused.
    unverified = _unverified_claims(token)
    if not unverified:
        raise Refused(400, "InvalidToken", "the token is not a JWT with a JSON claims object")
    issuer = unverified.get("iss")
    verifier = _verifiers().get(issuer) if isinstance(issuer, str) else None
    if verifier is None:
        raise Refused(403, "UntrustedAuthority", "the token's issuer is not a trusted authority")
    # 2. Signature, issuer, lifetime and nonce, against the pinned keys.
    try:
        verified = verifier.verify(token, nonce=nonce, now=at)
    except InvalidToken as exc:
        raise Refused(400, "InvalidToken", str(exc)) from exc
    except ExpiredError as exc:
        raise Refused(403, "TokenExpired", str(exc)) from exc
    except (SignatureError, PolicyError, BindingError, TransportError) as exc:
        raise Refused(403, "TokenVerificationFailed", str(exc)) from exc
    claims = dict(verified.claims)
    seen["verified"] = True
    # 3. The key's release policy over the verified claims (its authority must be the token's issuer).
    spec = _spec(spec_json)
    try:
        policy = ReleasePolicy.from_json(policy_json)
        policy.evaluate(verified.issuer, claims)
    except InvalidPolicy as exc:
        raise Refused(500, "InvalidStoredPolicy", f"the key's stored policy does not parse: {exc}") from exc
    except PolicyError as exc:
        raise Refused(403, "ReleasePolicyNotSatisfied", str(exc)) from exc
    # 4. The recipient: the public key the attested enclave put in its runtime data.
    recipient = _runtime_key(claims)
    # 5. The key material, decrypted here and wrapped at once; it is never returned in clear.
    material = _decrypt(encrypted, record_aad(check_key_name(name), spec, policy_json))
    try:
        wrapped = wrap_released_key(material, recipient)
        binding = release_report_data(name, recipient, wrapped)
    except InvalidKey as exc:
        raise Refused(
            403, "InvalidRuntimeKey", f"the token's runtime key cannot be wrapped to: {exc}"
        ) from exc
    # 6. This enclave's evidence that it made this release: a quote binding the name, the recipient and the
    #    wrapped value, so that the recipient can tell it from a value the host wrapped to it.
    return wrapped, enclave.get_quote(binding)


@enclave.ecall
def release(
    name: Annotated[str, enclave.MaxSize(128)],
    spec_json: Annotated[str, enclave.MaxSize(256)],
    policy_json: Annotated[str, enclave.MaxSize(_MAX_POLICY)],
    encrypted: Annotated[bytes, enclave.MaxSize(_MAX_RECORD)],
    token: Annotated[str, enclave.MaxSize(MAX_TOKEN_SIZE)],
    nonce: Annotated[str, enclave.MaxSize(1024)] | None,
    now: int,
) -> str:
    """Release one key; returns JSON ``{"value": jwe, "quote", "audit"}`` or ``{"error", "audit"}`` (see the
    module docstring). A record that does not decrypt (tampered storage) is reported as a 500 ``KeyIntegrityError``."""
    claims = _unverified_claims(token)
    seen = {"verified": False}
    try:
        value, quote = _release(name, spec_json, policy_json, encrypted, token, nonce, now, seen)
    except Refused as refused:
        error = refused.to_error()
    except SealingError as exc:
        error = {"status": 500, "code": "KeyIntegrityError", "message": str(exc)}
    else:
        return json.dumps({"value": value, "quote": b64url_encode(quote), "audit": _audit(claims, True)})
    return json.dumps({"error": error, "audit": _audit(claims, seen["verified"])})
