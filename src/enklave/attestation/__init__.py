"""DCAP attestation: collateral and its sources, quote verification, trust roots and appraisal policies.

The stable entry points are :func:`verify_quote` (bytes + collateral + ``now`` in, a :class:`VerifiedQuote`
out, or a :class:`~enklave.errors.VerificationError`), :class:`QuoteVerifier` (the same with a cache of
collateral checks) and :class:`EnclavePolicy` (``EnclavePolicy(...).appraise(verified)``).
"""

from __future__ import annotations

from enklave.attestation.collateral import QeIdentity, QuoteCollateral, TcbInfo, TcbLevel, TcbStatus
from enklave.attestation.evidence import CollateralRequest, collateral_request
from enklave.attestation.policy import AllOf, AnyOf, EnclavePolicy, Policy, UnsafeNoPolicy
from enklave.attestation.sources import (
    CachingCollateralSource,
    CollateralSource,
    HttpxTransport,
    MockTransport,
    OfflineCollateralSource,
    PcsCollateralSource,
    Transport,
)
from enklave.attestation.trust import TrustedRoot, intel_sgx_root
from enklave.attestation.verified import VerifiedQuote
from enklave.attestation.verify import QuoteVerifier, verify_quote

__all__ = [
    "AllOf",
    "AnyOf",
    "CachingCollateralSource",
    "CollateralRequest",
    "CollateralSource",
    "EnclavePolicy",
    "HttpxTransport",
    "MockTransport",
    "OfflineCollateralSource",
    "PcsCollateralSource",
    "Policy",
    "QeIdentity",
    "QuoteCollateral",
    "QuoteVerifier",
    "TcbInfo",
    "TcbLevel",
    "TcbStatus",
    "Transport",
    "TrustedRoot",
    "UnsafeNoPolicy",
    "VerifiedQuote",
    "collateral_request",
    "intel_sgx_root",
    "verify_quote",
]
