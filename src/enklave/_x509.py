"""What reading an X.509 object or a public key from untrusted bytes can raise.

cryptography decodes most certificate and CRL fields lazily, on first access (names, extensions, keys), and
reports malformed content with several exception types: ``ValueError`` for bad DER or content (a UTF8String
that is not UTF-8), :class:`~cryptography.x509.InvalidVersion` for a version X.509 does not define,
:class:`~cryptography.x509.DuplicateExtension` for an extension present twice (RFC 5280 §4.2),
:class:`~cryptography.x509.UnsupportedGeneralNameType` for a general name it cannot represent and
:class:`~cryptography.exceptions.UnsupportedAlgorithm` for a key or signature algorithm it does not know. Only
``ValueError`` among them is a ``ValueError``. Every place that reads a certificate, CRL or key from a peer, a
file or the network catches :data:`DECODE_ERRORS` and raises its own typed error instead.
"""

from __future__ import annotations

from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

__all__ = ["DECODE_ERRORS", "decode_certificate", "decode_crl"]

DECODE_ERRORS: Final = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def decode_certificate(certificate: x509.Certificate) -> x509.Certificate:
    """Read every lazily decoded field of ``certificate`` now, so that malformed content raises one of
    :data:`DECODE_ERRORS` here, where the caller turns it into its own error, rather than where a field is first
    used; returns the certificate."""
    _ = (
        certificate.subject, certificate.issuer, certificate.extensions, certificate.public_key(),
        certificate.not_valid_before_utc, certificate.not_valid_after_utc, certificate.signature_hash_algorithm,
    )  # fmt: skip
    return certificate


def decode_crl(crl: x509.CertificateRevocationList) -> x509.CertificateRevocationList:
    """Read the lazily decoded fields of ``crl`` now (as :func:`decode_certificate` does); returns the CRL."""
    _ = (crl.issuer, crl.extensions, crl.last_update_utc, crl.next_update_utc, crl.signature_hash_algorithm)
    return crl
