"""Open Enclave evidence envelopes around an SGX quote, as frozen byte-exact models.

Azure Attestation and Open Enclave verifiers accept an SGX ECDSA quote in three envelopes, all of which
:func:`unwrap_evidence` recognises:

* a raw quote (what ``sgx_qe_get_quote`` returns; OE calls it ``OE_FORMAT_UUID_RAW_SGX_QUOTE_ECDSA``);
* a legacy OE report from ``oe_get_report(OE_REPORT_FLAGS_REMOTE_ATTESTATION)``: an ``oe_report_header_t``
  (``include/openenclave/internal/report.h``) followed by the quote::

      0  u32 version = 1 (OE_REPORT_HEADER_VERSION)
      4  u32 report_type = 2 (OE_REPORT_TYPE_SGX_REMOTE; 1 is a local report)
      8  u64 report_size
      16 report_size bytes: the quote

* OE evidence from ``oe_get_evidence`` with the format id embedded: an ``oe_attestation_header_t``
  (``common/attest_plugin.h``) followed by the quote and OE's custom claims buffer::

      0  u32 version = 3 (OE_ATTESTATION_HEADER_VERSION)
      4  16-byte format id (OE_FORMAT_UUID_SGX_ECDSA, include/openenclave/attestation/sgx/evidence.h)
      20 4 bytes of padding
      24 u64 data_size
      32 data_size bytes: quote || custom claims

  The C struct is not packed, so ``uint64_t data_size`` is aligned to 8 and the header is 32 bytes on the
  x86-64 ABI that SGX uses. OE fills the header into uninitialised ``malloc`` memory, so the padding may hold
  anything: it is kept as read (for byte-exact round trips) and written as zeros.

Every integer is little-endian. The quote itself is not parsed here (see :mod:`enklave.sgx.quote`); it is
only recognised by its version (3 or 4) and delimited by its signature-data length, which is what OE's
own evidence layout relies on to find the custom claims. Every malformation raises
:class:`~enklave.errors.InvalidQuote` with the byte offset.
"""

from __future__ import annotations

import enum
import struct
import uuid
from dataclasses import dataclass
from typing import Final

from enklave.errors import InvalidQuote, UsageError

__all__ = [
    "FORMAT_LEGACY_REPORT_REMOTE",
    "FORMAT_RAW_SGX_QUOTE_ECDSA",
    "FORMAT_SGX_ECDSA",
    "FORMAT_SGX_EPID_LINKABLE",
    "FORMAT_SGX_EPID_UNLINKABLE",
    "FORMAT_SGX_LOCAL_ATTESTATION",
    "MAX_EVIDENCE_SIZE",
    "OE_ATTESTATION_HEADER_SIZE",
    "OE_ATTESTATION_HEADER_VERSION",
    "OE_REPORT_HEADER_SIZE",
    "OE_REPORT_HEADER_VERSION",
    "OE_REPORT_TYPE_SGX_REMOTE",
    "EvidenceFormat",
    "OeAttestationHeader",
    "OeReportHeader",
    "UnwrappedEvidence",
    "unwrap_evidence",
    "unwrap_evidence_with_claims",
    "wrap_quote_evidence",
    "wrap_quote_legacy",
]

#: Upper bound on a whole evidence blob, envelope included. A DCAP quote with its PEM certificate chain is
#: about 5 KiB; 64 KiB leaves room for large custom claims while bounding what a peer can make us copy.
MAX_EVIDENCE_SIZE: Final = 64 * 1024

# include/openenclave/internal/report.h: OE_REPORT_HEADER_VERSION (1), oe_report_type_t, and
# OE_STATIC_ASSERT(sizeof(oe_report_header_t) == 16).
OE_REPORT_HEADER_VERSION: Final = 1
OE_REPORT_TYPE_SGX_LOCAL: Final = 1
OE_REPORT_TYPE_SGX_REMOTE: Final = 2
OE_REPORT_HEADER_SIZE: Final = 16

# common/attest_plugin.h: OE_ATTESTATION_HEADER_VERSION (3; version 2 was the legacy layout that nested an
# oe_report_header_t, and OE itself supports only the latest). Size: see the module docstring.
OE_ATTESTATION_HEADER_VERSION: Final = 3
OE_ATTESTATION_HEADER_SIZE: Final = 32

