"""The HPKE (RFC 9180) base mode that Oblivious HTTP needs, as a thin layer over pyhpke.

This module names the suites enklave supports, checks key sizes before pyhpke sees them, derives public keys
with ``cryptography`` and maps every low-level failure to an enklave error. Only base mode (RFC 9180 §5.1.1) is
offered: Oblivious HTTP uses no PSK and no sender authentication.

Errors: :class:`~enklave.errors.InvalidKey` for a key of the wrong size or not on the curve,
:class:`~enklave.errors.BadDataError` for an encapsulated key (``enc``) that does not decode or yields a
degenerate shared secret, :class:`~enklave.errors.UsageError` for a suite identifier enklave does not support.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from pyhpke import (
    AEADId,
    CipherSuite,
    ContextInterface,
    KDFId,
    KEMId,
    KEMKeyInterface,
    KEMKeyPair,
    PyHPKEError,
)

from enklave.errors import BadDataError, InvalidKey, UsageError

__all__ = [
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
    "AEAD_CHACHA20_POLY1305",
    "KDF_HKDF_SHA256",
    "KEM_P256_HKDF_SHA256",
    "KEM_X25519_HKDF_SHA256",
    "AeadParams",
    "aead_params",
    "generate_private_key",
    "kem_enc_size",
    "public_key_from_private",
    "setup_base_receiver",
    "setup_base_sender",
]

# Identifiers from the IANA HPKE registries (RFC 9180 §7.1, §7.2, §7.3).
KEM_P256_HKDF_SHA256 = 0x0010
KEM_X25519_HKDF_SHA256 = 0x0020
KDF_HKDF_SHA256 = 0x0001
AEAD_AES_128_GCM = 0x0001
AEAD_AES_256_GCM = 0x0002
AEAD_CHACHA20_POLY1305 = 0x0003

# Npk == Nenc for both KEMs (RFC 9180 §7.1): raw X25519 keys and uncompressed SEC1 P-256 points.
_KEM_ENC_SIZE = {KEM_X25519_HKDF_SHA256: 32, KEM_P256_HKDF_SHA256: 65}
_KEM_PRIVATE_SIZE = {KEM_X25519_HKDF_SHA256: 32, KEM_P256_HKDF_SHA256: 32}


@dataclass(frozen=True, slots=True)
class AeadParams:
    """Sizes of one AEAD (RFC 9180 §7.3): key length ``nk``, nonce length ``nn`` and tag length ``nt``."""

    nk: int
    nn: int
    nt: int


_AEADS = {
    AEAD_AES_128_GCM: AeadParams(nk=16, nn=12, nt=16),
    AEAD_AES_256_GCM: AeadParams(nk=32, nn=12, nt=16),
    AEAD_CHACHA20_POLY1305: AeadParams(nk=32, nn=12, nt=16),
}


def kem_enc_size(kem_id: int) -> int:
    """Return Nenc (== Npk) of a supported KEM; raise :class:`UsageError` for any other identifier."""
    try:
        return _KEM_ENC_SIZE[kem_id]
    except KeyError:
        raise UsageError(f"unsupported HPKE KEM 0x{kem_id:04x}") from None


def aead_params(aead_id: int) -> AeadParams:
    """Return the sizes of a supported AEAD; raise :class:`UsageError` for any other identifier."""
    try:
        return _AEADS[aead_id]
    except KeyError:
        raise UsageError(f"unsupported HPKE AEAD 0x{aead_id:04x}") from None


def _suite(kem_id: int, kdf_id: int, aead_id: int) -> CipherSuite:
    kem_enc_size(kem_id)
    aead_params(aead_id)
    if kdf_id != KDF_HKDF_SHA256:
        raise UsageError(f"unsupported HPKE KDF 0x{kdf_id:04x}")
    return _cached_suite(kem_id, kdf_id, aead_id)


# A gateway serves every request with the same few suites; building one costs as much as a key schedule step.
# The key schedule's psk_id_hash and info_hash (RFC 9180 §5.1) are constant per suite and info too, but pyhpke
# computes them inside a private method with no public hook, so they are not cached here: doing so would mean
# reimplementing KeySchedule or patching pyhpke internals, for about 5 µs of a 75 µs decapsulation.
@functools.lru_cache(maxsize=32)
def _cached_suite(kem_id: int, kdf_id: int, aead_id: int) -> CipherSuite:
    return CipherSuite.new(KEMId(kem_id), KDFId(kdf_id), AEADId(aead_id))


def load_private_key(kem_id: int, private_key: bytes) -> KEMKeyInterface:
    """The parsed form of a KEM private key, to decapsulate many requests without parsing it each time.

    Raises :class:`InvalidKey` when ``private_key`` is not a private key of ``kem_id``.
    """
    kem_enc_size(kem_id)
    try:
        # The KEM alone parses the key; the KDF and AEAD of the suite do not matter here.
        kem = _cached_suite(kem_id, KDF_HKDF_SHA256, AEAD_AES_128_GCM).kem
        return kem.deserialize_private_key(private_key)
    except (ValueError, PyHPKEError) as exc:
        raise InvalidKey("the HPKE private key does not parse") from exc


def public_key_from_private(kem_id: int, private_key: bytes) -> bytes:
    """Return the serialized public key (SerializePublicKey, RFC 9180 §7.1.1) of a serialized private key.

    Raises :class:`InvalidKey` if the private key has the wrong size or is not a valid scalar.
    """
    if len(private_key) != _KEM_PRIVATE_SIZE.get(kem_id, -1):
        kem_enc_size(kem_id)
        raise InvalidKey(
            f"an HPKE private key for KEM 0x{kem_id:04x} must be {_KEM_PRIVATE_SIZE[kem_id]} bytes"
        )
    try:
        if kem_id == KEM_X25519_HKDF_SHA256:
            x_key = x25519.X25519PrivateKey.from_private_bytes(private_key)
            return x_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ec_key = ec.derive_private_key(int.from_bytes(private_key, "big"), ec.SECP256R1())
        return ec_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    except ValueError as exc:
        raise InvalidKey(f"invalid HPKE private key for KEM 0x{kem_id:04x}") from exc


def generate_private_key(kem_id: int) -> bytes:
    """Return a fresh random serialized private key (SerializePrivateKey, RFC 9180 §7.1.2) for ``kem_id``."""
    kem_enc_size(kem_id)
    if kem_id == KEM_X25519_HKDF_SHA256:
        return x25519.X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    scalar = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
    return scalar.to_bytes(32, "big")


def _check_public_key(kem_id: int, public_key: bytes) -> None:
    if len(public_key) != kem_enc_size(kem_id):
        raise InvalidKey(f"an HPKE public key for KEM 0x{kem_id:04x} must be {kem_enc_size(kem_id)} bytes")
    if kem_id == KEM_P256_HKDF_SHA256:
        # Validating the point here (RFC 9180 §7.1.4) keeps an off-curve key from reaching the DH at all.
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
        except ValueError as exc:
            raise InvalidKey("HPKE public key is not a valid uncompressed P-256 point") from exc
        if public_key[0] != 0x04:
            raise InvalidKey("HPKE P-256 public keys must be uncompressed")


def setup_base_sender(
    kem_id: int,
    kdf_id: int,
    aead_id: int,
    public_key: bytes,
    info: bytes,
    *,
    ephemeral_private_key: bytes | None = None,
) -> tuple[bytes, ContextInterface]:
    """SetupBaseS (RFC 9180 §5.1.1): encapsulate to ``public_key`` and return ``(enc, sender context)``.

    ``ephemeral_private_key`` is for test vectors only: it replaces the fresh ephemeral key that Encap draws,
    which must never be reused outside tests. Raises :class:`InvalidKey` for a malformed public key and
    :class:`UsageError` for an unsupported suite.
    """
    suite = _suite(kem_id, kdf_id, aead_id)
    _check_public_key(kem_id, public_key)
    eks: KEMKeyPair | None = None
    try:
        pk_r = suite.kem.deserialize_public_key(public_key)
        if ephemeral_private_key is not None:
            pk_e = public_key_from_private(kem_id, ephemeral_private_key)
            eks = KEMKeyPair(
                suite.kem.deserialize_private_key(ephemeral_private_key),
                suite.kem.deserialize_public_key(pk_e),
            )
        return suite.create_sender_context(pk_r, info, eks=eks)
    except (ValueError, PyHPKEError) as exc:
        raise InvalidKey("HPKE encapsulation to this public key failed") from exc


def setup_base_receiver(
    kem_id: int, kdf_id: int, aead_id: int, enc: bytes, private_key: bytes | KEMKeyInterface, info: bytes
) -> ContextInterface:
    """SetupBaseR (RFC 9180 §5.1.1): decapsulate ``enc`` with ``private_key`` and return the receiver context.

    Raises :class:`BadDataError` if ``enc`` has the wrong size, is not a valid point, or yields an all-zero
    X25519 shared secret (RFC 9180 §7.1.4), and :class:`UsageError` for an unsupported suite.
    """
    suite = _suite(kem_id, kdf_id, aead_id)
    if len(enc) != kem_enc_size(kem_id):
        raise BadDataError(f"HPKE encapsulated key must be {kem_enc_size(kem_id)} bytes")
    try:
        _check_public_key(kem_id, enc)
    except InvalidKey as exc:
        raise BadDataError("HPKE encapsulated key is not a valid public key") from exc
    try:
        sk_r = (
            suite.kem.deserialize_private_key(private_key) if isinstance(private_key, bytes) else private_key
        )
        return suite.create_recipient_context(enc, sk_r, info)
    except (ValueError, PyHPKEError) as exc:
        raise BadDataError("HPKE decapsulation failed") from exc
