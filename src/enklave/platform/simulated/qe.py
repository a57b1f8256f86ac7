"""The simulated quoting enclave (QE): turns an enclave's report into a DCAP ECDSA quote, version 3.

The layout is the real one (Intel "SGX ECDSA Quote Library API", quote format appendix; see
:mod:`enklave.sgx.quote`), so the same parser and verifier read simulated and real quotes::

    header (48): version 3, attestation key type 2 (ECDSA P-256), TEE type 0, QE SVN, PCE SVN,
                 QE vendor id (Intel's), user data (20: a QE id derived from the PPID, then zeros)
    ISV enclave report body (384)
    signature data length (u32), then signature data:
        ECDSA signature of header || body by the attestation key (64, r || s)
        attestation public key (64, x || y)
        QE report body (384), report data = SHA-256(attestation key || QE auth data) || 32 zero bytes
        QE report signature by the PCK key (64)
        QE auth data (u16 size, data)
        certification data: type 5 (u16), size (u32), PEM PCK chain: leaf, PCK Platform CA, root

The QE has its own identity (:data:`QE_MRENCLAVE`, :data:`QE_MRSIGNER`, ISV product id 1, ISV SVN
:data:`QE_ISV_SVN`), which the simulated QE identity collateral describes. A :class:`SimulatedQe` holds the
attestation key and the PCK key, so only the enclave process builds one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enklave.errors import UsageError
from enklave.platform.simulated.cpu import SimulatedCpu
from enklave.platform.simulated.pki import sign_raw
from enklave.sgx.quote import (
    INTEL_QE_VENDOR_ID,
    AttestationKeyType,
    CertificationDataType,
    Quote,
    QuoteHeader,
    TeeType,
)
from enklave.sgx.report import (
    AttributeFlags,
    Attributes,
    MrEnclave,
    MrSigner,
    Report,
    ReportBody,
    ReportData,
    TargetInfo,
)

__all__ = [
    "QE_ATTRIBUTES",
    "QE_ATTRIBUTES_MASK",
    "QE_AUTH_DATA",
    "QE_ISV_PROD_ID",
    "QE_ISV_SVN",
    "QE_MISC_SELECT",
    "QE_MISC_SELECT_MASK",
    "QE_MRENCLAVE",
    "QE_MRSIGNER",
    "SimulatedQe",
    "qe_identity",
    "qe_target_info",
]

QE_MRENCLAVE: Final = MrEnclave(hashlib.sha256(b"enklave simulated SGX quoting enclave, v1").digest())
"""The simulated QE's measurement (a fixed constant: the QE is code of this package, not a measured image)."""
QE_MRSIGNER: Final = MrSigner(hashlib.sha256(b"enklave simulated SGX quoting enclave signer").digest())
"""The simulated QE's signer; the QE identity collateral pins it, so Intel's QE identity never matches it."""
QE_ISV_PROD_ID: Final = 1
"""The QE's product id, 1 as for Intel's ECDSA QE."""
QE_ISV_SVN: Final = 8
"""The QE's security version: the UpToDate level of the simulated QE identity."""
QE_ATTRIBUTES: Final = Attributes(
    AttributeFlags.INIT | AttributeFlags.MODE64BIT | AttributeFlags.PROVISIONKEY, 0x3
)
"""The QE's attributes: an initialized 64-bit production enclave with access to the provisioning key."""
QE_ATTRIBUTES_MASK: Final = bytes.fromhex("FBFFFFFFFFFFFFFF0000000000000000")
"""The attributes mask of the QE identity (Intel's): every FLAGS bit but MODE64BIT, no XFRM bit."""
QE_MISC_SELECT: Final = 0
QE_MISC_SELECT_MASK: Final = 0xFFFFFFFF
QE_AUTH_DATA: Final = bytes(range(32))
"""The QE authentication data (Intel's QE sends the 32 bytes 0x00..0x1f by default)."""


def qe_identity(cpu_svn: bytes) -> ReportBody:
    """The QE's REPORT body on a CPU with ``cpu_svn``, with zero report data."""
    return ReportBody.build(
        mr_enclave=QE_MRENCLAVE,
        mr_signer=QE_MRSIGNER,
        isv_prod_id=QE_ISV_PROD_ID,
        isv_svn=QE_ISV_SVN,
        attributes=QE_ATTRIBUTES,
        cpu_svn=cpu_svn,
        misc_select=QE_MISC_SELECT,
    )


def qe_target_info() -> TargetInfo:
    """The target info that addresses a report to the simulated QE (what ``sgx_init_quote`` returns)."""
    return TargetInfo.for_enclave(qe_identity(bytes(16)))


