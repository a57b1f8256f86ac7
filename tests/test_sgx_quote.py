"""SGX structures: byte-exact round trips, field values, and a parser that only ever raises InvalidQuote."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import asset
from enklave.errors import InvalidQuote, UsageError
from enklave.sgx.quote import MAX_QUOTE_SIZE, CertificationDataType, Quote
from enklave.sgx.report import (
    AttributeFlags,
    Attributes,
    Report,
    ReportBody,
    TargetInfo,
)

QUOTES = {
    "real": ("phala-dcap-qvl", "sgx_quote"),
    "intel-sample": ("intel-qvl-sampledata", "quote.dat"),
    "mobilecoin": ("mobilecoin-attestation", "hw_quote.dat"),
}


@pytest.mark.parametrize("name", QUOTES)
def test_quotes_round_trip_byte_for_byte(name: str) -> None:
    raw = asset(*QUOTES[name])
    quote = Quote.from_bytes(raw)
    assert quote.to_bytes() == raw
    assert quote.body.to_bytes() == raw[48:432]
    assert quote.header.to_bytes() == raw[:48]
    assert quote.signed_bytes == raw[:432]
    assert quote.qe_report.to_bytes() == quote.qe_report_raw


def test_real_quote_fields_match_dcap_qvl_parse(real_quote: bytes) -> None:
    import dcap_qvl

    ours = Quote.from_bytes(real_quote)
    theirs = dcap_qvl.parse_quote(real_quote)
    assert ours.version == theirs.header.version == 3
    assert ours.header.attestation_key_type == theirs.header.attestation_key_type == 2
    assert ours.header.qe_svn == theirs.header.qe_svn
    assert ours.header.pce_svn == theirs.header.pce_svn
    assert ours.header.qe_vendor_id == bytes(theirs.header.qe_vendor_id)
    assert ours.header.user_data == bytes(theirs.header.user_data)
    report = theirs.report
    assert ours.body.cpu_svn == bytes(report.cpu_svn)
    assert ours.body.attributes.to_bytes() == bytes(report.attributes)
    assert ours.body.mr_enclave == bytes(report.mr_enclave)
    assert ours.body.mr_signer == bytes(report.mr_signer)
    assert ours.body.report_data == bytes(report.report_data)
    assert ours.body.attributes.flags == AttributeFlags.INIT | AttributeFlags.MODE64BIT
    assert ours.body.report_data.rstrip(b"\0") == b"Hello, world!"
    assert ours.certification_data.type == CertificationDataType.PCK_CERT_CHAIN
    assert ours.pck_chain_pem is not None
    assert ours.pck_chain_pem.count(b"-----BEGIN CERTIFICATE-----") == 3
    assert ours.pck_chain_pem == bytes(theirs.cert_chain_pem_bytes()).rstrip(b"\0")


def test_intel_sample_carries_a_cleartext_ppid(intel_sample_quote: bytes) -> None:
    quote = Quote.from_bytes(intel_sample_quote)
    assert quote.certification_data.type == CertificationDataType.PPID_CLEARTEXT
    identifier = quote.certification_data.pck_identifier
    assert identifier is not None
    assert len(identifier.ppid) == 16
    assert identifier.pce_svn == 3
    assert quote.qe_auth_data == b""
    assert quote.pck_chain_pem is None


def test_tdx_quote_is_recognised_and_rejected() -> None:
    with pytest.raises(InvalidQuote, match="TDX quote") as info:
        Quote.from_bytes(asset("phala-dcap-qvl", "tdx_quote"))
    assert info.value.offset == 4


@pytest.mark.parametrize("version", [0, 1, 2, 5, 0xFFFF])
def test_unknown_versions_are_rejected(real_quote: bytes, version: int) -> None:
    with pytest.raises(InvalidQuote, match=f"unsupported quote version {version}"):
        Quote.from_bytes(struct.pack("<H", version) + real_quote[2:])


def test_every_truncation_is_rejected(real_quote: bytes) -> None:
    for size in range(len(real_quote)):
        with pytest.raises(InvalidQuote):
            Quote.from_bytes(real_quote[:size])


def test_trailing_bytes_are_rejected(real_quote: bytes) -> None:
    with pytest.raises(InvalidQuote, match="trailing bytes after quote"):
        Quote.from_bytes(real_quote + b"\0")


def test_signature_data_length_must_match(real_quote: bytes) -> None:
    length = int.from_bytes(real_quote[432:436], "little")
    with pytest.raises(InvalidQuote, match="trailing bytes after signature data"):
        Quote.from_bytes(real_quote[:432] + (length + 1).to_bytes(4, "little") + real_quote[436:] + b"\0")


def test_oversized_input_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidQuote, match="limit"):
        Quote.from_bytes(b"\x03\x00" + bytes(MAX_QUOTE_SIZE))


def test_unknown_certification_data_type(real_quote: bytes) -> None:
    offset = 1014 + int.from_bytes(real_quote[1012:1014], "little")
    tampered = real_quote[:offset] + (9).to_bytes(2, "little") + real_quote[offset + 2 :]
    with pytest.raises(InvalidQuote, match="unknown certification data type 9") as info:
        Quote.from_bytes(tampered)
    assert info.value.offset == offset


def test_non_bytes_input_is_invalid() -> None:
    with pytest.raises(InvalidQuote):
        Quote.from_bytes("not bytes")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_invalid_quote(data: bytes) -> None:
    # Any other exception escapes suppress() and fails the test.
    with contextlib.suppress(InvalidQuote):
        Quote.from_bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_real_quote_parses_or_raises_invalid_quote(data: st.DataObject) -> None:
    raw = bytearray(asset("phala-dcap-qvl", "sgx_quote"))
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        quote = Quote.from_bytes(bytes(raw[:cut]))
    except InvalidQuote:
        return
    assert quote.to_bytes() == bytes(raw[:cut])


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=384, max_size=384))
def test_any_384_bytes_round_trip_as_report_body(data: bytes) -> None:
    assert ReportBody.from_bytes(data).to_bytes() == data


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=432, max_size=432), st.binary(min_size=512, max_size=512))
def test_reports_and_target_infos_round_trip(report: bytes, target: bytes) -> None:
    assert Report.from_bytes(report).to_bytes() == report
    assert TargetInfo.from_bytes(target).to_bytes() == target


@pytest.mark.parametrize(
    ("cls", "size"), [(ReportBody, 384), (Report, 432), (TargetInfo, 512), (Attributes, 16)]
)
def test_fixed_size_structures_reject_other_sizes(cls: type, size: int) -> None:
    for wrong in (0, size - 1, size + 1):
        with pytest.raises(InvalidQuote):
            cls.from_bytes(bytes(wrong))


def test_attribute_flags() -> None:
    attributes = Attributes(AttributeFlags.INIT | AttributeFlags.DEBUG | AttributeFlags.KSS | 0x10000, 0xE7)
    assert attributes.debug
    assert not attributes.mode64bit
    assert attributes.flag_names() == ["INIT", "DEBUG", "KSS", "0x10000"]
    assert Attributes.from_bytes(attributes.to_bytes()) == attributes


def test_build_pads_report_data_and_validates() -> None:
    body = ReportBody.build(mr_enclave=bytes(32), mr_signer=b"\1" * 32, report_data=b"nonce", isv_svn=3)
    assert body.report_data == b"nonce" + bytes(59)
    assert ReportBody.from_bytes(body.to_bytes()) == body
    with pytest.raises(UsageError):
        ReportBody.build(mr_enclave=bytes(31), mr_signer=bytes(32))
    with pytest.raises(UsageError):
        ReportBody.build(mr_enclave=bytes(32), mr_signer=bytes(32), report_data=bytes(65))
    with pytest.raises(UsageError):
        ReportBody.build(mr_enclave=bytes(32), mr_signer=bytes(32), isv_svn=1 << 16)


def test_target_info_addresses_the_enclave(real_quote: bytes) -> None:
    body = Quote.from_bytes(real_quote).body
    target = TargetInfo.for_enclave(body)
    assert target.mr_enclave == body.mr_enclave
    assert TargetInfo.from_bytes(target.to_bytes()) == target


def _as_v4(v3: bytes) -> bytes:
    """Re-pack a v3 quote's parts in the v4 layout: the QE report and PCK chain move into certification data
    type 6. The signatures no longer verify (the header changed); the structure is what is under test."""
    quote = Quote.from_bytes(v3)
    inner = quote.certification_data.to_bytes()
    qe_data = quote.qe_report_raw + quote.qe_report_signature
    qe_data += len(quote.qe_auth_data).to_bytes(2, "little") + quote.qe_auth_data + inner
    outer = (6).to_bytes(2, "little") + len(qe_data).to_bytes(4, "little") + qe_data
    signature_data = quote.signature + quote.attestation_key + outer
    header = (4).to_bytes(2, "little") + v3[2:48]
    return header + v3[48:432] + len(signature_data).to_bytes(4, "little") + signature_data


def test_v4_sgx_quote_nests_qe_report_certification_data(real_quote: bytes) -> None:
    v3 = Quote.from_bytes(real_quote)
    raw = _as_v4(real_quote)
    v4 = Quote.from_bytes(raw)
    assert v4.version == 4
    assert v4.to_bytes() == raw
    assert v4.body == v3.body
    assert v4.qe_report == v3.qe_report
    assert v4.qe_report_signature == v3.qe_report_signature
    assert v4.qe_auth_data == v3.qe_auth_data
    assert v4.certification_data.type == CertificationDataType.PCK_CERT_CHAIN
    assert v4.pck_chain_pem == v3.pck_chain_pem


def test_v4_sgx_quote_requires_type_6(real_quote: bytes) -> None:
    quote = Quote.from_bytes(real_quote)
    inner = quote.certification_data.to_bytes()
    signature_data = quote.signature + quote.attestation_key + inner
    raw = (
        (4).to_bytes(2, "little")
        + real_quote[2:432]
        + len(signature_data).to_bytes(4, "little")
        + signature_data
    )
    with pytest.raises(InvalidQuote, match="must carry QE report certification data"):
        Quote.from_bytes(raw)


def test_v3_quote_may_not_carry_type_6(real_quote: bytes) -> None:
    v4 = _as_v4(real_quote)
    raw = (3).to_bytes(2, "little") + v4[2:]
    with pytest.raises(InvalidQuote):
        Quote.from_bytes(raw)
