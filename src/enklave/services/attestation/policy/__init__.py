"""The MAA attestation policy language (versions 1.0 to 1.2): parser, evaluator, policy hash, defaults.

A policy is text such as::

    version=1.0;
    authorizationrules { [type=="x-ms-sgx-is-debuggable", value==false] => permit(); };
    issuancerules { c:[type=="x-ms-sgx-mrsigner"] => issue(type="signer", value=c.value); };

:func:`parse_policy` turns it into a frozen :class:`Policy` (or raises
:class:`~enklave.errors.InvalidPolicy` with a line and column); :func:`evaluate` runs it over the
:class:`Claim` objects derived from verified evidence and returns a :class:`PolicyResult` with the issued
claims and properties, or raises :class:`~enklave.errors.PolicyError` when the policy does not permit.
:func:`policy_hash` computes the token's ``x-ms-policy-hash``. See docs/maa-policy.md for the language.
"""

from __future__ import annotations

from enklave.services.attestation.policy.ast import (
    Action,
    ActionVerb,
    ClaimRef,
    ClaimValue,
    Condition,
    FunctionCall,
    Literal,
    Operator,
    Policy,
    PropertyCondition,
    Rule,
)
from enklave.services.attestation.policy.defaults import (
    DEFAULT_OPEN_ENCLAVE_POLICY,
    DEFAULT_POLICIES,
    DEFAULT_SGX_POLICY,
)
from enklave.services.attestation.policy.evaluate import (
    DEFAULT_MAX_CLAIMS,
    ISSUER_ATTESTATION_POLICY,
    ISSUER_ATTESTATION_SERVICE,
    ISSUER_CUSTOM_CLAIM,
    Claim,
    PolicyResult,
    evaluate,
)
from enklave.services.attestation.policy.hash import (
    policy_hash,
    policy_text_from_jws,
    policy_token_hash,
    unsigned_policy_jws,
)
from enklave.services.attestation.policy.parser import (
    FUNCTIONS,
    MAX_FUNCTION_NESTING,
    MAX_POLICY_CHARS,
    SUPPORTED_VERSIONS,
    parse_policy,
)

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
    "evaluate",
    "parse_policy",
    "policy_hash",
    "policy_text_from_jws",
    "policy_token_hash",
    "unsigned_policy_jws",
]
