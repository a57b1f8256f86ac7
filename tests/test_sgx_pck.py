"""Tests for enklave.sgx.pck: the SGX extension of PCK certificates, real ones and hostile input."""

from __future__ import annotations

import random
import re
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enklave.errors import InvalidQuote, UsageError
from enklave.sgx import _der
from enklave.sgx._der import MAX_DEPTH, DerError
from enklave.sgx.pck import (
    _KNOWN_OIDS,
    MAX_EXTENSION_SIZE,
    SGX_EXTENSIONS_OID,
    PckConfiguration,
    PckExtension,
    PckTcb,
    SgxType,
    _parse_canonical,
    _parse_entries,
)

ASSETS = Path(__file__).parent / "assets"
SGX = "1.2.840.113741.1.13.1"


def _first_pem_certificate(blob: bytes) -> bytes:
    match = re.search(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", blob, re.DOTALL)
    assert match is not None
    return match.group(0)


# The PCK leaf inside the real quote (certification data type 5 holds the PEM chain) and Intel's sample.
QUOTE_PCK_PEM = _first_pem_certificate((ASSETS / "phala-dcap-qvl" / "sgx_quote").read_bytes())
SAMPLE_PCK_PEM = (ASSETS / "intel-qvl-sampledata" / "pckCert.pem").read_bytes()


def _raw_extension(pem: bytes) -> bytes:
    cert = x509.load_pem_x509_certificate(pem)
    value = cert.extensions.get_extension_for_oid(SGX_EXTENSIONS_OID).value
    assert isinstance(value, x509.UnrecognizedExtension)
    return value.value


QUOTE_RAW = _raw_extension(QUOTE_PCK_PEM)
SAMPLE_RAW = _raw_extension(SAMPLE_PCK_PEM)


# A small DER encoder for building test vectors, written independently of the parser under test.
def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def integer(value: int, tag: int = 0x02) -> bytes:
    return tlv(tag, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def octets(value: bytes) -> bytes:
    return tlv(0x04, value)


def boolean(value: bool) -> bytes:
    return tlv(0x01, b"\xff" if value else b"\x00")


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def entry(dotted: str, value: bytes) -> bytes:
    return seq(oid(dotted), value)


def tcb_entries(comps: list[int], pce_svn: int, cpu_svn: bytes) -> list[bytes]:
    out = [entry(f"{SGX}.2.{number}", integer(svn)) for number, svn in enumerate(comps, start=1)]
    return [*out, entry(f"{SGX}.2.17", integer(pce_svn)), entry(f"{SGX}.2.18", octets(cpu_svn))]


def top_entries(ext: PckExtension) -> list[bytes]:
    """Re-encode a parsed extension entry by entry, in the profile's order."""
    tcb = ext.tcb
    out = [
        entry(f"{SGX}.1", octets(ext.ppid)),
        entry(f"{SGX}.2", seq(*tcb_entries(list(tcb.comp_svns), tcb.pce_svn, tcb.cpu_svn))),
        entry(f"{SGX}.3", octets(ext.pce_id)),
        entry(f"{SGX}.4", octets(ext.fmspc)),
        entry(f"{SGX}.5", integer(ext.sgx_type, tag=0x0A)),
    ]
    if ext.platform_instance_id is not None:
        out.append(entry(f"{SGX}.6", octets(ext.platform_instance_id)))
    if ext.configuration is not None:
        flags = [
            ext.configuration.dynamic_platform,
            ext.configuration.cached_keys,
            ext.configuration.smt_enabled,
        ]
        out.append(
            entry(
                f"{SGX}.7",
                seq(*(entry(f"{SGX}.7.{n}", boolean(f)) for n, f in enumerate(flags, 1) if f is not None)),
            )
        )
    return out


QUOTE_EXT = PckExtension.from_der(QUOTE_RAW)


def rejects(data: bytes, match: str) -> InvalidQuote:
    with pytest.raises(InvalidQuote, match=match) as info:
        PckExtension.from_der(data)
    return info.value


# --- Real certificates ---------------------------------------------------------------------------------


def test_real_quote_pck_fields() -> None:
    ext = PckExtension.from_certificate(x509.load_pem_x509_certificate(QUOTE_PCK_PEM))
    assert ext.fmspc == bytes.fromhex("00A067110000")
    assert ext.pce_id == b"\x00\x00"
    assert ext.sgx_type is SgxType.STANDARD
    assert ext.tcb.pce_svn == 13
    assert ext.tcb.comp_svns == (11, 11, 2, 2, 255, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert ext.tcb.cpu_svn == bytes.fromhex("0b0b0202ff0100000000000000000000")
    assert ext.platform_instance_id is None
    assert ext.configuration is None
    assert ext.to_der() == QUOTE_RAW
    assert ext == PckExtension.from_der(QUOTE_RAW)


@pytest.mark.parametrize("pem", [QUOTE_PCK_PEM, SAMPLE_PCK_PEM], ids=["phala-quote", "intel-sample"])
def test_fields_match_dcap_qvl(pem: bytes) -> None:
    ours = PckExtension.from_certificate(x509.load_pem_x509_certificate(pem))
    theirs = dcap_qvl.parse_pck_extension_from_pem(pem)
    assert ours.ppid == bytes(theirs.ppid)
    assert ours.tcb.cpu_svn == bytes(theirs.cpu_svn)
    assert ours.tcb.pce_svn == theirs.pce_svn
    assert ours.pce_id == bytes(theirs.pce_id)
    assert ours.fmspc == bytes(theirs.fmspc)
    assert int(ours.sgx_type) == theirs.sgx_type
    assert ours.platform_instance_id == theirs.platform_instance_id
    # dcap_qvl exposes the component SVNs only through raw OID lookups: each is a DER INTEGER's contents.
    for number, svn in enumerate(ours.tcb.comp_svns, start=1):
        raw = theirs.get_value(f"{SGX}.2.{number}")
        assert raw is not None
        assert int.from_bytes(bytes(raw), "big") == svn


def test_intel_sample_values() -> None:
    ext = PckExtension.from_der(SAMPLE_RAW)
    assert ext.fmspc == bytes.fromhex("00707f000000")
    assert ext.tcb.pce_svn == 3
    assert ext.tcb.comp_svns[:8] == (0, 3, 0, 0, 0, 1, 1, 0)


def test_encoder_reproduces_real_extensions() -> None:
    # Guards the test encoder itself: re-encoding the parsed fields gives the certificate's bytes back.
    for raw in (QUOTE_RAW, SAMPLE_RAW):
        assert seq(*top_entries(PckExtension.from_der(raw))) == raw


def test_certificate_without_extension() -> None:
    root = x509.load_pem_x509_certificate(
        (ASSETS / "intel-qvl-sampledata" / "trustedRootCaCert.pem").read_bytes()
    )
    with pytest.raises(InvalidQuote, match="no SGX extension"):
        PckExtension.from_certificate(root)


def test_accepts_bytearray_and_rejects_non_bytes() -> None:
    assert PckExtension.from_der(bytearray(QUOTE_RAW)) == QUOTE_EXT  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        PckExtension.from_der("not bytes")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        PckExtension.from_certificate(QUOTE_RAW)  # type: ignore[arg-type]


# --- Optional entries, order and unknown entries -------------------------------------------------------


def test_platform_ca_entries() -> None:
    instance = bytes(range(16))
    config = entry(f"{SGX}.7", seq(entry(f"{SGX}.7.1", boolean(True)), entry(f"{SGX}.7.3", boolean(False))))
    data = seq(*top_entries(QUOTE_EXT), entry(f"{SGX}.6", octets(instance)), config)
    ext = PckExtension.from_der(data)
    assert ext.platform_instance_id == instance
    assert ext.configuration == PckConfiguration(dynamic_platform=True, cached_keys=None, smt_enabled=False)
    assert ext.to_der() == data


def test_any_entry_order_parses_the_same() -> None:
    rng = random.Random(7)
    tcb_inner = tcb_entries(list(QUOTE_EXT.tcb.comp_svns), QUOTE_EXT.tcb.pce_svn, QUOTE_EXT.tcb.cpu_svn)
    rng.shuffle(tcb_inner)
    entries = top_entries(QUOTE_EXT)
    entries[1] = entry(f"{SGX}.2", seq(*tcb_inner))
    rng.shuffle(entries)
    ext = PckExtension.from_der(seq(*entries))
    assert ext.tcb == QUOTE_EXT.tcb
    assert (ext.ppid, ext.fmspc, ext.pce_id, ext.sgx_type) == (
        QUOTE_EXT.ppid,
        QUOTE_EXT.fmspc,
        QUOTE_EXT.pce_id,
        QUOTE_EXT.sgx_type,
    )


def test_unknown_entries_are_ignored_when_well_formed() -> None:
    unknown_top = entry(
        f"{SGX}.20", seq(tlv(0x02, b"\xfb"), tlv(0x31, integer(1) + integer(2)), tlv(0x05, b""))
    )
    entries = top_entries(QUOTE_EXT)
    tcb = tcb_entries(list(QUOTE_EXT.tcb.comp_svns), 13, QUOTE_EXT.tcb.cpu_svn)
    entries[1] = entry(f"{SGX}.2", seq(*tcb, entry(f"{SGX}.2.19", octets(b"future"))))
    ext = PckExtension.from_der(seq(*entries, unknown_top, entry("1.3.6.1.4.1.99999.1", tlv(0x0C, b"utf8"))))
    assert ext.tcb == QUOTE_EXT.tcb


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (tlv(0x02, b"\x00\x05"), "non-minimal INTEGER"),
        (tlv(0x01, b"\x01"), "BOOLEAN must be 0x00 or 0xff"),
        (tlv(0x24, octets(b"x")), "constructed encoding of primitive"),
        (tlv(0x31, integer(2) + integer(1)), "SET OF elements are not in DER sort order"),
        (tlv(0x05, b"\x00"), "NULL must have no content"),
        (tlv(0x06, b"\x2a\x80\x01"), "non-minimal OBJECT IDENTIFIER"),
        (tlv(0x1F, b""), "high-tag-number"),
    ],
)
def test_unknown_entries_must_be_well_formed(value: bytes, match: str) -> None:
    rejects(seq(*top_entries(QUOTE_EXT), entry(f"{SGX}.20", value)), match)


def test_unknown_entry_nesting_is_bounded() -> None:
    deep = integer(1)
    for _ in range(MAX_DEPTH + 2):
        deep = seq(deep)
    rejects(seq(*top_entries(QUOTE_EXT), entry(f"{SGX}.20", deep)), "nesting deeper")


def test_unknown_oid_must_be_well_formed() -> None:
    bad_oid = seq(tlv(0x06, b"\x2a\x86"), integer(1))  # the last subidentifier is unterminated
    rejects(seq(*top_entries(QUOTE_EXT), bad_oid), "ends inside a subidentifier")


# --- Strictness: each case is the real extension with one thing wrong ---------------------------------


def _replace(index: int, new: bytes) -> bytes:
    entries = top_entries(QUOTE_EXT)
    entries[index] = new
    return seq(*entries)


def _replace_tcb(number: int, new: bytes | None) -> bytes:
    inner = tcb_entries(list(QUOTE_EXT.tcb.comp_svns), QUOTE_EXT.tcb.pce_svn, QUOTE_EXT.tcb.cpu_svn)
    if new is None:
        del inner[number - 1]
    else:
        inner[number - 1] = new
    return _replace(1, entry(f"{SGX}.2", seq(*inner)))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            seq(*top_entries(QUOTE_EXT), entry(f"{SGX}.4", octets(b"\x00" * 6))),
            r"1\.4 appears more than once",
        ),
        (_replace_tcb(17, entry(f"{SGX}.2.3", integer(2))), r"TCB entry .*2\.3 appears more than once"),
        (_replace_tcb(3, entry(f"{SGX}.2.1", integer(11))), r"TCB entry .*2\.1 appears more than once"),
        (_replace_tcb(18, entry(f"{SGX}.2.17", integer(13))), r"TCB entry .*2\.17 appears more than once"),
        (
            _replace(
                4,
                entry(
                    f"{SGX}.7", seq(entry(f"{SGX}.7.2", boolean(True)), entry(f"{SGX}.7.2", boolean(True)))
                ),
            ),
            r"Configuration entry .*7\.2 appears more than once",
        ),
    ],
    ids=["top-level", "tcb-pcesvn-slot", "tcb-component", "tcb-pcesvn", "configuration"],
)
def test_duplicated_oids_are_rejected(data: bytes, match: str) -> None:
    rejects(data, match)


