"""Sealing: data that only this enclave, or this signer's product, can read back.

:func:`seal` encrypts with AES-256-GCM under a key that the platform derives as EGETKEY does, bound to the
enclave's identity (policy ``"unique"``: MRENCLAVE; ``"product"``: MRSIGNER and ISV PROD ID), its ISV SVN and
CPU SVN, and a random key id kept in the blob. :func:`unseal` authenticates every byte of the blob and refuses
data sealed by another enclave, signer or product, or at a higher SVN (rollback). The blob format is versioned
and documented in docs/sealing.md and :mod:`enklave.sealing._blob`.

Errors: :class:`~enklave.errors.InvalidSealedBlob` (malformed), :class:`~enklave.errors.SealingError` (does not
unseal here), :class:`~enklave.errors.UsageError` (bad policy or sizes), :class:`~enklave.errors.PlatformError`
(the platform could not derive the key).
"""

from __future__ import annotations

from enklave.sealing._blob import DEFAULT_LIMITS, SealedBlob, SealingLimits, SealPolicy
from enklave.sealing._seal import UnsealedData, seal, unseal

__all__ = ["DEFAULT_LIMITS", "SealPolicy", "SealedBlob", "SealingLimits", "UnsealedData", "seal", "unseal"]
