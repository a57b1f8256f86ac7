"""DCAP attestation: collateral and its sources, quote verification, trust roots and appraisal policies.

The stable entry points are :func:`verify_quote` (bytes + collateral + ``now`` in, a :class:`VerifiedQuote`
out, or a :class:`~enklave.errors.VerificationError`), :class:`QuoteVerifier` (the same with a cache of
collateral checks) and :class:`EnclavePolicy` (``EnclavePolicy(...).appraise(verified)``).
"""

from __future__ import annotations

from enklave.attestation.appraiser import Appraiser, verify_with_collateral
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
from enklave.attestation.tokens import (
    HttpJwksSource,
    JwksSource,
    StaticJwksSource,
    TokenSigner,
    TokenVerifier,
    VerifiedToken,
    sgx_claims,
    unsigned_token,
)
from enklave.attestation.trust import TrustedRoot, intel_sgx_root
from enklave.attestation.verified import VerifiedQuote
from enklave.attestation.verify import QuoteVerifier, verify_quote

__all__ = [
    "AllOf",
    "AnyOf",
    "Appraiser",
    "CachingCollateralSource",
    "CollateralRequest",
    "CollateralSource",
    "EnclavePolicy",
    "HttpJwksSource",
    "HttpxTransport",
    "JwksSource",
    "MockTransport",
    "OfflineCollateralSource",
    "PcsCollateralSource",
    "Policy",
    "QeIdentity",
    "QuoteCollateral",
    "QuoteVerifier",
    "StaticJwksSource",
    "TcbInfo",
    "TcbLevel",
    "TcbStatus",
    "TokenSigner",
    "TokenVerifier",
    "Transport",
    "TrustedRoot",
    "UnsafeNoPolicy",
    "VerifiedQuote",
    "VerifiedToken",
    "collateral_request",
    "intel_sgx_root",
    "sgx_claims",
    "unsigned_token",
    "verify_quote",
    "verify_with_collateral",
]