def test_non_minimal_lengths_are_rejected() -> None:
    fmspc = entry(f"{SGX}.4", octets(QUOTE_EXT.fmspc))
    long_form = b"\x30\x81" + bytes([len(fmspc) - 2]) + fmspc[2:]
    error = rejects(_replace(3, long_form), "non-minimal length")
    assert error.offset is not None
    leading_zero = b"\x30\x82\x00" + bytes([len(fmspc) - 2]) + fmspc[2:]
    rejects(_replace(3, leading_zero), "leading zero length octet")
    outer = QUOTE_RAW[4:]  # the outer SEQUENCE uses 0x82 + two octets; 0x84 + four octets is non-minimal
    rejects(b"\x30\x84\x00\x00" + QUOTE_RAW[2:4] + outer, "non-minimal length")


def test_indefinite_length_is_rejected() -> None:
    rejects(b"\x30\x80" + QUOTE_RAW[4:] + b"\x00\x00", "indefinite length")


def test_trailing_bytes_are_rejected() -> None:
    error = rejects(QUOTE_RAW + b"\x00", "1 trailing bytes after the extension")
    assert error.offset == len(QUOTE_RAW)
    fmspc_with_tail = seq(oid(f"{SGX}.4"), octets(QUOTE_EXT.fmspc), b"\x05\x00")
    rejects(_replace(3, fmspc_with_tail), r"entry .*1\.4 has 2 bytes after its value")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_replace(0, entry(f"{SGX}.1", octets(b"\x01" * 15))), r"PPID .* must be 16 bytes, found 15"),
        (_replace(3, entry(f"{SGX}.4", octets(b"\x01" * 7))), r"FMSPC .* must be 6 bytes, found 7"),
        (_replace(2, entry(f"{SGX}.3", integer(0))), r"PCE-ID .* must be an OCTET STRING"),
        (_replace(4, entry(f"{SGX}.5", integer(0))), "must be ENUMERATED"),
        (_replace(4, entry(f"{SGX}.5", integer(3, tag=0x0A))), "SGX Type 3 is not"),
        (_replace(1, entry(f"{SGX}.2", octets(b"tcb"))), "TCB .* must be a SEQUENCE"),
        (_replace(4, entry(f"{SGX}.7", octets(b"cfg"))), "Configuration .* must be a SEQUENCE"),
        (_replace(4, entry(f"{SGX}.7", seq(entry(f"{SGX}.7.1", integer(1))))), "must be a BOOLEAN"),
        (_replace(4, entry(f"{SGX}.6", octets(b"\x00" * 8))), r"PlatformInstanceID .* must be 16 bytes"),
        (_replace_tcb(5, entry(f"{SGX}.2.5", integer(256))), "is 256, above the maximum 255"),
        (_replace_tcb(17, entry(f"{SGX}.2.17", integer(65536))), "is 65536, above the maximum 65535"),
        (_replace_tcb(18, entry(f"{SGX}.2.18", octets(b"\x00" * 15))), r"CPUSVN .* must be 16 bytes"),
        (_replace_tcb(2, entry(f"{SGX}.2.2", tlv(0x02, b"\xff"))), "negative INTEGER"),
        (_replace_tcb(2, entry(f"{SGX}.2.2", tlv(0x02, b"\x00\x05"))), "non-minimal INTEGER"),
        (_replace_tcb(2, entry(f"{SGX}.2.2", tlv(0x02, b""))), "INTEGER with no content"),
        (_replace_tcb(2, entry(f"{SGX}.2.2", octets(b"\x05"))), "must be an INTEGER"),
        (_replace(3, seq(integer(4), octets(b"\x00" * 6))), "entry OID: expected identifier 0x06"),
        (_replace(3, tlv(0x31, oid(f"{SGX}.4") + octets(b"\x00" * 6))), "entry: expected identifier 0x30"),
        (_replace(3, seq(oid(f"{SGX}.4"))), "expected a DER element"),
        (octets(QUOTE_RAW), "SGX extension: expected identifier 0x30"),
        (b"", "empty input"),
        (b"\x30\x00", "mandatory entry PPID"),
    ],
)
def test_wrong_types_sizes_and_values_are_rejected(data: bytes, match: str) -> None:
    rejects(data, match)


