"""SGX structures as frozen, byte-exact models (layer 1: bytes in, objects out; no I/O, no clock).

Every model's ``from_bytes`` raises :class:`enklave.errors.InvalidQuote` (with the byte offset where known) for
truncated, oversized or trailing data and unknown versions (the SIGSTRUCT, part of an enclave bundle, raises
:class:`enklave.errors.InvalidBundle`), and ``to_bytes`` reproduces the input exactly. The measurement
(:class:`Measurement`) replays what ECREATE, EADD and EEXTEND hash into MRENCLAVE.
"""

from __future__ import annotations

from enklave.sgx.measurement import Measurement, SecinfoFlags
from enklave.sgx.oe import (
    EvidenceFormat,
    OeAttestationHeader,
    OeReportHeader,
    unwrap_evidence,
    wrap_quote_evidence,
    wrap_quote_legacy,
)
from enklave.sgx.pck import PckConfiguration, PckExtension, PckTcb, SgxType
from enklave.sgx.quote import (
    INTEL_QE_VENDOR_ID,
    AttestationKeyType,
    CertificationData,
    CertificationDataType,
    PckIdentifier,
    QeReportCertificationData,
    Quote,
    QuoteHeader,
    TeeType,
)
from enklave.sgx.report import (
    AttributeFlags,
    Attributes,
    ConfigId,
    CpuSvn,
    MrEnclave,
    MrSigner,
    Report,
    ReportBody,
    ReportData,
    TargetInfo,
)
from enklave.sgx.sigstruct import SIGSTRUCT_SIZE, Sigstruct, mr_signer_of

__all__ = [
    "INTEL_QE_VENDOR_ID",
    "SIGSTRUCT_SIZE",
    "AttestationKeyType",
    "AttributeFlags",
    "Attributes",
    "CertificationData",
    "CertificationDataType",
    "ConfigId",
    "CpuSvn",
    "EvidenceFormat",
    "Measurement",
    "MrEnclave",
    "MrSigner",
    "OeAttestationHeader",
    "OeReportHeader",
    "PckConfiguration",
    "PckExtension",
    "PckIdentifier",
    "PckTcb",
    "QeReportCertificationData",
    "Quote",
    "QuoteHeader",
    "Report",
    "ReportBody",
    "ReportData",
    "SecinfoFlags",
    "SgxType",
    "Sigstruct",
    "TargetInfo",
    "TeeType",
    "mr_signer_of",
    "unwrap_evidence",
    "wrap_quote_evidence",
    "wrap_quote_legacy",
]