# include/openenclave/attestation/sgx/evidence.h. OE stores a UUID as its 16 bytes in the order printed,
# which is RFC 4122 (big-endian) order, so uuid.UUID(bytes=...) reads them directly.
FORMAT_SGX_ECDSA: Final = uuid.UUID("a3a21e87-1b4d-4014-b70a-a125d2fbcd8c")
FORMAT_LEGACY_REPORT_REMOTE: Final = uuid.UUID("c8303454-d923-4c2c-a691-df7def460a76")
FORMAT_RAW_SGX_QUOTE_ECDSA: Final = uuid.UUID("1923d91e-12d2-4c72-b220-25cd8dace871")
FORMAT_SGX_LOCAL_ATTESTATION: Final = uuid.UUID("09268c33-6e0b-45e5-8a27-15644d0ef89a")
FORMAT_SGX_EPID_LINKABLE: Final = uuid.UUID("f228aa3f-de4d-49d3-884c-b2aa87a50da6")
FORMAT_SGX_EPID_UNLINKABLE: Final = uuid.UUID("5c35d290-a2c2-4c55-9e13-5ad732746c88")

# Format ids that are known but cannot carry a remote-attestation ECDSA quote in an attestation header,
# with the reason given to the caller.
_REJECTED_FORMATS: Final = {
    FORMAT_SGX_LOCAL_ATTESTATION: "SGX local attestation evidence cannot be verified remotely",
    FORMAT_SGX_EPID_LINKABLE: "SGX EPID (linkable) evidence is not supported: Intel retired EPID",
    FORMAT_SGX_EPID_UNLINKABLE: "SGX EPID (unlinkable) evidence is not supported: Intel retired EPID",
    FORMAT_LEGACY_REPORT_REMOTE: "the legacy OE report format id is only a verifier argument, never embedded",
    FORMAT_RAW_SGX_QUOTE_ECDSA: "the raw SGX quote format id is only a verifier argument, never embedded",
    uuid.UUID(int=0): "OE_FORMAT_UUID_SGX_UNKNOWN (all zeros) names no format",
}

# Intel SGX DCAP quote layout (Intel SGX ECDSA Quote Library API, appendix A): a 48-byte header starting
# with u16 version, then for SGX a 384-byte report body, then u32 signature data length and the signature
# data. In v4 the u32 at offset 4 is the TEE type (0 SGX, 0x81 TDX, whose body is longer).
_QUOTE_VERSIONS: Final = (3, 4)
_QUOTE_SIG_LEN_OFFSET: Final = 48 + 384
_QUOTE_MIN_SIZE: Final = _QUOTE_SIG_LEN_OFFSET + 4
_TEE_TYPE_SGX: Final = 0

_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_REPORT_HEADER: Final = struct.Struct("<IIQ")
_ATTESTATION_HEADER: Final = struct.Struct("<I16s4sQ")
_ZERO_PADDING: Final = bytes(4)


class EvidenceFormat(enum.Enum):
    """The envelope an SGX quote arrived in."""

    RAW_QUOTE = "raw_quote"
    OE_REPORT = "oe_report"
    OE_EVIDENCE = "oe_evidence"


def _check_size(data: bytes, max_size: int) -> None:
    if len(data) > max_size:
        raise InvalidQuote(
            f"evidence is {len(data)} bytes, more than the limit of {max_size}", offset=max_size
        )