@pytest.mark.parametrize(
    ("index", "name"), [(0, "PPID"), (1, "TCB"), (2, "PCE-ID"), (3, "FMSPC"), (4, "SGX Type")]
)
def test_missing_mandatory_entries(index: int, name: str) -> None:
    entries = top_entries(QUOTE_EXT)
    del entries[index]
    rejects(seq(*entries), f"mandatory entry {name} ")


@pytest.mark.parametrize(
    ("number", "name"), [(1, r"2\.1\)"), (16, r"2\.16\)"), (17, "PCESVN"), (18, "CPUSVN")]
)
def test_missing_tcb_entries(number: int, name: str) -> None:
    rejects(_replace_tcb(number, None), f"mandatory entry .*{name}")


def test_component_svns_out_of_order_and_above_127() -> None:
    comps = [200, 0, 127, 128, 255, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    inner = tcb_entries(comps, 0xFFFF, b"\x07" * 16)
    inner.reverse()
    ext = PckExtension.from_der(_replace(1, entry(f"{SGX}.2", seq(*inner))))
    assert ext.tcb == PckTcb(comp_svns=tuple(comps), pce_svn=0xFFFF, cpu_svn=b"\x07" * 16)


@pytest.mark.parametrize("order", ["in order", "a duplicate after them"])
def test_component_svns_in_order_on_both_sides_of_127(order: str) -> None:
    comps = [200, 0, 127, 128, 255, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    inner = tcb_entries(comps, 0x1234, b"\x07" * 16)
    if order == "in order":
        ext = PckExtension.from_der(_replace(1, entry(f"{SGX}.2", seq(*inner))))
        assert ext.tcb == PckTcb(comp_svns=tuple(comps), pce_svn=0x1234, cpu_svn=b"\x07" * 16)
    else:
        # The 16 read in one match, then component 4 again: still a duplicate.
        duplicated = seq(*inner[:16], inner[3], *inner[16:])
        rejects(_replace(1, entry(f"{SGX}.2", duplicated)), r"2\.4 appears more than once")


def test_oversized_input_is_rejected() -> None:
    padding = entry(f"{SGX}.20", octets(b"\x00" * MAX_EXTENSION_SIZE))
    rejects(seq(*top_entries(QUOTE_EXT), padding), "more than the limit")


def test_der_errors_are_chained() -> None:
    error = rejects(QUOTE_RAW[:-1], "truncated")
    assert isinstance(error.__cause__, DerError)
    assert error.offset == error.__cause__.offset


# --- Adversarial: truncation, random bytes, mutations --------------------------------------------------


@pytest.mark.parametrize("raw", [QUOTE_RAW, SAMPLE_RAW], ids=["phala-quote", "intel-sample"])
def test_every_truncation_raises_invalid_quote(raw: bytes) -> None:
    for size in range(len(raw)):
        with pytest.raises(InvalidQuote) as info:
            PckExtension.from_der(raw[:size])
        assert info.value.offset is not None
        assert 0 <= info.value.offset <= len(raw)


def _parse_or_invalid(data: bytes) -> None:
    try:
        ext = PckExtension.from_der(data)
    except InvalidQuote:
        return
    assert ext.to_der() == data
    assert len(ext.tcb.comp_svns) == 16


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_invalid_quote(data: bytes) -> None:
    _parse_or_invalid(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40).map(lambda tail: b"\x30" + bytes([len(tail)]) + tail))
def test_random_sequences_only_raise_invalid_quote(data: bytes) -> None:
    _parse_or_invalid(data)


Edits = list[tuple[str, int, int]]


def _edits(max_position: int) -> st.SearchStrategy[Edits]:
    """One to three byte edits: set, insert or delete, at a position taken modulo the length."""
    edit = st.tuples(
        st.sampled_from(["set", "insert", "delete"]), st.integers(0, max_position), st.integers(0, 255)
    )
    return st.lists(edit, min_size=1, max_size=3)


def _edited(raw: bytes, edits: Edits) -> bytes:
    data = bytearray(raw)
    for kind, position, value in edits:
        index = position % (len(data) or 1)
        if kind == "set":
            data[index] = value
        elif kind == "insert":
            data.insert(index, value)
        elif data:
            del data[index]
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([QUOTE_RAW, SAMPLE_RAW]), _edits(460))
def test_mutations_only_raise_invalid_quote(raw: bytes, edits: Edits) -> None:
    _parse_or_invalid(_edited(raw, edits))


