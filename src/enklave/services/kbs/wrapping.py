"""Wrap released key material to an attested enclave's public key, never handing it out in clear.

Two envelopes:

* **JWE** (RFC 7516, compact serialisation) for a recipient given as a public JWK, as Azure Key Vault's
  secure key release does with the key the enclave put in its token's ``x-ms-runtime`` claim:
  ``alg: RSA-OAEP-256`` for RSA recipients (2048 to 16384 bits, odd public exponent of at least 65537) and
  ``alg: ECDH-ES+A256KW`` for P-256 recipients, both with ``enc: A256GCM``. The protected header carries only
  ``alg``, ``enc``, ``kid`` (copied from the recipient JWK when it has one) and, for ECDH-ES, ``epk``.
* **HPKE** (RFC 9180), base mode, single shot, suite DHKEM(P-256, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM,
  for a recipient given as an uncompressed SEC1 P-256 point. The output layout is
  ``enc (65 bytes, the sender's ephemeral public key) || ciphertext (len(key_material) + 16 bytes)``; the
  caller's ``info`` binds the envelope to its context and the AAD is empty.

What the key broker answers a release with (:func:`wrap_released_key`): a JWE for an RSA recipient, and for a
P-256 recipient HPKE as ``hpke.<base64url(enc || ciphertext)>`` with ``info`` :data:`RELEASE_HPKE_INFO`;
:func:`unwrap_released_key` opens either with the recipient's private JWK.

Errors: a recipient key that is malformed, symmetric (``kty: oct``), private, not for encryption, on another
curve or too weak raises :class:`~enklave.errors.InvalidKey` before anything is encrypted. Unwrapping raises
:class:`~enklave.errors.BadDataError` for a malformed envelope and :class:`~enklave.errors.VerificationError`
when it does not decrypt under the given key (wrong key or tampered). Messages never contain key material.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwe
from joserfc.errors import DecodeError, JoseError
from joserfc.jwk import ECKey, RSAKey
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey, PyHPKEError

from enklave import _b64url
from enklave._json import loads
from enklave.errors import BadDataError, InvalidKey, UsageError, VerificationError

__all__ = [
    "HPKE_ENC_SIZE",
    "MAX_KEY_MATERIAL",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "RELEASE_HPKE_INFO",
    "private_jwk_from_pkcs8",
    "unwrap_key",
    "unwrap_key_hpke",
    "unwrap_released_key",
    "wrap_key",
    "wrap_key_hpke",
    "wrap_released_key",
]

#: Size of the HPKE encapsulated key (an uncompressed P-256 point) at the front of an HPKE envelope.
HPKE_ENC_SIZE: Final = 65
#: RSA recipients must have at least this many modulus bits.
MIN_RSA_BITS: Final = 2048
#: RSA recipients larger than this are refused (they only cost time and invite resource exhaustion).
MAX_RSA_BITS: Final = 16384
#: The HPKE ``info`` of a released key: binds the envelope to key release, so it cannot be replayed elsewhere.
RELEASE_HPKE_INFO: Final = b"enklave key release v1"
#: Largest key material this module wraps, and the bound on envelopes it will try to unwrap (times two).
MAX_KEY_MATERIAL: Final = 64 * 1024

_RSA_ALG: Final = "RSA-OAEP-256"
_EC_ALG: Final = "ECDH-ES+A256KW"
_ENC: Final = "A256GCM"
_TAG_SIZE: Final = 16
_MAX_INFO: Final = 1024
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_HEADER_MEMBERS: Final = frozenset({"alg", "enc", "kid", "epk"})
# joserfc types a JWK dict with this value type.
_Jwk = dict[str, str | list[str]]
_SUITE: Final = CipherSuite.new(KEMId.DHKEM_P256_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)


# -- JWE ---------------------------------------------------------------------------------------------------


def wrap_key(key_material: bytes, recipient_jwk: Mapping[str, Any]) -> str:
    """Encrypt ``key_material`` to the public JWK ``recipient_jwk``; return a compact JWE.

    RSA recipients get ``RSA-OAEP-256``, P-256 recipients ``ECDH-ES+A256KW``; content is ``A256GCM``.
    Raises :class:`UsageError` when the key material is empty or larger than :data:`MAX_KEY_MATERIAL`, and
    :class:`InvalidKey` when the recipient is not an acceptable public encryption key (see the module docstring).
    """
    _check_material(key_material)
    public_jwk, alg = _public_recipient(recipient_jwk)
    header: dict[str, Any] = {"alg": alg, "enc": _ENC}
    kid = recipient_jwk.get("kid")
    if isinstance(kid, str) and 0 < len(kid) <= 256:
        header["kid"] = kid
    key = RSAKey.import_key(public_jwk) if alg == _RSA_ALG else ECKey.import_key(public_jwk)
    return jwe.encrypt_compact(header, key_material, key, algorithms=[alg, _ENC])


def unwrap_key(token: str, private_jwk: Mapping[str, Any]) -> bytes:
    """Decrypt a compact JWE made by :func:`wrap_key` with the recipient's private JWK.

    Only ``RSA-OAEP-256`` (RSA keys) or ``ECDH-ES+A256KW`` (P-256 keys) with ``A256GCM`` are accepted, and the
    protected header may carry nothing but ``alg``, ``enc``, ``kid`` and ``epk`` (so no ``zip`` and no
    ``crit``). Raises :class:`UsageError` for an unusable private key, :class:`BadDataError` for a malformed
    JWE or a disallowed header, and :class:`VerificationError` when it does not decrypt under this key.
    """
    if not isinstance(private_jwk, Mapping) or "d" not in private_jwk:
        raise UsageError("unwrap_key needs a private JWK (with 'd')")
    kty = private_jwk.get("kty")
    if kty == "RSA":
        alg = _RSA_ALG
    elif kty == "EC" and private_jwk.get("crv") == "P-256":
        alg = _EC_ALG
    else:
        raise UsageError("unwrap_key needs an RSA or P-256 private JWK")
    header = _jwe_header(token)
    if header.get("alg") != alg or header.get("enc") != _ENC:
        raise BadDataError(f"JWE header must say alg {alg} and enc {_ENC} for this key")
    try:
        key = RSAKey.import_key(dict(private_jwk)) if kty == "RSA" else ECKey.import_key(dict(private_jwk))
    except (JoseError, ValueError, TypeError) as exc:
        raise UsageError("unwrap_key: the private JWK does not import") from exc
    try:
        result = jwe.decrypt_compact(token, key, algorithms=[alg, _ENC])
    except DecodeError as exc:
        raise VerificationError("JWE does not decrypt under this key (wrong key or tampered)") from exc
    except (JoseError, ValueError) as exc:
        raise BadDataError(f"JWE is malformed: {type(exc).__name__}") from exc
    return result.plaintext or b""


def _jwe_header(token: str) -> dict[str, Any]:
    """Decode and vet the protected header before any key touches the ciphertext."""
    if not isinstance(token, str) or len(token) > 4 * MAX_KEY_MATERIAL:
        raise BadDataError("JWE must be a compact serialisation string of bounded size")
    parts = token.split(".")
    if len(parts) != 5:
        raise BadDataError(f"JWE compact serialisation has 5 parts, found {len(parts)}")
    try:
        header = loads(_b64url_decode(parts[0], "JWE header"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadDataError("JWE protected header is not JSON") from exc
    if not isinstance(header, dict):
        raise BadDataError("JWE protected header is not a JSON object")
    extra = sorted(set(header) - _HEADER_MEMBERS)
    if extra:
        raise BadDataError(f"JWE protected header has disallowed members: {', '.join(extra)[:128]}")
    return header


# -- what a release answers ---------------------------------------------------------------------------------

_HPKE_PREFIX: Final = "hpke."


def private_jwk_from_pkcs8(material: bytes) -> dict[str, Any]:
    """The private JWK of an RSA or EC P-256 key given as PKCS#8 DER (how the KBS releases asymmetric keys), for
    :func:`unwrap_released_key`. Raises :class:`InvalidKey` for anything else; messages name no key material."""
    try:
        key = serialization.load_der_private_key(bytes(material), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidKey(f"the key is not a PKCS#8 private key ({type(exc).__name__})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        return dict(RSAKey.import_key(bytes(material)).as_dict(private=True))
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return dict(ECKey.import_key(bytes(material)).as_dict(private=True))
    raise InvalidKey("the key is neither an RSA nor an EC P-256 private key")


def wrap_released_key(key_material: bytes, recipient_jwk: Mapping[str, Any]) -> str:
    """Wrap a released key to the attested enclave's public JWK: RSA-OAEP-256 JWE for RSA, HPKE for P-256.

    Raises :class:`InvalidKey` for an unacceptable recipient and :class:`UsageError` for bad key material.
    """
    _check_material(key_material)
    public_jwk, alg = _public_recipient(recipient_jwk)
    if alg == _RSA_ALG:
        return wrap_key(key_material, recipient_jwk)
    point = b"\x04" + _b64url_member(public_jwk, "x") + _b64url_member(public_jwk, "y")
    return _HPKE_PREFIX + _b64url.encode(wrap_key_hpke(key_material, point, RELEASE_HPKE_INFO))


def unwrap_released_key(value: str, private_jwk: Mapping[str, Any]) -> bytes:
    """Open what :func:`wrap_released_key` made, with the recipient's private JWK.

    Raises :class:`UsageError` for an unusable private key, :class:`BadDataError` for a malformed envelope and
    :class:`VerificationError` when it does not open under this key.
    """
    if not isinstance(value, str) or not value.startswith(_HPKE_PREFIX):
        return unwrap_key(value, private_jwk)
    if (
        not isinstance(private_jwk, Mapping)
        or private_jwk.get("kty") != "EC"
        or private_jwk.get("crv") != "P-256"
    ):
        raise UsageError("an HPKE release opens with a P-256 private JWK")
    try:
        scalar = int.from_bytes(_b64url_decode(str(private_jwk.get("d", "")), "JWK member 'd'"), "big")
        private_key = ec.derive_private_key(scalar, ec.SECP256R1())
    except (BadDataError, ValueError) as exc:
        raise UsageError("the private JWK's 'd' is not a P-256 private key") from exc
    wrapped = _b64url_decode(value[len(_HPKE_PREFIX) :], "HPKE release")
    return unwrap_key_hpke(wrapped, private_key, RELEASE_HPKE_INFO)


# -- HPKE --------------------------------------------------------------------------------------------------


def wrap_key_hpke(key_material: bytes, recipient_public_key_bytes: bytes, info: bytes) -> bytes:
    """Seal ``key_material`` to an uncompressed SEC1 P-256 public key with HPKE base mode.

    Returns ``enc (65 bytes) || ciphertext`` (see the module docstring). ``info`` (at most 1024 bytes) must be
    given again to :func:`unwrap_key_hpke`. Raises :class:`UsageError` for empty or oversized key material or
    an oversized ``info``, and :class:`InvalidKey` for a recipient that is not a valid uncompressed P-256 point.
    """
    _check_material(key_material)
    _check_info(info)
    if not isinstance(recipient_public_key_bytes, bytes) or len(recipient_public_key_bytes) != HPKE_ENC_SIZE:
        raise InvalidKey("HPKE recipient must be a 65-byte uncompressed P-256 public key")
    if recipient_public_key_bytes[0] != 0x04:
        raise InvalidKey("HPKE recipient must be an uncompressed point (leading byte 0x04)")
    try:
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), recipient_public_key_bytes)
    except ValueError as exc:
        raise InvalidKey("HPKE recipient is not a point on P-256") from exc
    recipient = KEMKey.from_pyca_cryptography_key(public_key)
    enc, context = _SUITE.create_sender_context(recipient, info=info)
    return enc + context.seal(key_material)


def unwrap_key_hpke(wrapped: bytes, recipient_private_key: ec.EllipticCurvePrivateKey, info: bytes) -> bytes:
    """Open an envelope made by :func:`wrap_key_hpke` with the recipient's P-256 private key and same ``info``.

    Raises :class:`UsageError` for a private key on another curve, :class:`BadDataError` for an envelope that
    is too short or too long or whose ``enc`` is not a P-256 point, and :class:`VerificationError` when it
    does not open (wrong key, wrong ``info`` or tampered).
    """
    _check_info(info)
    if not isinstance(recipient_private_key, ec.EllipticCurvePrivateKey) or not isinstance(
        recipient_private_key.curve, ec.SECP256R1
    ):
        raise UsageError("unwrap_key_hpke needs a P-256 private key")
    if not isinstance(wrapped, bytes) or len(wrapped) <= HPKE_ENC_SIZE + _TAG_SIZE:
        raise BadDataError("HPKE envelope is too short")
    if len(wrapped) > HPKE_ENC_SIZE + _TAG_SIZE + MAX_KEY_MATERIAL:
        raise BadDataError("HPKE envelope is too long")
    enc, ciphertext = wrapped[:HPKE_ENC_SIZE], wrapped[HPKE_ENC_SIZE:]
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), enc)
    except ValueError as exc:
        raise BadDataError("HPKE envelope's enc is not a P-256 point") from exc
    recipient = KEMKey.from_pyca_cryptography_key(recipient_private_key)
    try:
        context = _SUITE.create_recipient_context(enc, recipient, info=info)
        return context.open(ciphertext)
    except (PyHPKEError, ValueError) as exc:
        raise VerificationError("HPKE envelope does not open (wrong key, wrong info or tampered)") from exc


# -- recipient key checks ----------------------------------------------------------------------------------


def _check_material(key_material: bytes) -> None:
    if not isinstance(key_material, bytes | bytearray):
        raise UsageError("key material must be bytes")
    if not key_material or len(key_material) > MAX_KEY_MATERIAL:
        raise UsageError(f"key material must be 1 to {MAX_KEY_MATERIAL} bytes")


def _check_info(info: bytes) -> None:
    if not isinstance(info, bytes) or len(info) > _MAX_INFO:
        raise UsageError(f"HPKE info must be bytes of at most {_MAX_INFO} bytes")


def _public_recipient(jwk: Mapping[str, Any]) -> tuple[_Jwk, str]:
    """Validate a recipient JWK; return a minimal public JWK (only the key members) and the JWE alg."""
    if not isinstance(jwk, Mapping):
        raise InvalidKey("recipient must be a JWK object")
    kty = jwk.get("kty")
    if kty == "oct":
        raise InvalidKey(
            "a symmetric (oct) JWK cannot be a recipient: release needs the enclave's public key"
        )
    if kty not in ("RSA", "EC"):
        raise InvalidKey("recipient JWK kty must be RSA or EC")
    present_private = sorted(_PRIVATE_MEMBERS & set(jwk))
    if present_private:
        raise InvalidKey(f"recipient JWK must be public; it has private members {', '.join(present_private)}")
    use = jwk.get("use")
    if use is not None and use != "enc":
        raise InvalidKey("recipient JWK 'use' must be 'enc'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (
        not isinstance(key_ops, list) or not ({"wrapKey", "encrypt", "deriveKey"} & set(map(str, key_ops)))
    ):
        raise InvalidKey("recipient JWK 'key_ops' must allow wrapKey, encrypt or deriveKey")
    alg = _RSA_ALG if kty == "RSA" else _EC_ALG
    declared = jwk.get("alg")
    if declared is not None and declared != alg:
        raise InvalidKey(f"recipient JWK alg must be {alg} when present")
    if kty == "RSA":
        return _rsa_recipient(jwk), alg
    return _ec_recipient(jwk), alg


def _rsa_recipient(jwk: Mapping[str, Any]) -> _Jwk:
    n = int.from_bytes(_b64url_member(jwk, "n"), "big")
    e = int.from_bytes(_b64url_member(jwk, "e"), "big")
    bits = n.bit_length()
    if bits < MIN_RSA_BITS:
        raise InvalidKey(f"recipient RSA key is {bits} bits; at least {MIN_RSA_BITS} are required")
    if bits > MAX_RSA_BITS:
        raise InvalidKey(f"recipient RSA key is {bits} bits; at most {MAX_RSA_BITS} are accepted")
    if e < 65537 or e % 2 == 0 or e.bit_length() > 256:
        raise InvalidKey("recipient RSA public exponent must be odd and at least 65537")
    try:
        rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise InvalidKey("recipient RSA key is not a valid public key") from exc
    return {"kty": "RSA", "n": str(jwk["n"]), "e": str(jwk["e"])}


def _ec_recipient(jwk: Mapping[str, Any]) -> _Jwk:
    if jwk.get("crv") != "P-256":
        raise InvalidKey("recipient EC key must be on P-256")
    x = _b64url_member(jwk, "x")
    y = _b64url_member(jwk, "y")
    if len(x) != 32 or len(y) != 32:
        raise InvalidKey("recipient P-256 coordinates must be 32 bytes each")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
    except ValueError as exc:
        raise InvalidKey("recipient EC key is not a point on P-256") from exc
    return {"kty": "EC", "crv": "P-256", "x": str(jwk["x"]), "y": str(jwk["y"])}


def _b64url_member(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidKey(f"recipient JWK member {name!r} must be a non-empty base64url string")
    try:
        return _b64url_decode(value, f"JWK member {name!r}")
    except BadDataError as exc:
        raise InvalidKey(f"recipient JWK member {name!r} is not base64url") from exc


def _b64url_decode(value: str, what: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 section 2): the URL-safe alphabet only, canonical trailing bits."""
    try:
        return _b64url.decode(value)
    except ValueError as exc:
        raise BadDataError(f"{what} {exc}") from exc
