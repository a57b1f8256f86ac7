"""What a quote says about the collateral it needs: its FMSPC and which PCK CA issued its PCK certificate."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.x509.oid import NameOID

from enklave.errors import InvalidQuote
from enklave.sgx.pck import PckExtension
from enklave.sgx.quote import Quote
from enklave.sgx.views import pck_certificates

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
    certs = pck_certificates(quote)
    if not certs:
        raise InvalidQuote("the quote carries no PCK certificate chain (certification data type 5)")
    leaf = certs[0]
    names = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    issuer = str(names[0].value) if names else ""
    ca = next((value for name, value in _PCK_CA_NAMES.items() if issuer.endswith(name)), None)
    if ca is None:
        # Simulated and test PKIs name their CAs after Intel's with a prefix; anything else is unknown.
        raise InvalidQuote(f"the PCK certificate is issued by an unknown CA {issuer!r}")
    return CollateralRequest(PckExtension.from_certificate(leaf).fmspc, ca)