# A Platform CA certificate (platform instance ID and configuration): the PCK leaf of the real TDX quote.
PLATFORM_RAW = _raw_extension(_first_pem_certificate((ASSETS / "phala-dcap-qvl" / "tdx_quote").read_bytes()))
REAL_RAWS = [QUOTE_RAW, SAMPLE_RAW, PLATFORM_RAW]


def _agrees_with_the_entry_parser(data: bytes) -> bool:
    """True when the one-match reader declines ``data`` or reads it exactly as the entry-by-entry parser."""
    canonical = _parse_canonical(data)
    if canonical is None:
        return False
    assert canonical == _parse_entries(data)
    return True


def test_real_extensions_are_read_in_one_match() -> None:
    assert all(_agrees_with_the_entry_parser(raw) for raw in REAL_RAWS)
    assert _parse_canonical(PLATFORM_RAW).configuration == PckConfiguration(True, True, True)  # type: ignore[union-attr]


@pytest.mark.parametrize("raw", REAL_RAWS, ids=["processor", "intel-sample", "platform"])
def test_one_match_reads_every_flipped_byte_as_the_entry_parser(raw: bytes) -> None:
    # Changed content (an SVN, the FMSPC) is still read in one match; changed structure (a length, a tag, an
    # OID) is declined and left to the entry parser, which reads or refuses it.
    taken = 0
    for index in range(len(raw)):
        for bit in (0x01, 0x80):
            data = bytearray(raw)
            data[index] ^= bit
            taken += _agrees_with_the_entry_parser(bytes(data))
    assert 0 < taken < 2 * len(raw)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(REAL_RAWS), _edits(560))
