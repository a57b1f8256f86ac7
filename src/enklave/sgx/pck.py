"""The Intel SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1), as frozen models.

A PCK (Provisioning Certification Key) leaf certificate carries, in a non-critical extension, the identity
and TCB of the platform that the quote's attestation key was certified for: PPID, the 16 SGX TCB component
SVNs, PCESVN, CPUSVN, PCE-ID, FMSPC, the SGX type and, for certificates issued by the Platform CA, the
platform instance ID and configuration flags. Source: Intel "SGX PCK Certificate and Certificate Revocation
List Profile Specification" (the profile; the extension table in section 1.3.5 of revision 1.4); the same
OIDs and types are used by Intel's QVL ``PckParser`` (SGXDataCenterAttestationPrimitives) and by
Phala-Network/dcap-qvl.

The extension value is a DER ``SEQUENCE OF SEQUENCE { OID, value }``::

    .1 PPID                OCTET STRING (16)
    .2 TCB                 SEQUENCE OF SEQUENCE { OID, value }
       .2.1 .. .2.16       SGX TCB component SVNs, INTEGER 0..255
       .2.17               PCESVN, INTEGER 0..65535
       .2.18               CPUSVN, OCTET STRING (16)
    .3 PCE-ID              OCTET STRING (2)
    .4 FMSPC               OCTET STRING (6)
    .5 SGX Type            ENUMERATED (0 Standard, 1 Scalable, 2 Scalable with integrity)
    .6 PlatformInstanceID  OCTET STRING (16), optional (Platform CA certificates only)
    .7 Configuration       SEQUENCE OF { .7.1 dynamicPlatform, .7.2 cachedKeys, .7.3 SMTEnabled } BOOLEANs,
                           each optional; the whole entry is optional

Parsing is pure and strict (see :mod:`enklave.sgx._der`): every malformation raises
:class:`~enklave.errors.InvalidQuote`, because the PCK certificate travels inside the quote as evidence.

Extensions in the exact encoding Intel's PCK CAs produce (every one among the project's and the shared real
vectors) are read with one pattern match; any other encoding is read entry by entry, which accepts the entries in
any order, skips unknown ones and names what is wrong. Tests hold the two readers to the same result.

Measured cost (CPython 3.11.7, x86-64, best of 7 ``timeit`` runs over the 453-byte extension of the PCK
certificate in ``tests/assets/phala-dcap-qvl/sgx_quote``): :meth:`PckExtension.from_der` takes about 8 µs per
parse with the one-match reader and about 15 µs entry by entry, inside the 30 µs budget for the
quote-verification hot path. pyasn1 0.6.5 took about 850 µs to decode the same bytes
(docs/adr/0002-pck-extension-der.md).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Final, TypeVar, cast

from cryptography import x509

from enklave._x509 import DECODE_ERRORS
from enklave.errors import InvalidQuote, UsageError
from enklave.sgx import _der
from enklave.sgx._der import (
    TAG_BOOLEAN,
    TAG_ENUMERATED,
    TAG_SEQUENCE,
    DerError,
)

__all__ = [
    "MAX_EXTENSION_SIZE",
    "SGX_EXTENSIONS_OID",
    "PckConfiguration",
    "PckExtension",
    "PckTcb",
    "SgxType",
]

#: OID of the Intel SGX Extensions certificate extension (the profile, section 1.3.5).
SGX_EXTENSIONS_OID: Final = x509.ObjectIdentifier("1.2.840.113741.1.13.1")

#: Upper bound on the extension value. Real ones are about 450 bytes (up to about 520 with the Platform CA
#: entries), so 4 KiB leaves room for future entries while bounding the work done on hostile input.
MAX_EXTENSION_SIZE: Final = 4096

# DER content octets of 1.2.840.113741.1.13.1 (1.2 -> 0x2a, 840 -> 86 48, 113741 -> 86 f8 4d, then 1 13 1).
# Child arcs below 128 are one extra octet, so entries are compared as bytes without decoding the OID.
_ARC: Final = bytes.fromhex("2a864886f84d010d01")
_OID_PPID: Final = _ARC + b"\x01"
_OID_TCB: Final = _ARC + b"\x02"
_OID_PCE_ID: Final = _ARC + b"\x03"
_OID_FMSPC: Final = _ARC + b"\x04"
_OID_SGX_TYPE: Final = _ARC + b"\x05"
_OID_PLATFORM_INSTANCE_ID: Final = _ARC + b"\x06"
_OID_CONFIGURATION: Final = _ARC + b"\x07"

# .2.1 .. .2.16 are the SGX TCB components, .2.17 is PCESVN and .2.18 is CPUSVN (the profile, section 1.3.5).
_TCB_COMPONENT_OIDS: Final = {_OID_TCB + bytes([number]): number - 1 for number in range(1, 17)}
# DER is canonical: SEQUENCE { OID .2.n, INTEGER v } has exactly one encoding for each v in 0..255, so a
# byte comparison against that encoding is a complete check of the entry. The TCB parser uses these
# (all but the value octet) as a fast path for the 16 component entries, which are most of the extension;
# anything else, including a component out of the profile's order, goes through the general parser.
# 0x30 0x10: SEQUENCE of 16 bytes; 0x06 0x0b: the 11-byte OID; 0x02 0x01: INTEGER v with v < 128.
# 0x30 0x11 ... 0x02 0x02 0x00: the same with v >= 128, which needs a leading zero octet to stay positive.
_COMPONENT_ENCODINGS: Final = tuple(
    (b"\x30\x10\x06\x0b" + oid + b"\x02\x01", b"\x30\x11\x06\x0b" + oid + b"\x02\x02\x00")
    for oid in _TCB_COMPONENT_OIDS
)
# The same encodings as one pattern: the 16 components first and in order, each capturing its value octet
# (group 2n+1 when it is below 128, group 2n+2 otherwise), so that one match reads them all.
_COMPONENTS_IN_ORDER: Final = re.compile(
    b"".join(
        b"(?:" + re.escape(short) + b"([\x00-\x7f])|" + re.escape(long) + b"([\x80-\xff]))"
        for short, long in _COMPONENT_ENCODINGS
    )
)
_OID_PCESVN: Final = _OID_TCB + b"\x11"
_OID_CPUSVN: Final = _OID_TCB + b"\x12"
_TCB_COMPONENT_COUNT: Final = 16

# .7.1 dynamicPlatform, .7.2 cachedKeys, .7.3 SMTEnabled (the profile, section 1.3.5).
_CONFIGURATION_FLAGS: Final = {
    _OID_CONFIGURATION + b"\x01": "dynamic_platform",
    _OID_CONFIGURATION + b"\x02": "cached_keys",
    _OID_CONFIGURATION + b"\x03": "smt_enabled",
}

# Every OID the parser interprets; all other entries are only checked for well-formed DER.
_KNOWN_OIDS: Final = frozenset(
    [_ARC + bytes([number]) for number in range(1, 8)] + [*_TCB_COMPONENT_OIDS, *_CONFIGURATION_FLAGS]
) | {_OID_PCESVN, _OID_CPUSVN}


def _short_entry(oid: bytes, value_header: bytes, value: bytes) -> bytes:
    """The pattern of ``SEQUENCE { OID, value }`` in short form: ``value_header`` is the value's identifier and
    length octets, ``value`` the pattern of its content octets (of that length)."""
    size = 2 + len(oid) + len(value_header) + int(value_header[-1])
    return re.escape(bytes([TAG_SEQUENCE, size, _der.TAG_OID, len(oid)]) + oid + value_header) + value


# The whole extension as Intel's PCK CAs encode it: the profile's entries in its order, each in its only DER
# encoding, with the platform instance ID and the configuration (all three flags, in order) either both present
# (Platform CA) or both absent (Processor CA). Only the three long-form lengths (the extension, the TCB entry and
# its SEQUENCE) are not fixed by the pattern; _parse_canonical compares them with the sizes matched. One match
# reads what the general parser reads entry by entry; any other encoding goes to the general parser.
_PCESVN_VALUE: Final = (
    # INTEGER 0..65535 in minimal form: one octet below 128, two below 32768 (with a leading zero from 128 to
    # 255), three (a leading zero, then two octets) above.
    b"(?:" + re.escape(b"\x30\x10\x06\x0b" + _OID_PCESVN + b"\x02\x01") + b"(?P<pce_svn1>[\x00-\x7f])"
    b"|"
    + re.escape(b"\x30\x11\x06\x0b" + _OID_PCESVN + b"\x02\x02")
    + b"(?P<pce_svn2>\x00[\x80-\xff]|[\x01-\x7f].)"
    b"|" + re.escape(b"\x30\x12\x06\x0b" + _OID_PCESVN + b"\x02\x03") + b"(?P<pce_svn3>\x00[\x80-\xff].))"
)
_CANONICAL_EXTENSION: Final = re.compile(
    b"\x30\x82(?P<length>..)"
    + _short_entry(_OID_PPID, b"\x04\x10", b"(?P<ppid>.{16})")
    + b"\x30\x82(?P<tcb_entry_length>..)"
    + re.escape(b"\x06\x0a" + _OID_TCB)
    + b"\x30\x82(?P<tcb_length>..)"
    # The TCB SEQUENCE's contents; the 32 groups of the components follow this group's own number.
    + b"(?P<tcb>"
    + _COMPONENTS_IN_ORDER.pattern
    + _PCESVN_VALUE
    + _short_entry(_OID_CPUSVN, b"\x04\x10", b"(?P<cpu_svn>.{16})")
    + b")"
    + _short_entry(_OID_PCE_ID, b"\x04\x02", b"(?P<pce_id>..)")
    + _short_entry(_OID_FMSPC, b"\x04\x06", b"(?P<fmspc>.{6})")
    + _short_entry(_OID_SGX_TYPE, b"\x0a\x01", b"(?P<sgx_type>[\x00-\x02])")
    + b"(?:"
    + _short_entry(_OID_PLATFORM_INSTANCE_ID, b"\x04\x10", b"(?P<platform_instance_id>.{16})")
    + re.escape(b"\x30\x44\x06\x0a" + _OID_CONFIGURATION + b"\x30\x36")
    + b"".join(
        _short_entry(flag, b"\x01\x01", b"(?P<" + name.encode() + b">[\x00\xff])")
        for flag, name in _CONFIGURATION_FLAGS.items()
    )
    + b")?",
    re.DOTALL,
)
# Where the component groups start in match.groups() (group n is at index n - 1, and they follow group "tcb").
_FIRST_COMPONENT: Final = _CANONICAL_EXTENSION.groupindex["tcb"]

# Fixed sizes from the profile: PPID 16, CPUSVN 16, PCE-ID 2, FMSPC 6, platform instance ID 16 bytes.
_PPID_SIZE: Final = 16
_CPUSVN_SIZE: Final = 16
_PCE_ID_SIZE: Final = 2
_FMSPC_SIZE: Final = 6
_PLATFORM_INSTANCE_ID_SIZE: Final = 16
_MAX_SVN: Final = 0xFF
_MAX_PCESVN: Final = 0xFFFF


class SgxType(enum.IntEnum):
    """The SGX Type entry (.5): which memory protection the platform's SGX implementation provides."""

    STANDARD = 0
    SCALABLE = 1
    SCALABLE_WITH_INTEGRITY = 2


