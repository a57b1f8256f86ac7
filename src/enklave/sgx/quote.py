"""SGX ECDSA quotes, versions 3 and 4, and their certification data.

Layouts follow Intel's "SGX ECDSA Quote Library API" (quote format appendix) and the DCAP headers
(``sgx_quote_3.h``, ``sgx_quote_4.h``). All integers are little-endian::

    header (48) | report body (384) | signature data length (u32) | signature data

    v3 signature data: quote signature (64) | attestation key (64) | QE report (384) | QE report signature (64)
                       | QE auth data (u16 size + data) | certification data (u16 type, u32 size, data)
    v4 signature data: quote signature (64) | attestation key (64) | certification data, normally type 6:
                       QE report certification data = QE report | QE report signature | QE auth data
                       | nested certification data (normally type 5, the PCK chain)

A v4 quote of a TDX TD (TEE type 0x81) is recognised and rejected: enklave verifies SGX enclaves. Every model
keeps the exact bytes that were signed, so verifiers check signatures over what the platform produced.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from enklave.errors import InvalidQuote
from enklave.sgx._reader import Reader
from enklave.sgx.report import REPORT_BODY_SIZE, ReportBody

__all__ = [
    "INTEL_QE_VENDOR_ID",
    "MAX_QUOTE_SIZE",
    "QUOTE_HEADER_SIZE",
    "AttestationKeyType",
    "CertificationData",
    "CertificationDataType",
    "PckIdentifier",
    "QeReportCertificationData",
    "Quote",
    "QuoteHeader",
    "TeeType",
]

QUOTE_HEADER_SIZE: Final = 48
MAX_QUOTE_SIZE: Final = 64 * 1024
"""Real quotes are about 5 KB (a PEM chain of three certificates); anything above this bound is refused."""

INTEL_QE_VENDOR_ID: Final = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
"""The QE vendor id of Intel's quoting enclave (``sgx_quote_3.h``)."""

_SIGNATURE_SIZE = 64  # ECDSA P-256 r || s, 32 bytes each, big-endian
_KEY_SIZE = 64  # ECDSA P-256 public key x || y, 32 bytes each, big-endian
_SUPPORTED_VERSIONS = (3, 4)


class AttestationKeyType(enum.IntEnum):
    """The attestation key algorithm in the quote header."""

    ECDSA_256_P256 = 2
    ECDSA_384_P384 = 3


class TeeType(enum.IntEnum):
    """The TEE type in a v4 header (reserved, zero, in v3)."""

    SGX = 0x00
    TDX = 0x81


class CertificationDataType(enum.IntEnum):
    """What the QE's certification data holds (Quote Library API, "Certification Data Type")."""

    PPID_CLEARTEXT = 1
    PPID_RSA2048_OAEP = 2
    PPID_RSA3072_OAEP = 3
    PCK_LEAF_CERT = 4
    PCK_CERT_CHAIN = 5
    QE_REPORT_CERTIFICATION_DATA = 6
    PLATFORM_MANIFEST = 7


# Types 1 to 3 carry the PCK identity: the PPID (clear or encrypted), then CPUSVN and PCESVN, then the PCE-ID
# when the producer included it (Intel's sample quotes stop after PCESVN).
_PPID_SIZES = {
    CertificationDataType.PPID_CLEARTEXT: 16,
    CertificationDataType.PPID_RSA2048_OAEP: 256,
    CertificationDataType.PPID_RSA3072_OAEP: 384,
}


