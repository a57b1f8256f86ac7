"""The attestation service, compatible with Microsoft Azure Attestation (MAA).

This package holds the MAA policy language (:mod:`enklave.services.attestation.policy`), re-exported here,
and the service: its host (:mod:`.service`), ASGI app (:mod:`.app`), enclave (``enclave_app/``, package data)
and client (:mod:`.client`). ``AttestationService``, ``ServiceConfig``, ``AttestationClient`` and
``create_app`` are re-exported lazily: the service's enclave imports the policy language from this package, and
must not load the host, storage and HTTP stacks with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enklave.services._lazy import lazy_attribute
from enklave.services.attestation.policy import (
    DEFAULT_MAX_CLAIMS,
    DEFAULT_OPEN_ENCLAVE_POLICY,
    DEFAULT_POLICIES,
    DEFAULT_SGX_POLICY,
    FUNCTIONS,
    ISSUER_ATTESTATION_POLICY,
    ISSUER_ATTESTATION_SERVICE,
    ISSUER_CUSTOM_CLAIM,
    MAX_FUNCTION_NESTING,
    MAX_POLICY_CHARS,
    SUPPORTED_VERSIONS,
    Action,
    ActionVerb,
    Claim,
    ClaimRef,
    ClaimValue,
    Condition,
    FunctionCall,
    Literal,
    Operator,
    Policy,
    PolicyResult,
    PropertyCondition,
    Rule,
    evaluate,
    parse_policy,
    policy_hash,
    policy_text_from_jws,
    policy_token_hash,
    unsigned_policy_jws,
)

if TYPE_CHECKING:
    from enklave.services.attestation.app import create_app
    from enklave.services.attestation.client import AttestationClient
    from enklave.services.attestation.service import AttestationService, ServiceConfig

__all__ = [
    "DEFAULT_MAX_CLAIMS",
    "DEFAULT_OPEN_ENCLAVE_POLICY",
    "DEFAULT_POLICIES",
    "DEFAULT_SGX_POLICY",
    "FUNCTIONS",
    "ISSUER_ATTESTATION_POLICY",
    "ISSUER_ATTESTATION_SERVICE",
    "ISSUER_CUSTOM_CLAIM",
    "MAX_FUNCTION_NESTING",
    "MAX_POLICY_CHARS",
    "SUPPORTED_VERSIONS",
    "Action",
    "ActionVerb",
    "AttestationClient",
    "AttestationService",
    "Claim",
    "ClaimRef",
    "ClaimValue",
    "Condition",
    "FunctionCall",
    "Literal",
    "Operator",
    "Policy",
    "PolicyResult",
    "PropertyCondition",
    "Rule",
    "ServiceConfig",
    "create_app",
    "evaluate",
    "parse_policy",
    "policy_hash",
    "policy_text_from_jws",
    "policy_token_hash",
    "unsigned_policy_jws",
]

_LAZY = {
    "AttestationClient": "enklave.services.attestation.client",
    "AttestationService": "enklave.services.attestation.service",
    "ServiceConfig": "enklave.services.attestation.service",
    "create_app": "enklave.services.attestation.app",
}


def __getattr__(name: str) -> object:
    # The service side loads on first use only (see the module docstring).
    return lazy_attribute(__name__, _LAZY, name)
