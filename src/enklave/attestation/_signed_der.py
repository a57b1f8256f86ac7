"""The parts of a signed X.509 object (a certificate or a CRL) sliced from its DER, for signature checks.

A Certificate (RFC 5280 §4.1) and a CertificateList (§5.1) are both SEQUENCE { tbs, signatureAlgorithm,
signatureValue }: the signed bytes are the tbs element exactly as received, so slicing them from the original
encoding is at least as exact as encoding the parsed object again, and cheaper.
"""

from __future__ import annotations

from enklave.sgx._der import TAG_SEQUENCE, read_tlv

__all__ = ["ECDSA_WITH_SHA256_DER", "split_signed"]

# AlgorithmIdentifier { ecdsa-with-SHA256 } with its parameters absent (RFC 5758 §3.2), as DER: what every
# certificate and CRL of the SGX PKI is signed with.
ECDSA_WITH_SHA256_DER = bytes.fromhex("300a06082a8648ce3d040302")
_TAG_INTEGER = 0x02
_TAG_BIT_STRING = 0x03
_TAG_VERSION = 0xA0  # [0] EXPLICIT Version in a TBSCertificate


def _element(der: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    found, start, stop = read_tlv(der, pos, end)
    if found != tag:
        raise ValueError(f"{what}: expected identifier 0x{tag:02x}, found 0x{found:02x} at byte offset {pos}")
    return start, stop


def split_signed(der: bytes, certificate: bool) -> tuple[bytes, bytes, bytes]:
    """Split a Certificate (RFC 5280 §4.1) or, with ``certificate`` false, a CertificateList (§5.1) DER into
    ``(signed bytes, signatureAlgorithm TLV, signature)``.

    Both are SEQUENCE { tbs, signatureAlgorithm, signatureValue }: the signed bytes are the first element's
    whole TLV, sliced from the original encoding (never re-encoded), and the signature is the signatureValue
    BIT STRING's bytes. Raises ``ValueError`` (``DerError`` for bad DER) when the layout is not that, when
    bytes trail, when the BIT STRING has unused bits, or when the outer signatureAlgorithm differs from the
    TBS's inner ``signature`` field (RFC 5280 §4.1.1.2 and §5.1.1.2 require them to be identical).
    """
    end = len(der)
    start, stop = _element(der, 0, end, TAG_SEQUENCE, "signed object")
    if stop != end:
        raise ValueError(f"{end - stop} bytes trail the signed object")
    pos, tbs_end = _element(der, start, stop, TAG_SEQUENCE, "TBS")
    algorithm_end = _element(der, tbs_end, stop, TAG_SEQUENCE, "signatureAlgorithm")[1]
    signature_start, signature_end = _element(der, algorithm_end, stop, _TAG_BIT_STRING, "signatureValue")
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
        pos = _element(der, pos, tbs_end, _TAG_INTEGER, "serialNumber")[1]
    elif pos < tbs_end and der[pos] == _TAG_INTEGER:
        pos = read_tlv(der, pos, tbs_end)[2]
    algorithm = der[tbs_end:algorithm_end]
    if pos + len(algorithm) > tbs_end or not der.startswith(algorithm, pos):
        raise ValueError("the inner and outer signature algorithms differ")
    return der[start:tbs_end], algorithm, der[signature_start + 1 : signature_end]