def _as_bytes(value: object, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise UsageError(f"{name} must be bytes")
    return bytes(value)


@dataclass(frozen=True, slots=True)
class OeReportHeader:
    """A legacy ``oe_report_header_t`` for remote attestation and the report (an SGX quote) it frames.

    Guarantees ``version == 1``, ``report_type == 2`` (remote) and a non-empty report; building one by hand
    with other values raises :class:`~enklave.errors.UsageError`.
    """

    version: int
    report_type: int
    report: bytes

    def __post_init__(self) -> None:
        if self.version != OE_REPORT_HEADER_VERSION or self.report_type != OE_REPORT_TYPE_SGX_REMOTE:
            raise UsageError("OeReportHeader must have version 1 and report type 2 (SGX remote)")
        if not isinstance(self.report, bytes) or not self.report:
            raise UsageError("report must be non-empty bytes")

    @classmethod
    def from_bytes(cls, data: bytes, *, max_size: int = MAX_EVIDENCE_SIZE) -> OeReportHeader:
        """Parse a header and exactly ``report_size`` bytes of report, with nothing after them.

        Raises :class:`~enklave.errors.InvalidQuote` for input over ``max_size`` bytes, truncation, a
        version other than 1, a local (type 1) or unknown report type, an empty report, or a
        ``report_size`` that does not match the bytes that follow the header.
        """
        data = _as_bytes(data, "data")
        _check_size(data, max_size)
        if len(data) < OE_REPORT_HEADER_SIZE:
            raise InvalidQuote(
                f"truncated OE report header: needs {OE_REPORT_HEADER_SIZE} bytes, got {len(data)}", offset=0
            )
        version, report_type, report_size = _REPORT_HEADER.unpack_from(data)
        if version != OE_REPORT_HEADER_VERSION:
            raise InvalidQuote(f"OE report header version {version} is not supported (expected 1)", offset=0)
        if report_type == OE_REPORT_TYPE_SGX_LOCAL:
            raise InvalidQuote(
                "OE report is an SGX local report (type 1), which cannot be used for remote attestation",
                offset=4,
            )
        if report_type != OE_REPORT_TYPE_SGX_REMOTE:
            raise InvalidQuote(f"unknown OE report type {report_type} (expected 2, SGX remote)", offset=4)
        _check_payload_size(data, OE_REPORT_HEADER_SIZE, report_size, "report_size", offset=8)
        return cls(version=version, report_type=report_type, report=data[OE_REPORT_HEADER_SIZE:])

    def to_bytes(self) -> bytes:
        """Serialise the header and report; ``from_bytes(h.to_bytes()) == h`` byte for byte."""
        return _REPORT_HEADER.pack(self.version, self.report_type, len(self.report)) + self.report


@dataclass(frozen=True, slots=True)
class OeAttestationHeader:
    """An ``oe_attestation_header_t`` (OE evidence header) with format OE_FORMAT_UUID_SGX_ECDSA.

    ``data`` is the SGX quote followed by OE's custom claims buffer. ``padding`` holds the four alignment
    bytes at offset 20, kept as read so that :meth:`to_bytes` reproduces the input exactly. Guarantees
    ``version == 3``, ``format_id == FORMAT_SGX_ECDSA`` and non-empty data; building one by hand with other
    values raises :class:`~enklave.errors.UsageError`.
    """

    version: int
    format_id: uuid.UUID
    data: bytes
    padding: bytes = _ZERO_PADDING

    def __post_init__(self) -> None:
        if self.version != OE_ATTESTATION_HEADER_VERSION or self.format_id != FORMAT_SGX_ECDSA:
            raise UsageError("OeAttestationHeader must have version 3 and format OE_FORMAT_UUID_SGX_ECDSA")
        if not isinstance(self.data, bytes) or not self.data:
            raise UsageError("data must be non-empty bytes")
        if not isinstance(self.padding, bytes) or len(self.padding) != len(_ZERO_PADDING):
            raise UsageError("padding must be 4 bytes")

    @classmethod
    def from_bytes(cls, data: bytes, *, max_size: int = MAX_EVIDENCE_SIZE) -> OeAttestationHeader:
        """Parse a 32-byte header and exactly ``data_size`` bytes of data, with nothing after them.

        Raises :class:`~enklave.errors.InvalidQuote` for input over ``max_size`` bytes, truncation, a
        version other than 3, a format id other than OE_FORMAT_UUID_SGX_ECDSA (known ones such as local
        attestation and EPID are named in the message), empty data, or a ``data_size`` that does not match
        the bytes that follow the header.
        """
        data = _as_bytes(data, "data")
        _check_size(data, max_size)
        if len(data) < OE_ATTESTATION_HEADER_SIZE:
            raise InvalidQuote(
                f"truncated OE attestation header: needs {OE_ATTESTATION_HEADER_SIZE} bytes, got {len(data)}",
                offset=0,
            )
        version, format_bytes, padding, data_size = _ATTESTATION_HEADER.unpack_from(data)
        if version != OE_ATTESTATION_HEADER_VERSION:
            raise InvalidQuote(
                f"OE attestation header version {version} is not supported (expected 3)", offset=0
            )
        format_id = uuid.UUID(bytes=format_bytes)
        if format_id != FORMAT_SGX_ECDSA:
            reason = _REJECTED_FORMATS.get(format_id, "it is not OE_FORMAT_UUID_SGX_ECDSA")
            raise InvalidQuote(f"unsupported OE evidence format id {format_id}: {reason}", offset=4)
        _check_payload_size(data, OE_ATTESTATION_HEADER_SIZE, data_size, "data_size", offset=24)
        return cls(
            version=version, format_id=format_id, data=data[OE_ATTESTATION_HEADER_SIZE:], padding=padding
        )

    def to_bytes(self) -> bytes:
        """Serialise the header and data; ``from_bytes(h.to_bytes()) == h`` byte for byte."""
        header = _ATTESTATION_HEADER.pack(self.version, self.format_id.bytes, self.padding, len(self.data))
        return header + self.data


def _check_payload_size(data: bytes, header_size: int, declared: int, name: str, *, offset: int) -> None:
    available = len(data) - header_size
    if declared == 0:
        raise InvalidQuote(f"{name} is 0: the envelope holds no quote", offset=offset)
    if declared > available:
        raise InvalidQuote(
            f"truncated evidence: {name} declares {declared} bytes but only {available} follow the header",
            offset=offset,
        )
    if declared < available:
        raise InvalidQuote(
            f"{available - declared} trailing bytes after the {declared} bytes that {name} declares",
            offset=header_size + declared,
        )


@dataclass(frozen=True, slots=True)
class UnwrappedEvidence:
    """What :func:`unwrap_evidence_with_claims` found: the envelope, the quote bytes and any custom claims.

    ``custom_claims`` is OE's serialised claims buffer that follows the quote in OE evidence (its SHA-256
    should be bound in the quote's report data); it is empty for the other envelopes. Neither the quote nor
    the claims are parsed or verified here.
    """

    format: EvidenceFormat
    quote: bytes
    custom_claims: bytes = b""


def _quote_length(data: bytes, start: int) -> int:
    """Recognise an SGX quote at ``start`` and return its total length, without parsing it further."""
    available = len(data) - start
    if available < 2:
        raise InvalidQuote("truncated quote: no version field", offset=start)
    version = int(_U16.unpack_from(data, start)[0])
    if version not in _QUOTE_VERSIONS:
        raise InvalidQuote(f"not an SGX quote: version {version} is not 3 or 4", offset=start)
    if available < _QUOTE_MIN_SIZE:
        raise InvalidQuote(
            f"truncated quote: needs at least {_QUOTE_MIN_SIZE} bytes, got {available}", offset=start
        )
    if version == 4:
        tee_type = int(_U32.unpack_from(data, start + 4)[0])
        if tee_type != _TEE_TYPE_SGX:
            raise InvalidQuote(f"quote TEE type 0x{tee_type:x} is not SGX (0)", offset=start + 4)
    signature_size = int(_U32.unpack_from(data, start + _QUOTE_SIG_LEN_OFFSET)[0])
    length = _QUOTE_MIN_SIZE + signature_size
    if length > available:
        raise InvalidQuote(
            f"truncated quote: signature data declares {signature_size} bytes, "
            f"only {available - _QUOTE_MIN_SIZE} remain",
            offset=start + _QUOTE_SIG_LEN_OFFSET,
        )
    return length


def _whole_quote(data: bytes, start: int, what: str) -> bytes:
    # Raw quotes and legacy reports carry no claims buffer, so anything after the quote is an error.
    end = start + _quote_length(data, start)
    if end != len(data):
        raise InvalidQuote(f"{len(data) - end} trailing bytes after the quote in {what}", offset=end)
    return data[start:]


def unwrap_evidence_with_claims(data: bytes, *, max_size: int = MAX_EVIDENCE_SIZE) -> UnwrappedEvidence:
    """Recognise the envelope of an SGX quote, check it, and split off the quote and custom claims.

    Detection looks at the first four bytes: u32 1 is a legacy OE report header, u32 3 an OE attestation
    header, and otherwise a u16 version 3 or 4 is a raw quote. A raw quote cannot start with u32 3 because
    its attestation key type (bytes 2..3) is 2 or 3, never 0. Raw quotes and legacy reports must end
    exactly where the quote ends; OE evidence may carry custom claims after it.

    Raises :class:`~enklave.errors.InvalidQuote` (with the offset) for input over ``max_size`` bytes,
    unrecognised or unsupported envelopes, versions, report types and format ids, size mismatches,
    truncation, and trailing bytes.
    """
    data = _as_bytes(data, "data")
    _check_size(data, max_size)
    if len(data) < 4:
        raise InvalidQuote(f"truncated evidence: {len(data)} bytes", offset=0)
    first = int(_U32.unpack_from(data)[0])
    if first == OE_REPORT_HEADER_VERSION:
        # The header's own checks come first so that its errors (local report, size mismatch) win.
        OeReportHeader.from_bytes(data, max_size=max_size)
        quote = _whole_quote(data, OE_REPORT_HEADER_SIZE, "the OE report")
        return UnwrappedEvidence(EvidenceFormat.OE_REPORT, quote)
    # Version 2 (the legacy attestation header) is routed to the header parser so the error names it.
    if first in (2, OE_ATTESTATION_HEADER_VERSION):
        OeAttestationHeader.from_bytes(data, max_size=max_size)
        end = OE_ATTESTATION_HEADER_SIZE + _quote_length(data, OE_ATTESTATION_HEADER_SIZE)
        return UnwrappedEvidence(EvidenceFormat.OE_EVIDENCE, data[OE_ATTESTATION_HEADER_SIZE:end], data[end:])
    if _U16.unpack_from(data)[0] in _QUOTE_VERSIONS:
        return UnwrappedEvidence(EvidenceFormat.RAW_QUOTE, _whole_quote(data, 0, "the raw quote"))
    raise InvalidQuote(
        f"unrecognised evidence: starts with 0x{first:08x}, which is neither an OE report header (1), "
        "an OE attestation header (3) nor an SGX quote (version 3 or 4)",
        offset=0,
    )


def unwrap_evidence(data: bytes, *, max_size: int = MAX_EVIDENCE_SIZE) -> tuple[EvidenceFormat, bytes]:
    """Recognise the envelope and return it with the quote bytes (see :func:`unwrap_evidence_with_claims`).

    OE evidence may carry custom claims after the quote; they are not returned here, so a caller that
    checks them against the report data must use :func:`unwrap_evidence_with_claims`. Raises
    :class:`~enklave.errors.InvalidQuote` exactly as that function does.
    """
    unwrapped = unwrap_evidence_with_claims(data, max_size=max_size)
    return unwrapped.format, unwrapped.quote


def wrap_quote_legacy(quote: bytes) -> bytes:
    """Frame a quote as a legacy OE remote report (``oe_report_header_t`` version 1, type 2).

    Raises :class:`~enklave.errors.InvalidQuote` if ``quote`` is not exactly one SGX quote or the result
    would exceed :data:`MAX_EVIDENCE_SIZE`.
    """
    quote = _as_bytes(quote, "quote")
    _check_size(quote, MAX_EVIDENCE_SIZE - OE_REPORT_HEADER_SIZE)
    _whole_quote(quote, 0, "the quote to wrap")
    return OeReportHeader(OE_REPORT_HEADER_VERSION, OE_REPORT_TYPE_SGX_REMOTE, quote).to_bytes()


def wrap_quote_evidence(quote: bytes, custom_claims: bytes = b"") -> bytes:
    """Frame a quote (and optionally OE's serialised custom claims) as OE evidence with format SGX ECDSA.

    The padding bytes are written as zeros. Raises :class:`~enklave.errors.InvalidQuote` if ``quote`` is
    not exactly one SGX quote or the result would exceed :data:`MAX_EVIDENCE_SIZE`.
    """
    quote = _as_bytes(quote, "quote")
    claims = _as_bytes(custom_claims, "custom_claims")
    _check_size(quote + claims, MAX_EVIDENCE_SIZE - OE_ATTESTATION_HEADER_SIZE)
    _whole_quote(quote, 0, "the quote to wrap")
    header = OeAttestationHeader(OE_ATTESTATION_HEADER_VERSION, FORMAT_SGX_ECDSA, quote + claims)
    return header.to_bytes()
