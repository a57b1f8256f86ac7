"""A tiny, strict DER reader for the small fixed structures found in SGX evidence.

This is not a general ASN.1 library. It reads Distinguished Encoding Rules (ITU-T X.690, clause 10) and
rejects everything DER forbids that a lenient BER parser would accept: indefinite lengths, non-minimal
length octets, non-minimal or negative INTEGERs, BOOLEANs other than 0x00/0xFF, constructed encodings of
primitive types, unsorted SET OF elements, and bytes after the last element. It is also bounded: the input
size, the length octets and the nesting depth all have hard limits, so hostile input stays cheap.

The functions work on ``(data, start, stop)`` index triples instead of slices or element objects. That keeps
a parse of the PCK extension (about 25 elements) cheap, and lets every error carry the absolute byte offset
at which it was found. Every problem raises :class:`DerError`; callers wrap it into their format's error
(``InvalidQuote`` for the PCK extension) with ``raise ... from exc``.

See docs/adr/0002-pck-extension-der.md for why this exists instead of a dependency.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "MAX_DEPTH",
    "MAX_INPUT_SIZE",
    "TAG_BOOLEAN",
    "TAG_ENUMERATED",
    "TAG_INTEGER",
    "TAG_NULL",
    "TAG_OCTET_STRING",
    "TAG_OID",
    "TAG_SEQUENCE",
    "TAG_SET",
    "DerError",
    "Entry",
    "check_input",
    "check_oid",
    "expect",
    "oid_to_dotted",
    "read_boolean",
    "read_entry",
    "read_integer",
    "read_octets",
    "read_tlv",
    "read_unsigned",
    "skip_element",
]

# Hard limits. The SGX PCK extension is about 450 bytes and three levels deep, so these leave ample room
# while keeping hostile input cheap to reject.
MAX_INPUT_SIZE: Final = 16 * 1024
MAX_DEPTH: Final = 8
# Four length octets already allow 4 GiB; anything longer cannot fit in MAX_INPUT_SIZE anyway.
_MAX_LENGTH_OCTETS: Final = 4

# Universal tags (X.690 / X.680 clause 8.4), as the full identifier octet (class, constructed bit, number).
TAG_BOOLEAN: Final = 0x01
TAG_INTEGER: Final = 0x02
TAG_OCTET_STRING: Final = 0x04
TAG_NULL: Final = 0x05
TAG_OID: Final = 0x06
TAG_ENUMERATED: Final = 0x0A
TAG_SEQUENCE: Final = 0x30
TAG_SET: Final = 0x31

_CONSTRUCTED: Final = 0x20
_CLASS_MASK: Final = 0xC0
_NUMBER_MASK: Final = 0x1F


class DerError(ValueError):
    """The bytes are not strict, bounded DER. ``offset`` is the absolute offset of the offending byte."""

    def __init__(self, reason: str, offset: int) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(f"{reason} (at byte offset {offset})")


def check_input(data: bytes, max_size: int = MAX_INPUT_SIZE) -> None:
    """Reject input that is empty or larger than ``max_size`` before any parsing starts."""
    if not data:
        raise DerError("empty input", 0)
    if len(data) > max_size:
        raise DerError(f"input is {len(data)} bytes, more than the limit of {max_size}", max_size)


def read_tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Read the identifier and length octets of the element at ``pos``, which must end by ``end``.

    Returns ``(tag, start, stop)``: the identifier octet and the bounds of the contents. Only the
    low-tag-number form is accepted (every tag this package reads is below 31), and only definite, minimal
    lengths (X.690 10.1).
    """
    if pos >= end:
        raise DerError("expected a DER element, found the end of the enclosing element", pos)
    tag = data[pos]
    if tag & _NUMBER_MASK == _NUMBER_MASK:
        raise DerError(f"high-tag-number form (identifier 0x{tag:02x}) is not supported", pos)
    if pos + 1 >= end:
        raise DerError("truncated element: the length octet is missing", pos + 1)
    first = data[pos + 1]
    if first < 0x80:
        start = pos + 2
        length = first
    else:
        count = first & 0x7F
        if count == 0:
            raise DerError("indefinite length is not allowed in DER", pos + 1)
        if count > _MAX_LENGTH_OCTETS:
            raise DerError(
                f"length uses {count} octets, more than the limit of {_MAX_LENGTH_OCTETS}", pos + 1
            )
        start = pos + 2 + count
        if start > end:
            raise DerError("truncated element: the length octets are cut short", pos + 1)
        # X.690 10.1: the long form must be used only when needed, with no leading zero octet.
        if data[pos + 2] == 0:
            raise DerError("non-minimal length: leading zero length octet", pos + 2)
        length = int.from_bytes(data[pos + 2 : start], "big")
        if length < 0x80:
            raise DerError(f"non-minimal length: {length} must use the short form", pos + 1)
    stop = start + length
    if stop > end:
        raise DerError(
            f"truncated element: declares {length} content bytes but only {end - start} remain", pos
        )
    return tag, start, stop


