"""Wrapping released keys to an enclave's public key: JWE (RSA-OAEP-256, ECDH-ES+A256KW) and HPKE."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwe
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from enklave.errors import BadDataError, InvalidKey, UsageError, VerificationError
from enklave.services.kbs.wrapping import (
    HPKE_ENC_SIZE,
    private_jwk_from_pkcs8,
    unwrap_key,
    unwrap_key_hpke,
    unwrap_released_key,
    wrap_key,
    wrap_key_hpke,
    wrap_released_key,
)

SECRET = b"\x5a" * 16 + b"released-key-material"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _header(token: str) -> dict[str, Any]:
    first = token.split(".", maxsplit=1)[0]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))
    return result


@pytest.fixture(scope="module")
def rsa2048() -> RSAKey:
    return RSAKey.generate_key(2048)


@pytest.fixture(scope="module")
def rsa3072() -> RSAKey:
    return RSAKey.generate_key(3072)


@pytest.fixture(scope="module")
def p256() -> ECKey:
    return ECKey.generate_key("P-256")


def _public(key: RSAKey | ECKey, **extra: Any) -> dict[str, Any]:
    return {**key.as_dict(private=False), **extra}


def _private(key: RSAKey | ECKey) -> dict[str, Any]:
    return dict(key.as_dict(private=True))


# -- JWE ---------------------------------------------------------------------------------------------------


JWE_CASES = [("rsa2048", "RSA-OAEP-256"), ("rsa3072", "RSA-OAEP-256"), ("p256", "ECDH-ES+A256KW")]


@pytest.mark.parametrize(("fixture", "alg"), JWE_CASES)
def test_jwe_round_trip_and_header(request: pytest.FixtureRequest, fixture: str, alg: str) -> None:
    key = request.getfixturevalue(fixture)
    token = wrap_key(SECRET, _public(key, kid="enclave-key-1", use="enc"))
    header = _header(token)
    assert header["alg"] == alg
    assert header["enc"] == "A256GCM"
    assert header["kid"] == "enclave-key-1"
    assert set(header) <= {"alg", "enc", "kid", "epk"}
    assert SECRET not in token.encode()
    assert unwrap_key(token, _private(key)) == SECRET
    # An independent decryption with joserfc agrees.
    assert jwe.decrypt_compact(token, key, algorithms=[alg, "A256GCM"]).plaintext == SECRET


def test_jwe_is_randomised(rsa2048: RSAKey) -> None:
    assert wrap_key(SECRET, _public(rsa2048)) != wrap_key(SECRET, _public(rsa2048))


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_jwe_wrong_private_key_cannot_unwrap(kind: str, rsa2048: RSAKey, p256: ECKey) -> None:
    key: RSAKey | ECKey = rsa2048 if kind == "rsa" else p256
    other: RSAKey | ECKey = RSAKey.generate_key(2048) if kind == "rsa" else ECKey.generate_key("P-256")
    token = wrap_key(SECRET, _public(key))
    with pytest.raises(VerificationError) as info:
        unwrap_key(token, _private(other))
    assert SECRET.hex() not in str(info.value)


def test_jwe_key_type_mismatch_is_refused(rsa2048: RSAKey, p256: ECKey) -> None:
    token = wrap_key(SECRET, _public(rsa2048))
    with pytest.raises(BadDataError, match="alg ECDH-ES"):
        unwrap_key(token, _private(p256))


def test_jwe_header_nested_too_deeply_is_bad_data(rsa2048: RSAKey) -> None:
    parts = wrap_key(SECRET, _public(rsa2048)).split(".")
    parts[0] = _b64(b"[" * 3000)
    with pytest.raises(BadDataError, match="header is not JSON"):
        unwrap_key(".".join(parts), _private(rsa2048))
    with pytest.raises(BadDataError, match="header is not JSON"):
        unwrap_released_key(".".join(parts), _private(rsa2048))


@pytest.mark.parametrize("part", [0, 1, 2, 3, 4])
def test_jwe_tampering_is_detected(p256: ECKey, part: int) -> None:
    parts = wrap_key(SECRET, _public(p256)).split(".")
    raw = bytearray(base64.urlsafe_b64decode(parts[part] + "=" * (-len(parts[part]) % 4)))
    raw[len(raw) // 2] ^= 1
    parts[part] = _b64(bytes(raw))
    # A changed header (here: the ephemeral key leaves the curve) is malformed; any other change fails the
    # key unwrap or the GCM tag.
    with pytest.raises(BadDataError if part == 0 else VerificationError):
        unwrap_key(".".join(parts), _private(p256))


def test_jwe_tampered_ciphertext_is_a_verification_error(rsa2048: RSAKey) -> None:
    parts = wrap_key(SECRET, _public(rsa2048)).split(".")
    raw = bytearray(base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4)))
    raw[-1] ^= 0x80
    parts[3] = _b64(bytes(raw))
    with pytest.raises(VerificationError):
        unwrap_key(".".join(parts), _private(rsa2048))


def test_jwe_with_other_algorithms_or_headers_is_refused(rsa2048: RSAKey) -> None:
    # RSA-OAEP with SHA-1 decrypts fine in general, but this module accepts only what it produces.
    legacy = jwe.encrypt_compact(
        {"alg": "RSA-OAEP", "enc": "A256GCM"}, SECRET, rsa2048, algorithms=["RSA-OAEP", "A256GCM"]
    )
    with pytest.raises(BadDataError, match="RSA-OAEP-256"):
        unwrap_key(legacy, _private(rsa2048))
    zipped = jwe.encrypt_compact(
        {"alg": "RSA-OAEP-256", "enc": "A256GCM", "zip": "DEF"},
        SECRET,
        rsa2048,
        algorithms=["RSA-OAEP-256", "A256GCM", "DEF"],
    )
    with pytest.raises(BadDataError, match="zip"):
        unwrap_key(zipped, _private(rsa2048))


@pytest.mark.parametrize(
    "token",
    ["", "a.b.c.d", "a.b.c.d.e.f", "!!!.a.b.c.d", _b64(b"[1]") + ".a.b.c.d", _b64(b"not json") + ".a.b.c.d"],
)
def test_malformed_jwe_is_bad_data(rsa2048: RSAKey, token: str) -> None:
    with pytest.raises(BadDataError):
        unwrap_key(token, _private(rsa2048))


def test_unwrap_needs_a_private_key(rsa2048: RSAKey) -> None:
    token = wrap_key(SECRET, _public(rsa2048))
    with pytest.raises(UsageError):
        unwrap_key(token, _public(rsa2048))
    with pytest.raises(UsageError):
        unwrap_key(token, {"kty": "oct", "k": _b64(b"k" * 32), "d": "x"})


def _weak_recipients(rsa2048: RSAKey, p256: ECKey) -> list[tuple[dict[str, Any], str]]:
    rsa1024 = RSAKey.generate_key(1024, private=False)
    p384 = ECKey.generate_key("P-384")
    x25519 = OKPKey.generate_key("X25519")
    public_rsa = _public(rsa2048)
    public_ec = _public(p256)
    off_curve_y = bytearray(base64.urlsafe_b64decode(public_ec["y"] + "=="))
    off_curve_y[-1] ^= 1
    return [
        (_public(rsa1024), "at least 2048"),
        ({**public_rsa, "e": _b64(b"\x03")}, "exponent"),
        ({**public_rsa, "e": _b64((65538).to_bytes(3, "big"))}, "exponent"),
        ({**public_rsa, "n": public_rsa["n"] + "="}, "base64url"),
        ({**public_rsa, "n": public_rsa["n"].replace("_", "/")[:-1] + "+"}, "base64url"),
        ({"kty": "RSA", "e": "AQAB"}, "'n'"),
        (dict(OctKey.generate_key(256).as_dict()), "symmetric"),
        (p384.as_dict(private=False), "P-256"),
        (x25519.as_dict(private=False), "RSA or EC"),
        (_private(rsa2048), "private members"),
        ({**public_ec, "d": "AA"}, "private members"),
        ({**public_ec, "use": "sig"}, "'use'"),
        ({**public_ec, "key_ops": ["verify"]}, "key_ops"),
        ({**public_ec, "alg": "ECDH-ES"}, "alg"),
        ({**public_rsa, "alg": "RSA1_5"}, "alg"),
        ({**public_ec, "y": _b64(bytes(off_curve_y))}, "not a point"),
        ({**public_ec, "x": _b64(b"\x01" * 31)}, "32 bytes"),
        ({"kty": "EC", "crv": "P-256"}, "'x'"),
        ({}, "kty"),
    ]


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")
def test_unacceptable_recipients_are_refused_before_encrypting(rsa2048: RSAKey, p256: ECKey) -> None:
    for recipient, fragment in _weak_recipients(rsa2048, p256):
        with pytest.raises(InvalidKey) as info:
            wrap_key(SECRET, recipient)
        assert fragment in str(info.value), (recipient.get("kty"), str(info.value))
        assert SECRET.hex() not in str(info.value)


def test_recipient_key_use_markers_that_allow_encryption(p256: ECKey) -> None:
    for extra in (
        {"use": "enc"},
        {"key_ops": ["wrapKey"]},
        {"key_ops": ["encrypt"]},
        {"alg": "ECDH-ES+A256KW"},
    ):
        assert unwrap_key(wrap_key(SECRET, _public(p256, **extra)), _private(p256)) == SECRET


@pytest.mark.parametrize("material", [b"", b"x" * (64 * 1024 + 1)])
def test_key_material_size_is_checked(p256: ECKey, material: bytes) -> None:
    with pytest.raises(UsageError):
        wrap_key(material, _public(p256))


# -- HPKE --------------------------------------------------------------------------------------------------


def _hpke_pair() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return private, public


def test_hpke_round_trip_and_layout() -> None:
    private, public = _hpke_pair()
    wrapped = wrap_key_hpke(SECRET, public, b"enklave kbs release v1")
    assert len(wrapped) == HPKE_ENC_SIZE + len(SECRET) + 16
    enc = wrapped[:HPKE_ENC_SIZE]
    assert enc[0] == 0x04
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), enc)  # A valid point: the ephemeral key.
    assert SECRET not in wrapped
    assert unwrap_key_hpke(wrapped, private, b"enklave kbs release v1") == SECRET
    assert wrap_key_hpke(SECRET, public, b"i")[:HPKE_ENC_SIZE] != wrap_key_hpke(SECRET, public, b"i")[:65]


def test_hpke_matches_rfc9180_single_shot_with_pyhpke() -> None:
    # Open the envelope with pyhpke's recipient context directly, following the documented layout.
    from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey

    private, public = _hpke_pair()
    wrapped = wrap_key_hpke(SECRET, public, b"info")
    suite = CipherSuite.new(KEMId.DHKEM_P256_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
    context = suite.create_recipient_context(
        wrapped[:65], KEMKey.from_pyca_cryptography_key(private), info=b"info"
    )
    assert context.open(wrapped[65:]) == SECRET


def test_hpke_wrong_key_info_or_tampering_is_refused() -> None:
    private, public = _hpke_pair()
    other, _ = _hpke_pair()
    wrapped = wrap_key_hpke(SECRET, public, b"ctx")
    with pytest.raises(VerificationError):
        unwrap_key_hpke(wrapped, other, b"ctx")
    with pytest.raises(VerificationError):
        unwrap_key_hpke(wrapped, private, b"other ctx")
    tampered = bytearray(wrapped)
    tampered[-1] ^= 1
    with pytest.raises(VerificationError):
        unwrap_key_hpke(bytes(tampered), private, b"ctx")
    swapped_enc = wrap_key_hpke(SECRET, public, b"ctx")[:65] + wrapped[65:]
    with pytest.raises(VerificationError):
        unwrap_key_hpke(swapped_enc, private, b"ctx")


def test_hpke_malformed_envelopes_are_bad_data() -> None:
    private, public = _hpke_pair()
    wrapped = wrap_key_hpke(SECRET, public, b"")
    with pytest.raises(BadDataError, match="too short"):
        unwrap_key_hpke(wrapped[: HPKE_ENC_SIZE + 16], private, b"")
    bad_enc = b"\x04" + b"\x00" * 64 + wrapped[65:]
    with pytest.raises(BadDataError, match="not a P-256 point"):
        unwrap_key_hpke(bad_enc, private, b"")
    with pytest.raises(BadDataError, match="too long"):
        unwrap_key_hpke(wrapped + b"\x00" * (64 * 1024), private, b"")


def test_hpke_unacceptable_recipients_are_refused() -> None:
    _, public = _hpke_pair()
    compressed = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    )
    p384 = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    off_curve = public[:-1] + bytes([public[-1] ^ 1])
    for recipient in (compressed, p384, off_curve, b"", public + b"\x00"):
        with pytest.raises(InvalidKey):
            wrap_key_hpke(SECRET, recipient, b"")
    with pytest.raises(UsageError):
        wrap_key_hpke(b"", public, b"")
    with pytest.raises(UsageError):
        wrap_key_hpke(SECRET, public, b"i" * 1025)
    with pytest.raises(UsageError):
        unwrap_key_hpke(wrap_key_hpke(SECRET, public, b""), ec.generate_private_key(ec.SECP384R1()), b"")


# -- what a release answers ----------------------------------------------------------------------------------


def test_a_release_is_a_jwe_for_rsa_and_hpke_for_p256(rsa2048: RSAKey, p256: ECKey) -> None:
    to_rsa = wrap_released_key(SECRET, _public(rsa2048))
    assert _header(to_rsa)["alg"] == "RSA-OAEP-256"
    assert unwrap_released_key(to_rsa, _private(rsa2048)) == SECRET
    to_ec = wrap_released_key(SECRET, _public(p256))
    assert to_ec.startswith("hpke.")
    assert SECRET.hex() not in to_ec and _b64(SECRET) not in to_ec
    assert unwrap_released_key(to_ec, _private(p256)) == SECRET
    # Another P-256 key does not open it, nor does a tampered envelope.
    with pytest.raises(VerificationError):
        unwrap_released_key(to_ec, _private(ECKey.generate_key("P-256")))
    flipped = to_ec[:-2] + ("A" if to_ec[-2] != "A" else "B") + to_ec[-1]
    with pytest.raises((VerificationError, BadDataError)):
        unwrap_released_key(flipped, _private(p256))
    with pytest.raises(UsageError):
        unwrap_released_key(to_ec, _private(rsa2048))


@pytest.mark.parametrize(
    "private",
    [rsa.generate_private_key(public_exponent=65537, key_size=3072), ec.generate_private_key(ec.SECP256R1())],
    ids=["RSA-3072", "P-256"],
)
def test_a_released_pkcs8_key_unwraps_what_was_wrapped_to_its_public_key(
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
) -> None:
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    jwk = private_jwk_from_pkcs8(der)
    public = {name: value for name, value in jwk.items() if name in ("kty", "n", "e", "crv", "x", "y")}
    assert unwrap_released_key(wrap_released_key(b"\x42" * 32, public), jwk) == b"\x42" * 32


def test_only_rsa_and_p256_pkcs8_keys_become_private_jwks() -> None:
    other = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for material in (other, b"\x00" * 32, b""):
        with pytest.raises(InvalidKey):
            private_jwk_from_pkcs8(material)
