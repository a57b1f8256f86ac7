"""Tests for enklave.sgx.oe: Open Enclave envelopes around a real SGX quote, and hostile input."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import dcap_qvl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enklave.errors import InvalidQuote, UsageError
from enklave.sgx import oe
from enklave.sgx.oe import (
    FORMAT_SGX_ECDSA,
    MAX_EVIDENCE_SIZE,
    OE_ATTESTATION_HEADER_SIZE,
    OE_REPORT_HEADER_SIZE,
    EvidenceFormat,
    OeAttestationHeader,
    OeReportHeader,
    UnwrappedEvidence,
    unwrap_evidence,
    unwrap_evidence_with_claims,
    wrap_quote_evidence,
    wrap_quote_legacy,
)

ASSETS = Path(__file__).parent / "assets"
QUOTE = (ASSETS / "phala-dcap-qvl" / "sgx_quote").read_bytes()
INTEL_QUOTE = (ASSETS / "intel-qvl-sampledata" / "quote.dat").read_bytes()
TDX_QUOTE = (ASSETS / "phala-dcap-qvl" / "tdx_quote").read_bytes()

# The byte list of OE_FORMAT_UUID_SGX_ECDSA in include/openenclave/attestation/sgx/evidence.h.
SGX_ECDSA_BYTES = bytes.fromhex("a3a21e871b4d4014b70aa125d2fbcd8c")
LOCAL_BYTES = bytes.fromhex("09268c336e0b45e58a2715644d0ef89a")
EPID_LINKABLE_BYTES = bytes.fromhex("f228aa3fde4d49d3884cb2aa87a50da6")


def legacy(version: int, report_type: int, size: int, payload: bytes) -> bytes:
    return struct.pack("<IIQ", version, report_type, size) + payload


def evidence(version: int, format_id: bytes, size: int, payload: bytes, padding: bytes = bytes(4)) -> bytes:
    return struct.pack("<I16s4sQ", version, format_id, padding, size) + payload


def rejects(data: bytes, match: str, offset: int | None = None) -> InvalidQuote:
    with pytest.raises(InvalidQuote, match=match) as info:
        unwrap_evidence(data)
    if offset is not None:
        assert info.value.offset == offset
    return info.value


# --- Wrapping the real quote ---------------------------------------------------------------------------


def test_format_ids_match_open_enclave_bytes() -> None:
    assert FORMAT_SGX_ECDSA.bytes == SGX_ECDSA_BYTES
    assert str(FORMAT_SGX_ECDSA) == "a3a21e87-1b4d-4014-b70a-a125d2fbcd8c"
    assert oe.FORMAT_SGX_LOCAL_ATTESTATION.bytes == LOCAL_BYTES
    assert oe.FORMAT_SGX_EPID_LINKABLE.bytes == EPID_LINKABLE_BYTES


def test_legacy_report_layout_and_round_trip() -> None:
    wrapped = wrap_quote_legacy(QUOTE)
    assert wrapped == legacy(1, 2, len(QUOTE), QUOTE)
    assert len(wrapped) == OE_REPORT_HEADER_SIZE + len(QUOTE)
    header = OeReportHeader.from_bytes(wrapped)
    assert (header.version, header.report_type, header.report) == (1, 2, QUOTE)
    assert header.to_bytes() == wrapped
    assert unwrap_evidence(wrapped) == (EvidenceFormat.OE_REPORT, QUOTE)


def test_evidence_header_layout_and_round_trip() -> None:
    wrapped = wrap_quote_evidence(QUOTE)
    assert wrapped == evidence(3, SGX_ECDSA_BYTES, len(QUOTE), QUOTE)
    assert wrapped[4:20] == SGX_ECDSA_BYTES
    assert wrapped[24:32] == len(QUOTE).to_bytes(8, "little")
    header = OeAttestationHeader.from_bytes(wrapped)
    assert (header.version, header.format_id, header.data, header.padding) == (
        3,
        FORMAT_SGX_ECDSA,
        QUOTE,
        bytes(4),
    )
    assert header.to_bytes() == wrapped
    assert unwrap_evidence(wrapped) == (EvidenceFormat.OE_EVIDENCE, QUOTE)


def test_padding_is_kept_byte_for_byte() -> None:
    # Open Enclave writes the header into uninitialised memory, so the padding may hold anything.
    wrapped = evidence(3, SGX_ECDSA_BYTES, len(QUOTE), QUOTE, padding=b"\xde\xad\xbe\xef")
    header = OeAttestationHeader.from_bytes(wrapped)
    assert header.padding == b"\xde\xad\xbe\xef"
    assert header.to_bytes() == wrapped
    assert unwrap_evidence(wrapped) == (EvidenceFormat.OE_EVIDENCE, QUOTE)


def test_custom_claims_follow_the_quote() -> None:
    claims = struct.pack("<QQ", 1, 0)  # an OE custom claims buffer: version 1, no claims
    wrapped = wrap_quote_evidence(QUOTE, claims)
    assert unwrap_evidence_with_claims(wrapped) == UnwrappedEvidence(
        EvidenceFormat.OE_EVIDENCE, QUOTE, claims
    )
    assert unwrap_evidence(wrapped) == (EvidenceFormat.OE_EVIDENCE, QUOTE)


@pytest.mark.parametrize("quote", [QUOTE, INTEL_QUOTE], ids=["phala", "intel-sample"])
def test_raw_quotes_are_recognised(quote: bytes) -> None:
    assert unwrap_evidence(quote) == (EvidenceFormat.RAW_QUOTE, quote)
    assert unwrap_evidence_with_claims(quote).custom_claims == b""


def test_unwrapped_quote_is_what_dcap_qvl_parses() -> None:
    for wrapped in (wrap_quote_legacy(QUOTE), wrap_quote_evidence(QUOTE, b"claims")):
        _, quote = unwrap_evidence(wrapped)
        assert dcap_qvl.parse_quote(quote).fmspc().lower() == "00a067110000"


# --- Rejections -----------------------------------------------------------------------------------------


def test_oversized_evidence_is_rejected() -> None:
    big = wrap_quote_evidence(QUOTE, b"\x00" * (MAX_EVIDENCE_SIZE - OE_ATTESTATION_HEADER_SIZE - len(QUOTE)))
    assert len(big) == MAX_EVIDENCE_SIZE
    assert unwrap_evidence(big)[1] == QUOTE
    rejects(big + b"\x00", "more than the limit", offset=MAX_EVIDENCE_SIZE)
    with pytest.raises(InvalidQuote, match="more than the limit of 1000"):
        unwrap_evidence(QUOTE, max_size=1000)
    with pytest.raises(InvalidQuote, match="more than the limit"):
        wrap_quote_evidence(QUOTE, b"\x00" * MAX_EVIDENCE_SIZE)
    with pytest.raises(InvalidQuote, match="more than the limit"):
        OeReportHeader.from_bytes(wrap_quote_legacy(QUOTE), max_size=100)


@pytest.mark.parametrize(
    ("data", "match", "offset"),
    [
        (legacy(1, 2, len(QUOTE) + 1, QUOTE), "report_size declares 4601 bytes but only 4600", 8),
        (
            legacy(1, 2, len(QUOTE) - 1, QUOTE),
            "1 trailing bytes after the 4599 bytes that report_size",
            16 + 4599,
        ),
        (legacy(1, 2, 0, b""), "report_size is 0", 8),
        (evidence(3, SGX_ECDSA_BYTES, len(QUOTE) + 8, QUOTE), "data_size declares 4608 bytes", 24),
        (evidence(3, SGX_ECDSA_BYTES, 100, QUOTE), "trailing bytes after the 100 bytes that data_size", 132),
        (evidence(3, SGX_ECDSA_BYTES, 2**64 - 1, QUOTE), "data_size declares 18446744073709551615", 24),
        (
            legacy(1, 2, len(QUOTE) + 3, QUOTE + b"abc"),
            "3 trailing bytes after the quote in the OE report",
            4616,
        ),
        (QUOTE + b"\x00", "1 trailing bytes after the quote in the raw quote", 4600),
        (QUOTE[:-1], "truncated quote: signature data declares", 432),
        (QUOTE[:400], "truncated quote: needs at least 436 bytes", 0),
        (evidence(3, SGX_ECDSA_BYTES, 500, QUOTE[:500]), "truncated quote", OE_ATTESTATION_HEADER_SIZE + 432),
        (evidence(3, SGX_ECDSA_BYTES, 4, b"\x05\x00\x02\x00"), "version 5 is not 3 or 4", 32),
        (legacy(1, 2, 1, b"\x03"), "no version field", 16),
    ],
)
def test_size_mismatches_and_truncation(data: bytes, match: str, offset: int) -> None:
    rejects(data, match, offset)


@pytest.mark.parametrize(
    ("data", "match", "offset"),
    [
        (legacy(1, 1, len(QUOTE), QUOTE), "SGX local report .* cannot be used for remote attestation", 4),
        (legacy(1, 7, len(QUOTE), QUOTE), "unknown OE report type 7", 4),
        (evidence(2, SGX_ECDSA_BYTES, len(QUOTE), QUOTE), "header version 2 is not supported", 0),
        (
            evidence(3, LOCAL_BYTES, len(QUOTE), QUOTE),
            "local attestation evidence cannot be verified remotely",
            4,
        ),
        (evidence(3, EPID_LINKABLE_BYTES, len(QUOTE), QUOTE), "EPID", 4),
        (evidence(3, oe.FORMAT_RAW_SGX_QUOTE_ECDSA.bytes, len(QUOTE), QUOTE), "only a verifier argument", 4),
        (evidence(3, bytes(16), len(QUOTE), QUOTE), "names no format", 4),
        (evidence(3, uuid.uuid4().bytes, len(QUOTE), QUOTE), "not OE_FORMAT_UUID_SGX_ECDSA", 4),
        (b"\x07\x00\x00\x00" + QUOTE, "unrecognised evidence: starts with 0x00000007", 0),
        (b"\x05\x00\x02\x00" + QUOTE[4:], "unrecognised evidence", 0),
        (TDX_QUOTE, "TEE type 0x81 is not SGX", 4),
        (b"\x03\x00", "truncated evidence: 2 bytes", 0),
        (b"", "truncated evidence: 0 bytes", 0),
    ],
)
def test_wrong_versions_types_and_formats(data: bytes, match: str, offset: int) -> None:
    rejects(data, match, offset)


def test_header_parsers_reject_what_unwrap_rejects() -> None:
    with pytest.raises(InvalidQuote, match="version 3 is not supported"):
        OeReportHeader.from_bytes(wrap_quote_evidence(QUOTE))
    with pytest.raises(InvalidQuote, match="version 1 is not supported"):
        OeAttestationHeader.from_bytes(wrap_quote_legacy(QUOTE))
    with pytest.raises(InvalidQuote, match="truncated OE report header"):
        OeReportHeader.from_bytes(b"\x01\x00\x00\x00")
    with pytest.raises(InvalidQuote, match="truncated OE attestation header"):
        OeAttestationHeader.from_bytes(wrap_quote_evidence(QUOTE)[:31])


def test_wrapping_requires_exactly_one_quote() -> None:
    for wrap in (wrap_quote_legacy, wrap_quote_evidence):
        with pytest.raises(InvalidQuote, match="trailing bytes after the quote"):
            wrap(QUOTE + b"\x00")
        with pytest.raises(InvalidQuote, match="not an SGX quote"):
            wrap(b"\x01" * 500)
        with pytest.raises(UsageError):
            wrap("quote")  # type: ignore[arg-type]


@pytest.mark.parametrize("wrap", [wrap_quote_legacy, wrap_quote_evidence])
def test_every_truncation_raises_invalid_quote(wrap: object) -> None:
    assert callable(wrap)
    wrapped = wrap(QUOTE)
    for size in range(len(wrapped)):
        with pytest.raises(InvalidQuote) as info:
            unwrap_evidence(wrapped[:size])
        assert info.value.offset is not None


def test_models_validate_on_construction() -> None:
    with pytest.raises(UsageError):
        OeReportHeader(version=1, report_type=1, report=QUOTE)
    with pytest.raises(UsageError):
        OeReportHeader(version=2, report_type=2, report=QUOTE)
    with pytest.raises(UsageError):
        OeReportHeader(version=1, report_type=2, report=b"")
    with pytest.raises(UsageError):
        OeAttestationHeader(version=3, format_id=oe.FORMAT_SGX_LOCAL_ATTESTATION, data=QUOTE)
    with pytest.raises(UsageError):
        OeAttestationHeader(version=3, format_id=FORMAT_SGX_ECDSA, data=QUOTE, padding=b"\x00")
    with pytest.raises(AttributeError):
        OeAttestationHeader(3, FORMAT_SGX_ECDSA, QUOTE).data = b""  # type: ignore[misc]


# --- Fuzzing --------------------------------------------------------------------------------------------


def _unwrap_or_invalid(data: bytes) -> None:
    error: InvalidQuote | None = None
    try:
        unwrapped = unwrap_evidence_with_claims(data)
    except InvalidQuote as exc:
        error = exc
    if error is not None:
        assert error.offset is not None
        return
    assert unwrapped.quote in data
    assert data.endswith(unwrapped.quote + unwrapped.custom_claims)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1200))
def test_random_bytes_only_raise_invalid_quote(data: bytes) -> None:
    _unwrap_or_invalid(data)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([1, 2, 3, 4, 0x00020003, 0x00020004]),
    st.integers(0, 2),
    st.integers(0, 2**64 - 1) | st.integers(0, 700),
    st.binary(max_size=700),
)
def test_random_headers_only_raise_invalid_quote(first: int, kind: int, size: int, tail: bytes) -> None:
    middle = [struct.pack("<IQ", kind, size), SGX_ECDSA_BYTES + struct.pack("<4xQ", size), b""][kind]
    _unwrap_or_invalid(struct.pack("<I", first) + middle + tail)


@settings(max_examples=800, deadline=None)
@given(
    st.sampled_from([wrap_quote_legacy(QUOTE), wrap_quote_evidence(QUOTE, b"claims"), QUOTE]),
    st.lists(st.tuples(st.integers(0, 4700), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 4700),
)
def test_mutations_only_raise_invalid_quote(base: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base)
    # Mutations concentrate on the envelope and the quote's length fields, where parsing decisions are made.
    for index, value in edits:
        data[index % 48 if index % 2 else index % len(data)] = value
    _unwrap_or_invalid(bytes(data[: max(cut, len(data) - 64)]))
