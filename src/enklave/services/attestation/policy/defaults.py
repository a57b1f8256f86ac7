"""The default policies MAA ships, as text.

An MAA instance that has no policy for an attestation type evaluates its default policy. For SGX enclaves the
documented default (MAA "policy examples") permits every verified enclave, marks the SGX TCB identifier as
Azure's default baseline in a configuration rule, and issues the enclave identity again under the deprecated
short names (``is-debuggable``, ``sgx-mrsigner``, ``sgx-mrenclave``, ``product-id``, ``svn``, ``tee``). The
``x-ms-sgx-*`` claims themselves are put into the token by the service, whatever the policy says.

MAA does not document a separate default for Open Enclave reports; those are SGX evidence in another
envelope, so enklave uses the same text for them.
"""

from __future__ import annotations

__all__ = ["DEFAULT_OPEN_ENCLAVE_POLICY", "DEFAULT_POLICIES", "DEFAULT_SGX_POLICY"]

DEFAULT_SGX_POLICY = (
    "version= 1.1;\n"
    "configurationrules{\n"
    '\t=> issueproperty(type="x-ms-sgx-tcbidentifier", value="azuredefault");\n'
    "};\n"
    "authorizationrules{\n"
    "\t=> permit();\n"
    "};\n"
    "issuancerules{\n"
    '\tc:[type=="x-ms-sgx-is-debuggable"] => issue(type="is-debuggable", value=c.value);\n'
    '\tc:[type=="x-ms-sgx-mrsigner"] => issue(type="sgx-mrsigner", value=c.value);\n'
    '\tc:[type=="x-ms-sgx-mrenclave"] => issue(type="sgx-mrenclave", value=c.value);\n'
    '\tc:[type=="x-ms-sgx-product-id"] => issue(type="product-id", value=c.value);\n'
    '\tc:[type=="x-ms-sgx-svn"] => issue(type="svn", value=c.value);\n'
    '\tc:[type=="x-ms-attestation-type"] => issue(type="tee", value=c.value);\n'
    "};\n"
)
"""The default policy of MAA for ``SgxEnclave`` attestation (policy version 1.1)."""

DEFAULT_OPEN_ENCLAVE_POLICY = DEFAULT_SGX_POLICY
"""The default policy for ``OpenEnclave`` attestation: the SGX default (MAA documents no other)."""

DEFAULT_POLICIES: dict[str, str] = {
    "SgxEnclave": DEFAULT_SGX_POLICY,
    "OpenEnclave": DEFAULT_OPEN_ENCLAVE_POLICY,
}
"""Default policy text by MAA attestation type name, as the REST API spells it."""