# IntEnum members hash and compare as their values, so this set answers "is this a known type?" for plain ints.
_CERTIFICATION_DATA_TYPES = frozenset(CertificationDataType)


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    """The 48-byte quote header."""

    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    @classmethod
    def read(cls, r: Reader) -> QuoteHeader:
        """Read and validate a header; raises :class:`InvalidQuote`."""
        start = r.offset
        version = r.u16("quote header version")
        if version not in _SUPPORTED_VERSIONS:
            raise InvalidQuote(f"unsupported quote version {version} (supported: 3, 4)", offset=start)
        key_type = r.u16("attestation key type")
        if key_type != AttestationKeyType.ECDSA_256_P256:
            raise InvalidQuote(f"unsupported attestation key type {key_type} (supported: 2, ECDSA P-256)",
                               offset=start + 2)  # fmt: skip
        tee_type = r.u32("TEE type")
        if version == 4 and tee_type == TeeType.TDX:
            raise InvalidQuote("this is a TDX quote (TEE type 0x81); enklave verifies SGX enclave quotes only",
                               offset=start + 4)  # fmt: skip
        if tee_type != TeeType.SGX:
            raise InvalidQuote(f"unknown TEE type {tee_type:#x}", offset=start + 4)
        return cls(
            version, key_type, tee_type, r.u16("QE SVN"), r.u16("PCE SVN"), r.take(16, "QE vendor id"),
            r.take(20, "user data"),
        )  # fmt: skip

    def to_bytes(self) -> bytes:
        """The 48-byte encoding."""
        return (
            self.version.to_bytes(2, "little") + self.attestation_key_type.to_bytes(2, "little")
            + self.tee_type.to_bytes(4, "little") + self.qe_svn.to_bytes(2, "little")
            + self.pce_svn.to_bytes(2, "little") + self.qe_vendor_id + self.user_data
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class PckIdentifier:
    """Certification data types 1 to 3: the PPID (clear or encrypted), CPUSVN, PCESVN and optional PCE-ID."""

    ppid: bytes
    cpu_svn: bytes
    pce_svn: int
    pce_id: bytes | None

    @classmethod
    def read(cls, r: Reader, ppid_size: int) -> PckIdentifier:
        """Read the identifier from the whole range of ``r``."""
        ppid = r.take(ppid_size, "PPID")
        cpu_svn = r.take(16, "CPUSVN")
        pce_svn = r.u16("PCESVN")
        pce_id = r.take(2, "PCE-ID") if r.remaining else None
        r.finish("PCK identifier")
        return cls(ppid, cpu_svn, pce_svn, pce_id)


@dataclass(frozen=True, slots=True)
class CertificationData:
    """Certification data: its type, its exact bytes, and the parsed content for types 1 to 3 and 6.

    For type 5, ``pck_chain_pem`` gives the PEM text (leaf, intermediate CA, root), parsed by the verifier.
    """

    type: int
    data: bytes
    pck_identifier: PckIdentifier | None = None
    qe_report_certification_data: QeReportCertificationData | None = None

    @classmethod
    def read(cls, r: Reader, *, nested: bool = False) -> CertificationData:
        """Read ``type (u16) | size (u32) | data`` and parse the content of the types that have structure."""
        start = r.offset
        cert_type = r.u16("certification data type")
        if cert_type not in _CERTIFICATION_DATA_TYPES:
            raise InvalidQuote(f"unknown certification data type {cert_type}", offset=start)
        size = r.u32("certification data size")
        body = r.sub(size, f"certification data (type {cert_type})")
        data_start = body.offset
        pck_identifier = None
        qe_cert_data = None
        if cert_type in _PPID_SIZES:
            pck_identifier = PckIdentifier.read(body, _PPID_SIZES[CertificationDataType(cert_type)])
        elif cert_type == CertificationDataType.QE_REPORT_CERTIFICATION_DATA:
            if nested:
                raise InvalidQuote("QE report certification data may not nest itself", offset=start)
            qe_cert_data = QeReportCertificationData.read(body)
        else:
            body.take(body.remaining, "certification data")
        body.finish(f"certification data (type {cert_type})")
        data = body.consumed_since(data_start)
        return cls(cert_type, data, pck_identifier, qe_cert_data)

    def to_bytes(self) -> bytes:
        """The encoding: type, size and data."""
        return self.type.to_bytes(2, "little") + len(self.data).to_bytes(4, "little") + self.data

    @property
    def pck_chain_pem(self) -> bytes | None:
        """The PEM PCK certificate chain for type 5 (trailing NUL padding removed), else None."""
        if self.type != CertificationDataType.PCK_CERT_CHAIN:
            return None
        return self.data.rstrip(b"\0")


@dataclass(frozen=True, slots=True)
class QeReportCertificationData:
    """Certification data type 6 (quote v4): the QE report, its signature, QE auth data and nested certification
    data (normally type 5)."""

    qe_report: ReportBody
    qe_report_raw: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data: CertificationData

    @classmethod
    def read(cls, r: Reader) -> QeReportCertificationData:
        """Read the structure from the whole range of ``r``."""
        raw = r.take(REPORT_BODY_SIZE, "QE report")
        signature = r.take(_SIGNATURE_SIZE, "QE report signature")
        auth = r.take(r.u16("QE auth data size"), "QE auth data")
        nested = CertificationData.read(r, nested=True)
        r.finish("QE report certification data")
        return cls(ReportBody.from_bytes(raw), raw, signature, auth, nested)

    def to_bytes(self) -> bytes:
        """The encoding."""
        return (
            self.qe_report_raw + self.qe_report_signature + len(self.qe_auth_data).to_bytes(2, "little")
            + self.qe_auth_data + self.certification_data.to_bytes()
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Quote:
    """A parsed SGX ECDSA quote (v3 or v4) with uniform access to its parts.

    ``signed_bytes`` is the header and report body exactly as received (what the attestation key signs);
    ``qe_report_raw`` is what the PCK key signs. ``raw`` is the whole quote.
    """

    header: QuoteHeader
    body: ReportBody
    signature: bytes
    attestation_key: bytes
    qe_report: ReportBody
    qe_report_raw: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data: CertificationData
    """The PCK certification data: the nested one for v4 (type 6 unwrapped), the outer one for v3."""
    raw: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> Quote:
        """Parse a whole quote; raises :class:`InvalidQuote` for anything but exactly one valid quote."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidQuote(f"a quote must be bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) > MAX_QUOTE_SIZE:
            raise InvalidQuote(f"quote of {len(data)} bytes exceeds the {MAX_QUOTE_SIZE}-byte limit")
        r = Reader(data)
        header = QuoteHeader.read(r)
        body = ReportBody.from_bytes(r.take(REPORT_BODY_SIZE, "report body"))
        sig = r.sub(r.u32("signature data length"), "signature data")
        signature = sig.take(_SIGNATURE_SIZE, "quote signature")
        key = sig.take(_KEY_SIZE, "attestation key")
        if header.version == 3:
            qe_raw = sig.take(REPORT_BODY_SIZE, "QE report")
            qe_sig = sig.take(_SIGNATURE_SIZE, "QE report signature")
            auth = sig.take(sig.u16("QE auth data size"), "QE auth data")
            cert = CertificationData.read(sig)
            if cert.type == CertificationDataType.QE_REPORT_CERTIFICATION_DATA:
                raise InvalidQuote("a v3 quote cannot carry QE report certification data (type 6)")
            qe_report = ReportBody.from_bytes(qe_raw)
        else:
            outer = CertificationData.read(sig)
            qe = outer.qe_report_certification_data
            if qe is None:
                raise InvalidQuote(
                    f"a v4 SGX quote must carry QE report certification data (type 6), got type {outer.type}"
                )
            qe_report, qe_raw, qe_sig, auth, cert = (
                qe.qe_report, qe.qe_report_raw, qe.qe_report_signature, qe.qe_auth_data, qe.certification_data,
            )  # fmt: skip
        sig.finish("signature data")
        r.finish("quote")
        return cls(header, body, signature, key, qe_report, qe_raw, qe_sig, auth, cert, data)

    def to_bytes(self) -> bytes:
        """The quote's bytes, exactly as parsed."""
        return self.raw

    @property
    def version(self) -> int:
        """The quote format version (3 or 4)."""
        return self.header.version

    @property
    def signed_bytes(self) -> bytes:
        """Header and report body: the bytes the attestation key signs."""
        return self.raw[: QUOTE_HEADER_SIZE + REPORT_BODY_SIZE]

    @property
    def pck_chain_pem(self) -> bytes | None:
        """The PEM PCK chain from certification data type 5, when the quote carries one."""
        return self.certification_data.pck_chain_pem
