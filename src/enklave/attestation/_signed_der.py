"""The parts of a signed X.509 object (a certificate or a CRL) sliced from its DER, for signature checks.

A Certificate (RFC 5280 §4.1) and a CertificateList (§5.1) are both SEQUENCE { tbs, signatureAlgorithm,
signatureValue }: the signed bytes are the tbs element exactly as received, so slicing them from the original
encoding is at least as exact as encoding the parsed object again, and cheaper. The issuer and subject names
are sliced too, so that chaining can compare names as bytes first (identical encodings are equal names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from enklave.sgx._der import TAG_INTEGER, TAG_SEQUENCE, expect, read_tlv

__all__ = ["ECDSA_WITH_SHA256_DER", "SignedObject", "SignedParts", "split_signed"]

# AlgorithmIdentifier { ecdsa-with-SHA256 } with its parameters absent (RFC 5758 §3.2), as DER: what every
# certificate and CRL of the SGX PKI is signed with.
ECDSA_WITH_SHA256_DER = bytes.fromhex("300a06082a8648ce3d040302")
_TAG_BIT_STRING = 0x03
_TAG_VERSION = 0xA0  # [0] EXPLICIT Version in a TBSCertificate


class SignedParts(NamedTuple):
    """A signed object's parts, each sliced from its DER."""

    tbs: bytes
    """The signed bytes: the whole tbsCertificate or tbsCertList element."""
    algorithm: bytes
    """The signatureAlgorithm AlgorithmIdentifier element."""
    signature: bytes
    """The signatureValue BIT STRING's bytes (for ECDSA, the DER Ecdsa-Sig-Value)."""
    issuer: bytes
    """The issuer Name element."""
    subject: bytes
    """The subject Name element; empty for a CRL, which has none."""


def split_signed(der: bytes, certificate: bool) -> SignedParts:
    """Split a Certificate (RFC 5280 §4.1) or, with ``certificate`` false, a CertificateList (§5.1) DER into
    its :class:`SignedParts`.

    Both are SEQUENCE { tbs, signatureAlgorithm, signatureValue }: the signed bytes are the first element's
    whole TLV, sliced from the original encoding (never re-encoded), and the signature is the signatureValue
    BIT STRING's bytes. Raises ``ValueError`` (``DerError`` for bad DER) when the layout is not that, when
    bytes trail, when the BIT STRING has unused bits, or when the outer signatureAlgorithm differs from the
    TBS's inner ``signature`` field (RFC 5280 §4.1.1.2 and §5.1.1.2 require them to be identical).
    """
    end = len(der)
    start, stop = expect(der, 0, end, TAG_SEQUENCE, "signed object")
    if stop != end:
        raise ValueError(f"{end - stop} bytes trail the signed object")
    pos, tbs_end = expect(der, start, stop, TAG_SEQUENCE, "TBS")
    algorithm_end = expect(der, tbs_end, stop, TAG_SEQUENCE, "signatureAlgorithm")[1]
    signature_start, signature_end = expect(der, algorithm_end, stop, _TAG_BIT_STRING, "signatureValue")
    if signature_end != stop:
        raise ValueError("data follows the signatureValue")
    if signature_start == signature_end or der[signature_start] != 0:
        raise ValueError("the signatureValue BIT STRING has unused bits")
    # The inner signature AlgorithmIdentifier follows [0] version and serialNumber in a TBSCertificate, and
    # the optional version INTEGER in a TBSCertList. A DER element is self-delimiting, so the inner field is
    # identical to the outer one exactly when the outer TLV's bytes stand at its place, inside the TBS.
    if certificate:
        if pos < tbs_end and der[pos] == _TAG_VERSION:
            pos = read_tlv(der, pos, tbs_end)[2]
        pos = expect(der, pos, tbs_end, TAG_INTEGER, "serialNumber")[1]
    elif pos < tbs_end and der[pos] == TAG_INTEGER:
        pos = read_tlv(der, pos, tbs_end)[2]
    algorithm = der[tbs_end:algorithm_end]
    if pos + len(algorithm) > tbs_end or not der.startswith(algorithm, pos):
        raise ValueError("the inner and outer signature algorithms differ")
    # issuer follows the signature field in both; a certificate's subject follows its validity (§4.1).
    issuer_start = pos + len(algorithm)
    issuer_end = expect(der, issuer_start, tbs_end, TAG_SEQUENCE, "issuer")[1]
    subject = b""
    if certificate:
        validity_end = expect(der, issuer_end, tbs_end, TAG_SEQUENCE, "validity")[1]
        subject = der[validity_end : expect(der, validity_end, tbs_end, TAG_SEQUENCE, "subject")[1]]
    return SignedParts(
        der[start:tbs_end],
        algorithm,
        der[signature_start + 1 : signature_end],
        der[issuer_start:issuer_end],
        subject,
    )


@dataclass(frozen=True, slots=True)
class SignedObject:
    """The DER a certificate (or, with ``certificate`` false, a CRL) was read from, for checks of its signature.

    :meth:`parts` splits it on first use and keeps the result, as the parsed certificate objects keep their
    lazily decoded fields: an object held by a collateral is split once, however often it is verified, while
    the signature itself is checked on every verification. Equality is that of the DER.
    """

    der: bytes
    certificate: bool
    _parts: SignedParts | None = field(default=None, init=False, repr=False, compare=False)

    def parts(self) -> SignedParts:
        """The object's parts; raises ``ValueError`` as :func:`split_signed` does, every time it is asked."""
        parts = self._parts
        if parts is None:
            parts = split_signed(self.der, self.certificate)
            # Two threads may both split: they store equal values.
            object.__setattr__(self, "_parts", parts)
        return parts
