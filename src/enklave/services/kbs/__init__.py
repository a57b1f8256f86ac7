"""The key broker service (KBS): secure key release to attested enclaves.

A key is released only when an attestation token from a trusted authority satisfies the key's release policy
(Azure Key Vault's secure key release grammar, :mod:`.release_policy`), and only wrapped to a public key that
the attested enclave put in the token (:mod:`.wrapping`: a release is a JWE with RSA-OAEP-256 for RSA keys and HPKE
for P-256 keys).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enklave.services._lazy import lazy_attribute
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
    unwrap_released_key,
    wrap_key,
    wrap_key_hpke,
    wrap_released_key,
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
    "unwrap_released_key",
    "wrap_key",
    "wrap_key_hpke",
    "wrap_released_key",
]

if TYPE_CHECKING:
    from enklave.services.kbs.app import create_app
    from enklave.services.kbs.client import KbsClient
    from enklave.services.kbs.service import Authority, KbsConfig, KeyBrokerService

__all__ += ["Authority", "KbsClient", "KbsConfig", "KeyBrokerService", "create_app"]

# The service side loads on first use only: the KBS enclave imports this package (release policies, wrapping,
# key models) and must not load the host, storage and HTTP stacks with it.
_LAZY = {
    "KbsClient": "enklave.services.kbs.client",
    "KeyBrokerService": "enklave.services.kbs.service",
    "KbsConfig": "enklave.services.kbs.service",
    "Authority": "enklave.services.kbs.service",
    "create_app": "enklave.services.kbs.app",
}


def __getattr__(name: str) -> object:
    return lazy_attribute(__name__, _LAZY, name)