def expect(data: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    """Read the element at ``pos`` and require identifier ``tag``; returns its content bounds."""
    found, start, stop = read_tlv(data, pos, end)
    if found != tag:
        raise DerError(f"{what}: expected identifier 0x{tag:02x}, found 0x{found:02x}", pos)
    return start, stop


def read_integer(data: bytes, start: int, stop: int) -> int:
    """Decode INTEGER (or ENUMERATED) contents, which must be minimal and non-negative.

    X.690 8.3.2 requires the shortest two's-complement form; every integer in SGX structures is unsigned,
    so a set sign bit is rejected rather than decoded.
    """
    if start == stop:
        raise DerError("INTEGER with no content octets", start)
    first = data[start]
    if first & 0x80:
        raise DerError("negative INTEGER where a non-negative one is required", start)
    if first == 0 and stop - start > 1 and not data[start + 1] & 0x80:
        raise DerError("non-minimal INTEGER: redundant leading zero octet", start)
    return int.from_bytes(data[start:stop], "big")


def read_boolean(data: bytes, start: int, stop: int) -> bool:
    """Decode BOOLEAN contents: exactly one octet, 0x00 or 0xFF (X.690 11.1)."""
    if stop - start != 1:
        raise DerError(f"BOOLEAN must have one content octet, found {stop - start}", start)
    value = data[start]
    if value == 0x00:
        return False
    if value == 0xFF:
        return True
    raise DerError(f"BOOLEAN must be 0x00 or 0xff in DER, found 0x{value:02x}", start)


def check_oid(data: bytes, start: int, stop: int) -> None:
    """Validate OBJECT IDENTIFIER content octets in ``data[start:stop]``."""
    # X.690 8.19: at least one subidentifier, each in base 128 with no leading 0x80 octet, and the last
    # octet of the contents ends a subidentifier (high bit clear).
    if start == stop:
        raise DerError("OBJECT IDENTIFIER with no content octets", start)
    if data[stop - 1] & 0x80:
        raise DerError("OBJECT IDENTIFIER ends inside a subidentifier", stop - 1)
    at_subidentifier_start = True
    for index in range(start, stop):
        octet = data[index]
        if at_subidentifier_start and octet == 0x80:
            raise DerError("non-minimal OBJECT IDENTIFIER subidentifier", index)
        at_subidentifier_start = not octet & 0x80


def oid_to_dotted(content: bytes) -> str:
    """Render OBJECT IDENTIFIER content octets (already validated) as a dotted string, for messages."""
    arcs: list[int] = []
    value = 0
    for octet in content:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        return ""
    # X.690 8.19.4: the first subidentifier packs the first two arcs as 40 * X + Y, with X at most 2.
    first = arcs[0]
    head = [first // 40, first % 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])


# One ``SEQUENCE { OID, value }`` entry, the shape of X.509 extension contents such as the SGX extension:
# (OID content octets, value position, value identifier, value content start, value content stop). A plain
# tuple keeps the hot path free of per-entry object overhead.
Entry = tuple[bytes, int, int, int, int]


def read_entry(data: bytes, pos: int, end: int, known_oids: frozenset[bytes]) -> tuple[Entry, int]:
    """Read ``SEQUENCE { OID, value }`` at ``pos``; returns the entry and the position after it.

    The value must be the single element that fills the rest of the entry. OIDs in ``known_oids`` are
    well-formed by construction, so only other OIDs pay for the per-octet encoding check.
    """
    # Most entries are small: the entry, its OID and its value each use the short length form. For such an entry
    # with a known OID, these few comparisons are every check the general path below makes; anything else
    # (including every malformation) goes through it.
    if pos + 4 <= end and data[pos] == TAG_SEQUENCE and data[pos + 2] == TAG_OID:
        length, oid_length = data[pos + 1], data[pos + 3]
        stop = pos + 2 + length
        value_pos = pos + 4 + oid_length
        if length < 0x80 and oid_length < 0x80 and stop <= end and value_pos + 2 <= stop:
            oid = data[pos + 4 : value_pos]
            value_tag = data[value_pos]
            if (
                oid in known_oids
                and value_tag & _NUMBER_MASK != _NUMBER_MASK
                and data[value_pos + 1] == stop - value_pos - 2
            ):
                return (oid, value_pos, value_tag, value_pos + 2, stop), stop
    return _read_any_entry(data, pos, end, known_oids)


def _read_any_entry(data: bytes, pos: int, end: int, known_oids: frozenset[bytes]) -> tuple[Entry, int]:
    """:func:`read_entry` for every entry, element by element."""
    start, stop = expect(data, pos, end, TAG_SEQUENCE, "entry")
    oid_start, value_pos = expect(data, start, stop, TAG_OID, "entry OID")
    oid = data[oid_start:value_pos]
    if oid not in known_oids:
        check_oid(data, oid_start, value_pos)
    value_tag, value_start, value_stop = read_tlv(data, value_pos, stop)
    if value_stop != stop:
        raise DerError(
            f"entry {oid_to_dotted(oid)} has {stop - value_stop} bytes after its value", value_stop
        )
    return (oid, value_pos, value_tag, value_start, value_stop), stop


def read_octets(data: bytes, entry: Entry, size: int, what: str) -> bytes:
    """Return the entry's value, which must be an OCTET STRING of exactly ``size`` bytes."""
    oid, at, tag, start, stop = entry
    if tag != TAG_OCTET_STRING:
        raise DerError(f"{what} ({oid_to_dotted(oid)}) must be an OCTET STRING, found 0x{tag:02x}", at)
    if stop - start != size:
        raise DerError(f"{what} ({oid_to_dotted(oid)}) must be {size} bytes, found {stop - start}", at)
    return data[start:stop]


def read_unsigned(data: bytes, entry: Entry, limit: int, what: str) -> int:
    """Return the entry's value, which must be an INTEGER in ``0..limit``."""
    oid, at, tag, start, stop = entry
    if tag != TAG_INTEGER:
        raise DerError(f"{what} ({oid_to_dotted(oid)}) must be an INTEGER, found 0x{tag:02x}", at)
    value = read_integer(data, start, stop)
    if value > limit:
        raise DerError(f"{what} ({oid_to_dotted(oid)}) is {value}, above the maximum {limit}", at)
    return value


def skip_element(data: bytes, pos: int, end: int, depth: int = 0) -> int:
    """Validate the element at ``pos`` recursively, without decoding it; returns the position after it.

    Used for entries that the caller does not interpret but that must still be well-formed DER. Universal
    primitive types that this module knows are checked for their DER content rules, constructed encodings
    of primitive universal types are rejected, and SET OF elements must be sorted (X.690 11.6).
    """
    if depth > MAX_DEPTH:
        raise DerError(f"nesting deeper than {MAX_DEPTH} levels", pos)
    tag, start, stop = read_tlv(data, pos, end)
    if tag == 0x00:
        raise DerError("end-of-contents marker is not allowed in DER", pos)
    universal = tag & _CLASS_MASK == 0
    constructed = bool(tag & _CONSTRUCTED)
    if universal and constructed and tag not in (TAG_SEQUENCE, TAG_SET):
        raise DerError(f"constructed encoding of primitive universal type 0x{tag & 0x1F:02x}", pos)
    if universal and not constructed and tag in (TAG_SEQUENCE & 0x1F, TAG_SET & 0x1F):
        raise DerError("SEQUENCE or SET encoded as primitive", pos)
    if constructed:
        child = start
        previous: bytes | None = None
        while child < stop:
            child_end = skip_element(data, child, stop, depth + 1)
            if tag == TAG_SET:
                encoding = data[child:child_end]
                if previous is not None and encoding < previous:
                    raise DerError("SET OF elements are not in DER sort order", child)
                previous = encoding
            child = child_end
    elif tag == TAG_BOOLEAN:
        read_boolean(data, start, stop)
    elif tag in (TAG_INTEGER, TAG_ENUMERATED):
        _check_signed_integer(data, start, stop)
    elif tag == TAG_NULL:
        if stop != start:
            raise DerError("NULL must have no content octets", start)
    elif tag == TAG_OID:
        check_oid(data, start, stop)
    return stop


def _check_signed_integer(data: bytes, start: int, stop: int) -> None:
    # Unknown entries may legitimately hold negative integers, so only minimality is enforced here.
    if start == stop:
        raise DerError("INTEGER with no content octets", start)
    if stop - start > 1:
        first, second = data[start], data[start + 1] & 0x80
        if (first == 0x00 and not second) or (first == 0xFF and second):
            raise DerError("non-minimal INTEGER: redundant leading octet", start)
