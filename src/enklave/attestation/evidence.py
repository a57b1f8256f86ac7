"""What a quote says about the collateral it needs: its FMSPC and which PCK CA issued its PCK certificate."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cryptography.x509.oid import NameOID

from enklave.errors import InvalidQuote
from enklave.sgx.pck import PckExtension
from enklave.sgx.quote import Quote
from enklave.sgx.views import pck_certificates_from_pem

__all__ = ["CollateralRequest", "collateral_request"]

# The two PCK CAs of Intel's SGX PKI, by common name, and the `ca` parameter of the PCS API that selects them.
_PCK_CA_NAMES = {"Intel SGX PCK Processor CA": "processor", "Intel SGX PCK Platform CA": "platform"}


@dataclass(frozen=True, slots=True)
class CollateralRequest:
    """The key under which collateral is fetched and cached: FMSPC (6 bytes) and PCK CA ("processor"/"platform")."""

    fmspc: bytes
    ca: str


def collateral_request(quote: Quote) -> CollateralRequest:
    """The collateral a quote needs, read from the PCK certificate it carries (certification data type 5).

    Raises :class:`InvalidQuote` when the quote carries no PCK chain or an unknown PCK CA issued it.
    """
    pem = quote.pck_chain_pem
    if pem is None:
        raise InvalidQuote("the quote carries no PCK certificate chain (certification data type 5)")
    return _request_for_chain(bytes(pem))


# Every quote of a platform carries the same PCK chain, and parsing it (PEM, X.509, Intel's SGX extension) costs
# more than the rest of a cached verification; remembering the answer per chain keeps connections and attestation
# requests after the first from paying it again. Only successful parses are remembered.
@functools.lru_cache(maxsize=64)
def _request_for_chain(pem: bytes) -> CollateralRequest:
    certs = pck_certificates_from_pem(pem)
    if not certs:
        raise InvalidQuote("the quote's PCK certificate chain holds no certificate")
    leaf = certs[0]  # decoded whole by pck_certificates_from_pem: reading its names cannot fail
    names = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    issuer = str(names[0].value) if names else ""
    ca = next((value for name, value in _PCK_CA_NAMES.items() if issuer.endswith(name)), None)
    if ca is None:
        # Simulated and test PKIs name their CAs after Intel's with a prefix; anything else is unknown.
        raise InvalidQuote(f"the PCK certificate is issued by an unknown CA {issuer!r}")
    return CollateralRequest(PckExtension.from_certificate(leaf).fmspc, ca)
