"""The simulated Intel SGX PKI: root CA, PCK Platform CA, PCK certificates, TCB signing certificate, CRLs.

The shape follows Intel's "SGX PCK Certificate and Certificate Revocation List Profile Specification": ECDSA
P-256 keys and ECDSA-SHA256 signatures everywhere; a self-signed root CA (path length 1) that issues the PCK
Platform CA (path length 0), the TCB signing certificate and the root CA CRL; the PCK Platform CA issues the PCK
leaf certificates, which carry the SGX extension (OID 1.2.840.113741.1.13.1), and the PCK CRL. The DCAP verifier
(:mod:`enklave.attestation.verify`) accepts this PKI exactly as it accepts Intel's, once the caller trusts the
simulated root explicitly.

Names never pass for Intel's: every subject's organization is :data:`ORGANIZATION`, and the root is
:data:`ROOT_CA_NAME`. Only the PCK CA's common name ends in Intel's "Intel SGX PCK Platform CA", because that
suffix is how :func:`enklave.attestation.collateral_request` tells the platform CA from the processor CA.

Everything here is pure apart from key generation (``os.urandom`` through ``cryptography``): keys and times go
in, certificates and CRLs come out. Misuse raises :class:`~enklave.errors.UsageError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from enklave._x509 import DECODE_ERRORS
from enklave.attestation.trust import SIMULATED_PKI_ORGANIZATION
from enklave.errors import UsageError
from enklave.platform.simulated import _der_writer as der
from enklave.sgx.pck import SGX_EXTENSIONS_OID, PckConfiguration, PckTcb, SgxType

__all__ = [
    "CA_VALIDITY",
    "LEAF_VALIDITY",
    "ORGANIZATION",
    "PCK_CA_NAME",
    "PCK_NAME",
    "ROOT_CA_NAME",
    "TCB_SIGNING_NAME",
    "IntelCertificates",
    "IntelKeys",
    "generate_key",
    "issue_crl",
    "issue_intel_certificates",
    "issue_pck_certificate",
    "key_from_pem",
    "key_to_pem",
    "sgx_extension_der",
    "sign_raw",
]

# The organization lives with the trust roots, so that the verifier marks this PKI simulated on sight.
ORGANIZATION: Final = SIMULATED_PKI_ORGANIZATION
ROOT_CA_NAME: Final = "enklave Simulated SGX Root CA"
PCK_CA_NAME: Final = "enklave Simulated Intel SGX PCK Platform CA"
TCB_SIGNING_NAME: Final = "enklave Simulated SGX TCB Signing"
PCK_NAME: Final = "enklave Simulated SGX PCK Certificate"

CA_VALIDITY: Final = timedelta(days=25 * 365)
"""Validity of the root CA and the PCK Platform CA (Intel's root runs from 2018 to 2049)."""
LEAF_VALIDITY: Final = timedelta(days=7 * 365)
"""Validity of the PCK and TCB signing certificates (Intel issues PCK certificates for seven years)."""

_SHA256 = hashes.SHA256()
_ARC = "1.2.840.113741.1.13.1"
_COORDINATE = 32


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key, the only key type in the SGX PKI."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM, for a file with mode 0600."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_from_pem(pem: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    """Load a P-256 private key written by :func:`key_to_pem`; raises UsageError for anything else."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except DECODE_ERRORS as exc:
        raise UsageError(f"the simulated platform's {what} key file is unreadable") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise UsageError(f"the simulated platform's {what} key is not an ECDSA P-256 key")
    return key


def sign_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-SHA256 over ``data`` as 64 bytes r || s (big-endian), the encoding of quotes and collateral."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_SHA256)))
    return r.to_bytes(_COORDINATE, "big") + s.to_bytes(_COORDINATE, "big")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )


@dataclass(frozen=True, slots=True)
class IntelKeys:
    """The simulated Intel's private keys: root CA, PCK Platform CA and TCB signing. Secret."""

    root: ec.EllipticCurvePrivateKey
    pck_ca: ec.EllipticCurvePrivateKey
    tcb_signing: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> IntelKeys:
        """Three fresh P-256 keys."""
        return cls(generate_key(), generate_key(), generate_key())


@dataclass(frozen=True, slots=True)
class IntelCertificates:
    """The simulated Intel's CA and signing certificates (public)."""

    root: x509.Certificate
    pck_ca: x509.Certificate
    tcb_signing: x509.Certificate


def _builder(
    subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, not_before: datetime,
    validity: timedelta,
) -> x509.CertificateBuilder:  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + validity)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _signing_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=True, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _check_time(now: datetime) -> datetime:
    if now.utcoffset() is None:
        raise UsageError("now must be a timezone-aware datetime")
    # X.509 times have whole seconds; truncating keeps notBefore at or before the caller's instant.
    return now.replace(microsecond=0)


def _authority(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def issue_intel_certificates(keys: IntelKeys, now: datetime) -> IntelCertificates:
    """Issue the root CA (self-signed), the PCK Platform CA and the TCB signing certificate, valid from ``now``.

    Extensions as in Intel's profile: basic constraints (root path length 1, PCK CA 0, TCB signing not a CA),
    key usage, subject and authority key identifiers.
    """
    start = _check_time(now)
    root_name = _name(ROOT_CA_NAME)
    root_public = keys.root.public_key()
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_public)
    root = (
        _builder(ROOT_CA_NAME, root_name, root_public, start, CA_VALIDITY)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .sign(keys.root, _SHA256)
    )
    pck_ca = (
        _builder(PCK_CA_NAME, root_name, keys.pck_ca.public_key(), start, CA_VALIDITY)
        .add_extension(_authority(root), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .sign(keys.root, _SHA256)
    )
    tcb_signing = (
        _builder(TCB_SIGNING_NAME, root_name, keys.tcb_signing.public_key(), start, LEAF_VALIDITY)
        .add_extension(_authority(root), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_signing_usage(), critical=True)
        .sign(keys.root, _SHA256)
    )
    return IntelCertificates(root, pck_ca, tcb_signing)


def sgx_extension_der(
    *,
    ppid: bytes,
    tcb: PckTcb,
    pce_id: bytes,
    fmspc: bytes,
    sgx_type: SgxType,
    platform_instance_id: bytes | None = None,
    configuration: PckConfiguration | None = None,
) -> bytes:
    """The DER value of the SGX extension, entries in the profile's order (.1 to .7, TCB .2.1 to .2.18).

    Platform CA certificates carry ``platform_instance_id`` and ``configuration``; processor CA ones do not.
    :meth:`enklave.sgx.pck.PckExtension.from_der` parses the result back to the same values. Raises
    :class:`UsageError` for a field of the wrong size.
    """
    for name, value, size in (("ppid", ppid, 16), ("pce_id", pce_id, 2), ("fmspc", fmspc, 6)):
        if not isinstance(value, bytes) or len(value) != size:
            raise UsageError(f"{name} must be {size} bytes")
    if platform_instance_id is not None and len(platform_instance_id) != 16:
        raise UsageError("platform_instance_id must be 16 bytes")

    def entry(arc: str, value: bytes) -> bytes:
        return der.sequence(der.oid(f"{_ARC}.{arc}"), value)

    components = [entry(f"2.{index + 1}", der.integer(svn)) for index, svn in enumerate(tcb.comp_svns)]
    tcb_der = der.sequence(
        *components, entry("2.17", der.integer(tcb.pce_svn)), entry("2.18", der.octet_string(tcb.cpu_svn))
    )
    entries = [
        entry("1", der.octet_string(ppid)),
        entry("2", tcb_der),
        entry("3", der.octet_string(pce_id)),
        entry("4", der.octet_string(fmspc)),
        entry("5", der.enumerated(int(sgx_type))),
    ]
    if platform_instance_id is not None:
        entries.append(entry("6", der.octet_string(platform_instance_id)))
    if configuration is not None:
        values = (configuration.dynamic_platform, configuration.cached_keys, configuration.smt_enabled)
        flags = [
            entry(f"7.{number}", der.boolean(value))
            for number, value in enumerate(values, start=1)
            if value is not None
        ]
        entries.append(entry("7", der.sequence(*flags)))
    return der.sequence(*entries)


def issue_pck_certificate(
    keys: IntelKeys,
    certificates: IntelCertificates,
    pck_public_key: ec.EllipticCurvePublicKey,
    extension_der: bytes,
    now: datetime,
) -> x509.Certificate:
    """A PCK leaf certificate for ``pck_public_key``, issued by the PCK Platform CA, with the SGX extension.

    ``extension_der`` is the value from :func:`sgx_extension_der`; it is embedded as a non-critical
    unrecognized extension, as Intel marks it.
    """
    start = _check_time(now)
    return (
        _builder(PCK_NAME, certificates.pck_ca.subject, pck_public_key, start, LEAF_VALIDITY)
        .add_extension(_authority(certificates.pck_ca), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_signing_usage(), critical=True)
        .add_extension(x509.UnrecognizedExtension(SGX_EXTENSIONS_OID, extension_der), critical=False)
        .sign(keys.pck_ca, _SHA256)
    )


def issue_crl(
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate,
    *,
    now: datetime,
    next_update: datetime,
    number: int = 1,
) -> x509.CertificateRevocationList:
    """An empty CRL of ``issuer`` (thisUpdate ``now``, nextUpdate ``next_update``), with CRL number and AKI."""
    start = _check_time(now)
    if next_update <= start:
        raise UsageError("a CRL's nextUpdate must be after its thisUpdate")
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(start)
        .next_update(next_update.replace(microsecond=0))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_authority(issuer), critical=False)
        .sign(issuer_key, _SHA256)
    )
