"""seal/unseal: AES-256-GCM under keys that the platform derives as EGETKEY does.

Key schedule (docs/sealing.md):

1. ``seal_key = platform.get_seal_key(KeyRequest(policy, isv_svn, cpu_svn, key_id))``: 16 bytes, bound to
   MRENCLAVE (unique) or MRSIGNER + ISV PROD ID (product), the ISV SVN, the CPU SVN and the blob's random key id.
2. ``blob_key = HKDF-SHA256(IKM=seal_key, salt=None, info=BLOB_KEY_INFO || header, L=32)``. EGETKEY keys are
   128 bits, so the blob's strength is that of the seal key; the expansion gives AES-256 its 32-byte key and
   binds the key to the whole header. The key id in the header also makes the key unique per blob on platforms
   whose seal key has no key id (Gramine's ``/dev/attestation/keys``).
3. ``ciphertext = AES-256-GCM(blob_key, nonce, data, associated_data = header || aad)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from enklave.errors import SealingError, UsageError
from enklave.platform._base import KEY_ID_SIZE, KeyRequest, Platform
from enklave.platform._keys import cpu_svn_allows
from enklave.sealing._blob import (
    DEFAULT_LIMITS,
    NONCE_SIZE,
    TAG_SIZE,
    SealedBlob,
    SealingLimits,
    SealPolicy,
    encode_header,
    policy_code,
)

__all__ = ["BLOB_KEY_INFO", "UnsealedData", "seal", "unseal"]

BLOB_KEY_INFO = b"enklave sealed blob v1 key\0"
"""HKDF ``info`` prefix of the blob key; the blob header follows it."""

_BLOB_KEY_SIZE = 32


@dataclass(frozen=True, slots=True)
class UnsealedData:
    """What :func:`unseal` recovered: the plaintext, the authenticated aad, and how the blob was sealed."""

    data: bytes
    aad: bytes
    policy: SealPolicy
    isv_svn: int


def seal(
    platform: Platform,
    data: bytes,
    *,
    policy: SealPolicy = "unique",
    aad: bytes = b"",
    limits: SealingLimits = DEFAULT_LIMITS,
) -> bytes:
    """Encrypt and authenticate ``data`` (and authenticate ``aad``) so that only this enclave can unseal it.

    ``policy="unique"``: only an enclave with the same MRENCLAVE unseals. ``policy="product"``: any enclave of the
    same MRSIGNER and ISV PROD ID at this ISV SVN or higher unseals. Two seals of the same data differ (random
    key id and nonce). Raises :class:`~enklave.errors.UsageError` on an unknown policy or data / aad above
    ``limits``, and :class:`~enklave.errors.PlatformError` when the platform cannot derive the key.
    """
    # 1. Check the request before any work.
    key_policy = policy_code(policy)
    if len(data) > limits.max_data:
        raise UsageError(f"cannot seal {len(data)} bytes: the limit is {limits.max_data}")
    if len(aad) > limits.max_aad:
        raise UsageError(f"cannot seal with {len(aad)} bytes of aad: the limit is {limits.max_aad}")
    # 2. Seal at this enclave's own ISV SVN and CPU SVN under a fresh key id and nonce.
    identity = platform.identity
    isv_svn, cpu_svn = identity.isv_svn, bytes(identity.cpu_svn)
    key_id, nonce = os.urandom(KEY_ID_SIZE), os.urandom(NONCE_SIZE)
    header = encode_header(
        policy, identity.isv_prod_id, isv_svn, cpu_svn, key_id, nonce, len(aad), len(data) + TAG_SIZE
    )
    seal_key = platform.get_seal_key(KeyRequest(key_policy, isv_svn, cpu_svn, key_id))
    # 3. Encrypt under the blob key with the header and aad as associated data.
    ciphertext = AESGCM(_blob_key(seal_key, header)).encrypt(nonce, data, header + aad)
    return header + aad + ciphertext


def unseal(platform: Platform, blob: bytes, *, limits: SealingLimits = DEFAULT_LIMITS) -> UnsealedData:
    """Authenticate and decrypt a blob that :func:`seal` made; returns the data, the aad and the blob's policy.

    Raises :class:`~enklave.errors.InvalidSealedBlob` when the blob is malformed or above ``limits``, and
    :class:`~enklave.errors.SealingError` when it does not unseal here: tampered with, sealed by another enclave,
    signer or product, or sealed at a higher ISV SVN or CPU SVN than this enclave has (rollback refused).
    :class:`~enklave.errors.PlatformError` passes through when the platform cannot derive an older version's key
    (Gramine: see docs/sealing.md, "Migrating across versions on Gramine").
    """
    # 1. Parse and bound the blob.
    parsed = SealedBlob.from_bytes(blob, limits=limits)
    identity = platform.identity
    # 2. Check the blob's claims against our identity first, for clear errors; the MAC decides in the end.
    if parsed.isv_prod_id != identity.isv_prod_id:
        raise SealingError(
            f"sealed by ISV PROD ID {parsed.isv_prod_id}, this enclave is ISV PROD ID {identity.isv_prod_id}"
        )
    if parsed.isv_svn > identity.isv_svn:
        raise SealingError(
            f"sealed at ISV SVN {parsed.isv_svn}, this enclave has {identity.isv_svn}: rollback refused"
        )
    if not cpu_svn_allows(bytes(identity.cpu_svn), parsed.cpu_svn):
        raise SealingError("sealed at a higher CPU SVN than this platform has: rollback refused")
    # 3. Derive the key at the blob's SVNs (allowed: not above ours), so newer versions read older data.
    request = KeyRequest(policy_code(parsed.policy), parsed.isv_svn, parsed.cpu_svn, parsed.key_id)
    seal_key = platform.get_seal_key(request)
    # 4. Decrypt; a failed tag means a changed bit anywhere, or a key of another enclave or signer.
    try:
        data = AESGCM(_blob_key(seal_key, parsed.header)).decrypt(
            parsed.nonce, parsed.ciphertext, parsed.associated_data
        )
    except InvalidTag as exc:
        raise SealingError(
            "the sealed blob does not unseal here: it was tampered with, or sealed by another enclave/signer"
        ) from exc
    return UnsealedData(data=data, aad=parsed.aad, policy=parsed.policy, isv_svn=parsed.isv_svn)


def _blob_key(seal_key: bytes, header: bytes) -> bytes:
    # HKDF stretches the 128-bit EGETKEY key to AES-256's key size and binds it to every header field.
    hkdf = HKDF(algorithm=hashes.SHA256(), length=_BLOB_KEY_SIZE, salt=None, info=BLOB_KEY_INFO + header)
    return hkdf.derive(seal_key)