# Indexed by value; a tuple lookup is several times cheaper than calling the enum on the hot path.
_SGX_TYPES: Final = tuple(SgxType)


def _require_bytes(value: object, size: int, name: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise UsageError(f"{name} must be {size} bytes")


@dataclass(frozen=True, slots=True)
class PckTcb:
    """The TCB entry (.2): the 16 SGX TCB component SVNs, PCESVN and CPUSVN the PCK was certified for.

    Guarantees ``len(comp_svns) == 16`` with each in 0..255, ``0 <= pce_svn <= 65535`` and a 16-byte
    ``cpu_svn``; building one by hand with other values raises :class:`~enklave.errors.UsageError`.
    """

    comp_svns: tuple[int, ...]
    pce_svn: int
    cpu_svn: bytes

    def __post_init__(self) -> None:
        svns = self.comp_svns
        if (
            not isinstance(svns, tuple)
            or len(svns) != _TCB_COMPONENT_COUNT
            # The type set excludes bool (a subclass of int) and makes min/max meaningful.
            or set(map(type, svns)) != {int}
            or min(svns) < 0
            or max(svns) > _MAX_SVN
        ):
            raise UsageError("comp_svns must be a tuple of 16 integers in 0..255")
        if type(self.pce_svn) is not int or not 0 <= self.pce_svn <= _MAX_PCESVN:
            raise UsageError("pce_svn must be an integer in 0..65535")
        _require_bytes(self.cpu_svn, _CPUSVN_SIZE, "cpu_svn")


@dataclass(frozen=True, slots=True)
class PckConfiguration:
    """The Configuration entry (.7) of Platform CA-issued certificates; ``None`` marks an absent flag."""

    dynamic_platform: bool | None
    cached_keys: bool | None
    smt_enabled: bool | None

    def __post_init__(self) -> None:
        for name in ("dynamic_platform", "cached_keys", "smt_enabled"):
            value = getattr(self, name)
            if value is not None and type(value) is not bool:
                raise UsageError(f"{name} must be a bool or None")


@dataclass(frozen=True, slots=True)
class PckExtension:
    """The parsed Intel SGX extension of a PCK certificate.

    Build it with :meth:`from_der` or :meth:`from_certificate`; the fields are then exactly what ``raw``
    encodes, and :meth:`to_der` returns ``raw`` unchanged. Field shapes are checked on construction
    (:class:`~enklave.errors.UsageError`); the agreement of a hand-built instance's fields with its ``raw``
    is not, so only instances from the parsers describe a certificate.
    """

    ppid: bytes
    tcb: PckTcb
    pce_id: bytes
    fmspc: bytes
    sgx_type: SgxType
    platform_instance_id: bytes | None
    configuration: PckConfiguration | None
    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _require_bytes(self.ppid, _PPID_SIZE, "ppid")
        _require_bytes(self.pce_id, _PCE_ID_SIZE, "pce_id")
        _require_bytes(self.fmspc, _FMSPC_SIZE, "fmspc")
        if not isinstance(self.tcb, PckTcb):
            raise UsageError("tcb must be a PckTcb")
        if not isinstance(self.sgx_type, SgxType):
            raise UsageError("sgx_type must be an SgxType")
        if self.platform_instance_id is not None:
            _require_bytes(self.platform_instance_id, _PLATFORM_INSTANCE_ID_SIZE, "platform_instance_id")
        if self.configuration is not None and not isinstance(self.configuration, PckConfiguration):
            raise UsageError("configuration must be a PckConfiguration or None")
        if not isinstance(self.raw, bytes):
            raise UsageError("raw must be bytes")

    @classmethod
    def from_der(cls, ext_value: bytes) -> PckExtension:
        """Parse the DER value of the SGX extension (the ``extnValue`` OCTET STRING's contents).

        Entries may come in any order, as Intel's QVL looks them up by OID. Entries with OIDs this module
        does not know are skipped after checking that they are well-formed DER, so that a future profile
        revision adding an entry does not break verification of every new certificate; the fields that
        verification relies on are all mandatory and checked.

        Raises :class:`~enklave.errors.InvalidQuote` (with the byte offset into ``ext_value``) for a
        missing mandatory entry, a duplicated OID, a wrong type, size or range, non-strict DER (indefinite
        or non-minimal lengths, non-minimal integers), truncation, trailing bytes, or input over
        :data:`MAX_EXTENSION_SIZE` bytes.
        """
        if not isinstance(ext_value, bytes | bytearray | memoryview):
            raise UsageError("ext_value must be bytes")
        data = bytes(ext_value)
        try:
            return _parse(data)
        except DerError as exc:
            raise InvalidQuote(f"malformed SGX PCK extension: {exc.reason}", offset=exc.offset) from exc

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> PckExtension:
        """Find the SGX extension in a PCK certificate by OID and parse it with :meth:`from_der`.

        Raises :class:`~enklave.errors.InvalidQuote` when the certificate has no SGX extension, has it more
        than once, or its value is malformed. The certificate's signature and chain are not checked here.
        """
        if not isinstance(cert, x509.Certificate):
            raise UsageError("cert must be a cryptography.x509.Certificate")
        try:
            extension = cert.extensions.get_extension_for_oid(SGX_EXTENSIONS_OID)
        except x509.ExtensionNotFound as exc:
            raise InvalidQuote("PCK certificate has no SGX extension (1.2.840.113741.1.13.1)") from exc
        except DECODE_ERRORS as exc:
            # Unparsable or duplicated extensions.
            raise InvalidQuote(f"PCK certificate extensions cannot be parsed: {exc}") from exc
        value = extension.value
        if not isinstance(value, x509.UnrecognizedExtension):
            raise InvalidQuote("SGX extension was decoded as an unexpected type")
        return cls.from_der(value.value)

    def to_der(self) -> bytes:
        """Return the exact extension bytes this object was parsed from."""
        return self.raw


_T = TypeVar("_T")


def _fail(message: str, offset: int) -> InvalidQuote:
    return InvalidQuote(f"SGX PCK extension: {message}", offset=offset)


def _present(value: _T | None, what: str, offset: int) -> _T:
    if value is None:
        raise _fail(f"mandatory entry {what} is missing", offset)
    return value


def _parse(data: bytes) -> PckExtension:
    _der.check_input(data, MAX_EXTENSION_SIZE)
    canonical = _parse_canonical(data)
    return canonical if canonical is not None else _parse_entries(data)


def _parse_canonical(data: bytes) -> PckExtension | None:
    """The extension read with one match of its canonical encoding (see _CANONICAL_EXTENSION), or None."""
    match = _CANONICAL_EXTENSION.fullmatch(data)
    if match is None:
        return None
    tcb_start, tcb_end = match.span("tcb")
    # The three long-form lengths must be exactly the sizes that the pattern matched: the TCB entry holds its OID
    # (12 octets) and the TCB SEQUENCE's identifier and length (4), the extension everything after its own 4.
    if (
        int.from_bytes(match["length"], "big") != len(data) - 4
        or int.from_bytes(match["tcb_entry_length"], "big") != tcb_end - tcb_start + 16
        or int.from_bytes(match["tcb_length"], "big") != tcb_end - tcb_start
    ):
        return None
    values = match.groups()[_FIRST_COMPONENT : _FIRST_COMPONENT + 2 * _TCB_COMPONENT_COUNT]
    pce_svn = match["pce_svn1"] or match["pce_svn2"] or match["pce_svn3"]
    flags = match.group(*_CONFIGURATION_FLAGS.values())
    return PckExtension(
        ppid=match["ppid"],
        tcb=PckTcb(
            comp_svns=tuple((values[2 * n] or values[2 * n + 1])[0] for n in range(_TCB_COMPONENT_COUNT)),
            pce_svn=int.from_bytes(pce_svn, "big"),
            cpu_svn=match["cpu_svn"],
        ),
        pce_id=match["pce_id"],
        fmspc=match["fmspc"],
        sgx_type=_SGX_TYPES[match["sgx_type"][0]],
        platform_instance_id=match["platform_instance_id"],
        configuration=None if flags[0] is None else PckConfiguration(*(flag == b"\xff" for flag in flags)),
        raw=data,
    )


def _parse_entries(data: bytes) -> PckExtension:
    start, stop = _der.expect(data, 0, len(data), TAG_SEQUENCE, "SGX extension")
    if stop != len(data):
        raise _fail(f"{len(data) - stop} trailing bytes after the extension", stop)

    seen: set[bytes] = set()
    ppid = pce_id = fmspc = platform_instance_id = None
    tcb: PckTcb | None = None
    sgx_type: SgxType | None = None
    configuration: PckConfiguration | None = None

    pos = start
    while pos < stop:
        entry_pos = pos
        entry, pos = _der.read_entry(data, pos, stop, _KNOWN_OIDS)
        oid = entry[0]
        if oid in seen:
            raise _fail(f"entry {_der.oid_to_dotted(oid)} appears more than once", entry_pos)
        seen.add(oid)
        if oid == _OID_PPID:
            ppid = _der.read_octets(data, entry, _PPID_SIZE, "PPID")
        elif oid == _OID_TCB:
            tcb = _parse_tcb(data, entry)
        elif oid == _OID_PCE_ID:
            pce_id = _der.read_octets(data, entry, _PCE_ID_SIZE, "PCE-ID")
        elif oid == _OID_FMSPC:
            fmspc = _der.read_octets(data, entry, _FMSPC_SIZE, "FMSPC")
        elif oid == _OID_SGX_TYPE:
            sgx_type = _parse_sgx_type(data, entry)
        elif oid == _OID_PLATFORM_INSTANCE_ID:
            platform_instance_id = _der.read_octets(
                data, entry, _PLATFORM_INSTANCE_ID_SIZE, "PlatformInstanceID"
            )
        elif oid == _OID_CONFIGURATION:
            configuration = _parse_configuration(data, entry)
        else:
            # An entry this module does not know: it must still be well-formed DER (see from_der).
            _der.skip_element(data, entry[1], entry[4], depth=2)

    return PckExtension(
        ppid=_present(ppid, "PPID (1.2.840.113741.1.13.1.1)", stop),
        tcb=_present(tcb, "TCB (1.2.840.113741.1.13.1.2)", stop),
        pce_id=_present(pce_id, "PCE-ID (1.2.840.113741.1.13.1.3)", stop),
        fmspc=_present(fmspc, "FMSPC (1.2.840.113741.1.13.1.4)", stop),
        sgx_type=_present(sgx_type, "SGX Type (1.2.840.113741.1.13.1.5)", stop),
        platform_instance_id=platform_instance_id,
        configuration=configuration,
        raw=data,
    )


def _parse_tcb(data: bytes, entry: _der.Entry) -> PckTcb:
    _, at, tag, start, stop = entry
    if tag != TAG_SEQUENCE:
        raise _fail(f"TCB (1.2.840.113741.1.13.1.2) must be a SEQUENCE, found identifier 0x{tag:02x}", at)
    svns: list[int | None] = [None] * _TCB_COMPONENT_COUNT
    pce_svn: int | None = None
    cpu_svn: bytes | None = None
    seen: set[bytes] = set()
    pos = start
    # Fast path: the 16 components in the profile's order, each in its only DER encoding (see
    # _COMPONENT_ENCODINGS). Anything else, and whatever follows them, goes through the general parser.
    in_order = _COMPONENTS_IN_ORDER.match(data, start, stop)
    if in_order is not None:
        values = in_order.groups()
        svns = [(values[2 * n] or values[2 * n + 1])[0] for n in range(_TCB_COMPONENT_COUNT)]
        pos = in_order.end()
    while pos < stop:
        entry_pos = pos
        inner, pos = _der.read_entry(data, pos, stop, _KNOWN_OIDS)
        oid = inner[0]
        index = _TCB_COMPONENT_OIDS.get(oid)
        duplicate = oid in seen
        seen.add(oid)
        if index is not None:
            duplicate = duplicate or svns[index] is not None
            svns[index] = _der.read_unsigned(data, inner, _MAX_SVN, "SGX TCB component SVN")
        elif oid == _OID_PCESVN:
            pce_svn = _der.read_unsigned(data, inner, _MAX_PCESVN, "PCESVN")
        elif oid == _OID_CPUSVN:
            cpu_svn = _der.read_octets(data, inner, _CPUSVN_SIZE, "CPUSVN")
        else:
            _der.skip_element(data, inner[1], inner[4], depth=4)
        if duplicate:
            raise _fail(f"TCB entry {_der.oid_to_dotted(oid)} appears more than once", entry_pos)
    if None in svns:
        number = svns.index(None) + 1
        raise _fail(f"mandatory entry TCB component SVN (1.2.840.113741.1.13.1.2.{number}) is missing", stop)
    # Every slot is an int now; the cast only tells the type checker what the check above established.
    comp_svns = cast("tuple[int, ...]", tuple(svns))
    return PckTcb(
        comp_svns=comp_svns,
        pce_svn=_present(pce_svn, "PCESVN (1.2.840.113741.1.13.1.2.17)", stop),
        cpu_svn=_present(cpu_svn, "CPUSVN (1.2.840.113741.1.13.1.2.18)", stop),
    )


def _parse_sgx_type(data: bytes, entry: _der.Entry) -> SgxType:
    _, at, tag, start, stop = entry
    if tag != TAG_ENUMERATED:
        raise _fail(
            f"SGX Type (1.2.840.113741.1.13.1.5) must be ENUMERATED, found identifier 0x{tag:02x}", at
        )
    value = _der.read_integer(data, start, stop)
    if value >= len(_SGX_TYPES):
        raise _fail(f"SGX Type {value} is not 0 (Standard), 1 (Scalable) or 2 (Scalable with integrity)", at)
    return _SGX_TYPES[value]


def _parse_configuration(data: bytes, entry: _der.Entry) -> PckConfiguration:
    _, at, tag, start, stop = entry
    if tag != TAG_SEQUENCE:
        raise _fail(f"Configuration (1.2.840.113741.1.13.1.7) must be a SEQUENCE, found 0x{tag:02x}", at)
    flags: dict[str, bool] = {}
    seen: set[bytes] = set()
    pos = start
    while pos < stop:
        entry_pos = pos
        inner, pos = _der.read_entry(data, pos, stop, _KNOWN_OIDS)
        oid, vat, vtag, vstart, vstop = inner
        if oid in seen:
            raise _fail(f"Configuration entry {_der.oid_to_dotted(oid)} appears more than once", entry_pos)
        seen.add(oid)
        name = _CONFIGURATION_FLAGS.get(oid)
        if name is None:
            _der.skip_element(data, vat, vstop, depth=4)
        elif vtag != TAG_BOOLEAN:
            raise _fail(
                f"Configuration entry {_der.oid_to_dotted(oid)} must be a BOOLEAN, found 0x{vtag:02x}", vat
            )
        else:
            flags[name] = _der.read_boolean(data, vstart, vstop)
    return PckConfiguration(
        dynamic_platform=flags.get("dynamic_platform"),
        cached_keys=flags.get("cached_keys"),
        smt_enabled=flags.get("smt_enabled"),
    )
