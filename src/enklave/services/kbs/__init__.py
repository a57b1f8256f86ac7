"""The key broker service (KBS): secure key release to attested enclaves.

A key is released only when an attestation token from a trusted authority satisfies the key's release policy
(Azure Key Vault's secure key release grammar, :mod:`.release_policy`), and only wrapped to a public key that
the attested enclave put in the token (:mod:`.wrapping`: a JWE with RSA-OAEP-256 or ECDH-ES+A256KW, or HPKE).
"""

from __future__ import annotations

from enklave.services.kbs.release_policy import (
    SUPPORTED_VERSIONS,
    AllOf,
    AnyOf,
    AuthorityRule,
    ClaimCondition,
    ClaimValue,
    Condition,
    Operator,
    PolicyLimits,
    ReleasePolicy,
)
from enklave.services.kbs.wrapping import (
    HPKE_ENC_SIZE,
    unwrap_key,
    unwrap_key_hpke,
    wrap_key,
    wrap_key_hpke,
)

__all__ = [
    "HPKE_ENC_SIZE",
    "SUPPORTED_VERSIONS",
    "AllOf",
    "AnyOf",
    "AuthorityRule",
    "ClaimCondition",
    "ClaimValue",
    "Condition",
    "Operator",
    "PolicyLimits",
    "ReleasePolicy",
    "unwrap_key",
    "unwrap_key_hpke",
    "wrap_key",
    "wrap_key_hpke",
]
