"""Roots of trust for DCAP verification.

The real Intel SGX Root CA is embedded and pinned by its SHA-256 fingerprint: it is the only root trusted by
default. Any other root (Intel's test root, enklave's simulated root) must be passed explicitly as a
:class:`TrustedRoot`; a simulated root is marked so that verification results say so. A root whose subject
organization is :data:`SIMULATED_PKI_ORGANIZATION` is always marked simulated, however it was loaded, so that
simulated evidence cannot pass as real when someone trusts the simulated root's PEM file directly.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from enklave._x509 import DECODE_ERRORS, decode_certificate
from enklave.attestation._signed_der import SignedObject
from enklave.errors import InvalidCollateral, UsageError

__all__ = [
    "INTEL_SGX_ROOT_CA_PEM",
    "INTEL_SGX_ROOT_CA_SHA256",
    "SIMULATED_PKI_ORGANIZATION",
    "TrustedRoot",
    "intel_sgx_root",
]

# The Intel SGX Root CA (serial 22650cd65a9d3489f383b49552bf501b392706ac, valid 2018-05-21 to 2049-12-31),
# as served at certificates.trustedservices.intel.com/Intel_SGX_Provisioning_Certification_RootCA.pem.
INTEL_SGX_ROOT_CA_PEM = b"""-----BEGIN CERTIFICATE-----
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ
BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG
A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0
aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT
AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7
1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB
uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ
MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50
ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI
KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg
AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=
-----END CERTIFICATE-----
"""

INTEL_SGX_ROOT_CA_SHA256 = bytes.fromhex("44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3")

#: The subject organization of every certificate of enklave's simulated PKI
#: (:mod:`enklave.platform.simulated.pki` takes it from here). A root carrying it is always simulated.
SIMULATED_PKI_ORGANIZATION: Final = "enklave simulated SGX platform (not Intel)"


def _is_simulated_pki(certificate: x509.Certificate) -> bool:
    organizations = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return any(attribute.value == SIMULATED_PKI_ORGANIZATION for attribute in organizations)


@dataclass(frozen=True, slots=True)
class TrustedRoot:
    """A root certificate the caller trusts, with a name for results and logs.

    ``intel`` is set only for the embedded, pinned Intel SGX Root CA; ``simulated`` marks enklave's simulated
    platform root so that nothing it certifies can pass as real. ``simulated`` is forced to True for a
    certificate whose subject organization is :data:`SIMULATED_PKI_ORGANIZATION`, whatever the caller passed.
    Raises :class:`UsageError` for a root without an EC key, or marked ``intel`` without being the pinned
    Intel SGX Root CA (or while being simulated).
    """

    certificate: x509.Certificate
    name: str
    simulated: bool = False
    intel: bool = False
    der: bytes = field(init=False, repr=False, compare=False)
    signed: SignedObject = field(init=False, repr=False, compare=False)
    """The DER, for the checks of the certificates the root issues (see :mod:`enklave.attestation._pki`)."""
    public_key: ec.EllipticCurvePublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = self.certificate.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise UsageError(f"trusted root {self.name!r} must have an EC public key")
        # The simulated PKI's own name marks it: trusting its root file by path must not make its quotes real.
        if _is_simulated_pki(self.certificate):
            object.__setattr__(self, "simulated", True)
        if self.intel and self.simulated:
            raise UsageError("a root cannot be both Intel's and simulated")
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        object.__setattr__(self, "der", der)
        object.__setattr__(self, "signed", SignedObject(der, True))
        object.__setattr__(self, "public_key", key)
        if self.intel and not hmac.compare_digest(self.fingerprint, INTEL_SGX_ROOT_CA_SHA256):
            raise UsageError("only the pinned Intel SGX Root CA may be marked intel=True")

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the certificate's DER encoding."""
        return hashlib.sha256(self.der).digest()

    @classmethod
    def from_pem(cls, pem: bytes, *, name: str | None = None, simulated: bool = False) -> TrustedRoot:
        """Load an explicitly trusted root from PEM (or DER); raises :class:`InvalidCollateral` when unreadable.

        A root whose fingerprint is the Intel SGX Root CA's is returned as :func:`intel_sgx_root`; a root of
        enklave's simulated PKI (subject organization :data:`SIMULATED_PKI_ORGANIZATION`) is returned with
        ``simulated=True`` even when ``simulated=False`` was passed.
        """
        try:
            cert = decode_certificate(
                x509.load_pem_x509_certificate(pem) if pem.lstrip().startswith(b"-----")
                else x509.load_der_x509_certificate(pem)
            )  # fmt: skip
        except DECODE_ERRORS as exc:
            raise InvalidCollateral(f"cannot read root certificate: {exc}") from exc
        if hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest() == INTEL_SGX_ROOT_CA_SHA256:
            return intel_sgx_root()
        return cls(cert, name or cert.subject.rfc4514_string(), simulated=simulated)


@functools.cache
def intel_sgx_root() -> TrustedRoot:
    """The embedded Intel SGX Root CA, checked against its pinned fingerprint."""
    cert = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM)
    return TrustedRoot(cert, "Intel SGX Root CA", intel=True)