def test_one_match_agrees_with_the_entry_parser_on_mutations(raw: bytes, edits: Edits) -> None:
    _agrees_with_the_entry_parser(_edited(raw, edits))


def _entry_outcome(read, data: bytes, end: int):  # type: ignore[no-untyped-def]
    try:
        return read(data, 0, end, _KNOWN_OIDS)
    except DerError as exc:
        return exc.reason, exc.offset


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(sorted(_KNOWN_OIDS)),
    st.binary(max_size=6),
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 255)), max_size=3),
    st.integers(0, 3),
)
def test_the_short_entry_path_reads_as_the_general_one(
    oid: bytes, value: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    # A well-formed SEQUENCE { known OID, OCTET STRING } with up to three bytes changed (structure and lengths
    # included) and the enclosing end moved in: read_entry, with its short-entry comparisons, returns or refuses
    # exactly as the element-by-element reader.
    inner = b"\x06" + bytes([len(oid)]) + oid + b"\x04" + bytes([len(value)]) + value
    data = bytearray(b"\x30" + bytes([len(inner)]) + inner + b"\x05\x00")
    for position, byte in edits:
        data[position % len(data)] = byte
    end = max(0, len(data) - cut)
    assert _entry_outcome(_der.read_entry, bytes(data), end) == _entry_outcome(
        _der._read_any_entry, bytes(data), end
    )


def test_every_single_byte_flip_is_rejected_or_reparsed() -> None:
    # A single changed byte inside a value (PPID, FMSPC, an SVN) may still parse; it must then parse to
    # exactly the changed bytes. Changes to structure must be rejected.
    rejected = 0
    for index in range(len(QUOTE_RAW)):
        data = bytearray(QUOTE_RAW)
        data[index] ^= 0x01
        try:
            ext = PckExtension.from_der(bytes(data))
        except InvalidQuote:
            rejected += 1
            continue
        assert ext.to_der() == bytes(data)
        assert ext != QUOTE_EXT
    assert rejected > len(QUOTE_RAW) // 4


# --- Models ---------------------------------------------------------------------------------------------


def test_models_validate_on_construction() -> None:
    with pytest.raises(UsageError):
        PckTcb(comp_svns=(0,) * 15, pce_svn=0, cpu_svn=b"\x00" * 16)
    with pytest.raises(UsageError):
        PckTcb(comp_svns=(256,) + (0,) * 15, pce_svn=0, cpu_svn=b"\x00" * 16)
    with pytest.raises(UsageError):
        PckTcb(comp_svns=(True,) + (0,) * 15, pce_svn=0, cpu_svn=b"\x00" * 16)
    with pytest.raises(UsageError):
        PckTcb(comp_svns=(0,) * 16, pce_svn=-1, cpu_svn=b"\x00" * 16)
    with pytest.raises(UsageError):
        PckConfiguration(dynamic_platform=1, cached_keys=None, smt_enabled=None)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        PckExtension(
            ppid=b"\x00" * 16,
            tcb=QUOTE_EXT.tcb,
            pce_id=b"\x00",
            fmspc=QUOTE_EXT.fmspc,
            sgx_type=SgxType.STANDARD,
            platform_instance_id=None,
            configuration=None,
            raw=b"",
        )
    with pytest.raises(UsageError):
        PckExtension(
            ppid=b"\x00" * 16,
            tcb=QUOTE_EXT.tcb,
            pce_id=b"\x00\x00",
            fmspc=QUOTE_EXT.fmspc,
            sgx_type=0,  # type: ignore[arg-type]
            platform_instance_id=None,
            configuration=None,
            raw=b"",
        )


def test_models_are_frozen_and_raw_is_not_in_repr() -> None:
    with pytest.raises(AttributeError):
        QUOTE_EXT.fmspc = b"\x00" * 6  # type: ignore[misc]
    assert "raw" not in repr(QUOTE_EXT)
    assert "fmspc" in repr(QUOTE_EXT)