def _raw_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    # An uncompressed point is 0x04 || x || y; the quote carries x || y.
    return point[1:]


class SimulatedQe:
    """The quoting enclave of one simulated platform.

    ``attestation_key`` signs quotes; ``pck_key`` (certified by the PCK certificate at the head of
    ``pck_chain_pem``) signs the QE report that binds the attestation key. Holds secrets: build it only in the
    enclave process; its repr shows no key.
    """

    __slots__ = ("_attestation_key", "_attestation_public", "_cpu", "_identity", "_pck_chain", "_pck_key")

    def __init__(
        self,
        cpu: SimulatedCpu,
        *,
        attestation_key: ec.EllipticCurvePrivateKey,
        pck_key: ec.EllipticCurvePrivateKey,
        pck_chain_pem: bytes,
    ) -> None:
        if not pck_chain_pem.startswith(b"-----BEGIN CERTIFICATE-----"):
            raise UsageError("pck_chain_pem must be a PEM certificate chain, leaf first")
        for key in (attestation_key, pck_key):
            if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
                raise UsageError("the attestation key and the PCK key must be ECDSA P-256 keys")
        self._cpu = cpu
        self._attestation_key = attestation_key
        self._attestation_public = _raw_public_key(attestation_key)
        self._pck_key = pck_key
        self._pck_chain = pck_chain_pem
        self._identity = qe_identity(cpu.cpu_svn)

    def __repr__(self) -> str:
        return f"SimulatedQe({self._cpu!r})"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a SimulatedQe holds private keys and cannot be pickled")

    @property
    def cpu(self) -> SimulatedCpu:
        """The CPU the QE runs on."""
        return self._cpu

    @property
    def identity(self) -> ReportBody:
        """The QE's own REPORT body (zero report data)."""
        return self._identity

    @property
    def target_info(self) -> TargetInfo:
        """Where an enclave addresses the report it wants quoted."""
        return TargetInfo.for_enclave(self._identity)

    @property
    def attestation_public_key(self) -> bytes:
        """The attestation public key as it appears in quotes (x || y, 64 bytes)."""
        return self._attestation_public

    def quote(self, report: Report | bytes) -> bytes:
        """Quote an enclave report addressed to this QE; returns the quote v3 bytes.

        Raises :class:`~enklave.errors.InvalidQuote` when ``report`` bytes are not a 432-byte report, and
        :class:`~enklave.errors.SignatureError` when its MAC does not verify for this QE on this CPU (a report
        for another target, from another platform, or changed on the way), as the real QE refuses it.
        """
        parsed = report if isinstance(report, Report) else Report.from_bytes(bytes(report))
        # 1. Check the report MAC with the QE's own report key: only enclaves on this CPU can be quoted.
        self._cpu.verify_report(parsed, self._identity)
        platform = self._cpu.platform
        # 2. The header. The QE id in the user data identifies the platform's QE, as Intel's does.
        qe_id = hashlib.sha256(b"enklave simulated QE id" + platform.ppid).digest()[:16]
        header = QuoteHeader(
            version=3,
            attestation_key_type=AttestationKeyType.ECDSA_256_P256,
            tee_type=TeeType.SGX,
            qe_svn=QE_ISV_SVN,
            pce_svn=platform.pce_svn,
            qe_vendor_id=INTEL_QE_VENDOR_ID,
            user_data=qe_id + bytes(4),
        ).to_bytes()
        body = parsed.body.to_bytes()
        # 3. The attestation key signs the header and the enclave's report body.
        signature = sign_raw(self._attestation_key, header + body)
        # 4. The QE report binds the attestation key and the auth data; the PCK key signs it.
        binding = hashlib.sha256(self._attestation_public + QE_AUTH_DATA).digest() + bytes(32)
        qe_report = dataclasses.replace(self._identity, report_data=ReportData(binding)).to_bytes()
        qe_report_signature = sign_raw(self._pck_key, qe_report)
        # 5. Certification data type 5: the PEM PCK chain.
        certification = (
            CertificationDataType.PCK_CERT_CHAIN.to_bytes(2, "little")
            + len(self._pck_chain).to_bytes(4, "little")
            + self._pck_chain
        )
        signature_data = (
            signature + self._attestation_public + qe_report + qe_report_signature
            + len(QE_AUTH_DATA).to_bytes(2, "little") + QE_AUTH_DATA + certification
        )  # fmt: skip
        quote = header + body + len(signature_data).to_bytes(4, "little") + signature_data
        # 6. What leaves the QE always parses: a failure here is a bug, reported as InvalidQuote.
        Quote.from_bytes(quote)
        return quote
