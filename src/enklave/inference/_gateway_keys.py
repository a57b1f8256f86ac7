"""The inference gateway's Oblivious HTTP key pairs, derived from one 32-byte seed.

Replicas that hold the same seed (released to each of them by the key broker) publish the same key
configurations, so a client that attested one replica can send its requests to any of them. The derivation is
RFC 9180's ``DeriveKeyPair(seed)`` (§7.1.3) of each KEM, so it is reproducible with any HPKE implementation:

* DHKEM(X25519, HKDF-SHA256) key pair, key id ``k``; DHKEM(P-256, HKDF-SHA256) key pair, key id ``k + 1``;
* ``k = 1 + 2 * (SHA-256("enklave/inference/key-id\\0" || seed)[0] mod 127)``, an odd number from 1 to 253, so
  that a gateway with a new seed most likely answers a client holding the old configuration with "unknown key
  id" (which clients take as the cue to attest again) rather than with a failed decryption;
* each configuration offers HKDF-SHA256 with AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305.

Runs in the enclave. Raises :class:`~enklave.errors.UsageError` for a seed that is not 32 bytes.
"""

from __future__ import annotations

import hashlib
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

from enklave.channels.ohttp import KeyConfig, OhttpServer, SymmetricSuite
from enklave.errors import UsageError

__all__ = ["KEY_ID_DOMAIN", "SEED_SIZE", "derive_servers", "key_ids"]

SEED_SIZE: Final = 32
KEY_ID_DOMAIN: Final = b"enklave/inference/key-id\x00"
# IANA HPKE identifiers (RFC 9180 §7): the KEMs, HKDF-SHA256 and the three AEADs every configuration offers.
_KEMS: Final = (KEMId.DHKEM_X25519_HKDF_SHA256, KEMId.DHKEM_P256_HKDF_SHA256)
_SUITES: Final = tuple(SymmetricSuite(0x0001, aead) for aead in (0x0001, 0x0002, 0x0003))


def key_ids(seed: bytes) -> tuple[int, int]:
    """The key ids of the X25519 and P-256 configurations derived from ``seed`` (see the module docstring)."""
    first = 1 + 2 * (hashlib.sha256(KEY_ID_DOMAIN + seed).digest()[0] % 127)
    return first, first + 1


def _private_bytes(key: object) -> bytes:
    # SerializePrivateKey (RFC 9180 §7.1.2): the raw X25519 key, or the P-256 scalar as 32 big-endian bytes.
    if isinstance(key, x25519.X25519PrivateKey):
        return key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.private_numbers().private_value.to_bytes(32, "big")
    raise UsageError("unexpected HPKE private key type")


def derive_servers(seed: bytes, *, max_message_size: int) -> list[OhttpServer]:
    """The gateway's two servers (X25519 first, then P-256) for ``seed``, each taking messages up to
    ``max_message_size`` bytes."""
    if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
        raise UsageError(f"the HPKE seed must be {SEED_SIZE} bytes")
    servers = []
    for kem, key_id in zip(_KEMS, key_ids(seed), strict=True):
        suite = CipherSuite.new(kem, KDFId.HKDF_SHA256, AEADId.AES128_GCM)
        pair = suite.kem.derive_key_pair(seed)
        config = KeyConfig(key_id, kem.value, pair.public_key.to_public_bytes(), _SUITES)
        servers.append(
            OhttpServer(config, _private_bytes(pair.private_key.raw), max_message_size=max_message_size)
        )
    return servers
