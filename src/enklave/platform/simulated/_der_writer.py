"""A tiny, strict DER writer for the simulated PKI's Intel SGX extension (ITU-T X.690, clause 10).

The counterpart of :mod:`enklave.sgx._der`: it writes only what that reader accepts, with definite minimal
lengths, minimal non-negative INTEGERs and ENUMERATEDs, BOOLEANs as 0x00/0xFF and OIDs in minimal base-128.
Every value is checked before it is encoded; a value that DER cannot represent here (a negative number, an
OID with fewer than two arcs, a non-bytes octet string) raises :class:`~enklave.errors.UsageError`, because the
caller is this package's own code, never untrusted input.
"""

from __future__ import annotations

from typing import Final

from enklave.errors import UsageError

__all__ = [
    "TAG_BOOLEAN",
    "TAG_ENUMERATED",
    "TAG_INTEGER",
    "TAG_OCTET_STRING",
    "TAG_OID",
    "TAG_SEQUENCE",
    "boolean",
    "enumerated",
    "integer",
    "octet_string",
    "oid",
    "sequence",
    "tlv",
]

TAG_BOOLEAN: Final = 0x01
TAG_INTEGER: Final = 0x02
TAG_OCTET_STRING: Final = 0x04
TAG_OID: Final = 0x06
TAG_ENUMERATED: Final = 0x0A
TAG_SEQUENCE: Final = 0x30

# The reader refuses more than four length octets; nothing written here comes close to that.
_MAX_LENGTH: Final = (1 << 32) - 1


def _length(size: int) -> bytes:
    # X.690 10.1: the short form for lengths below 128, otherwise the long form with no leading zero octet.
    if size < 0x80:
        return bytes([size])
    if size > _MAX_LENGTH:
        raise UsageError(f"a DER element of {size} bytes is too long")
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def tlv(tag: int, content: bytes) -> bytes:
    """One element: identifier octet ``tag`` (low tag number form), minimal definite length, ``content``."""
    if not 0 <= tag <= 0xFF or tag & 0x1F == 0x1F:
        raise UsageError(f"identifier 0x{tag:x} is not a low-tag-number identifier octet")
    if not isinstance(content, bytes):
        raise UsageError("DER content must be bytes")
    return bytes([tag]) + _length(len(content)) + content


def _unsigned(tag: int, value: int) -> bytes:
    # bool is an int subclass; a flag passed where a number is expected is a bug.
    if type(value) is not int or value < 0:
        raise UsageError(f"only non-negative integers are written, not {value!r}")
    # The shortest two's-complement form of a non-negative number has room for a zero sign bit (X.690 8.3.2).
    return tlv(tag, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def integer(value: int) -> bytes:
    """A non-negative INTEGER in its minimal encoding."""
    return _unsigned(TAG_INTEGER, value)


def enumerated(value: int) -> bytes:
    """A non-negative ENUMERATED in its minimal encoding."""
    return _unsigned(TAG_ENUMERATED, value)


def boolean(value: bool) -> bytes:
    """A BOOLEAN: 0xFF for true and 0x00 for false, the only values DER allows (X.690 11.1)."""
    if type(value) is not bool:
        raise UsageError(f"a BOOLEAN must be a bool, not {type(value).__name__}")
    return tlv(TAG_BOOLEAN, b"\xff" if value else b"\x00")


def octet_string(value: bytes) -> bytes:
    """An OCTET STRING (always primitive in DER)."""
    if not isinstance(value, bytes):
        raise UsageError("an OCTET STRING must be bytes")
    return tlv(TAG_OCTET_STRING, value)


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER from its dotted form, e.g. ``"1.2.840.113741.1.13.1"``."""
    try:
        arcs = [int(part) for part in dotted.split(".")]
    except ValueError as exc:
        raise UsageError(f"{dotted!r} is not a dotted OBJECT IDENTIFIER") from exc
    if len(arcs) < 2 or min(arcs) < 0 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise UsageError(f"{dotted!r} is not a valid OBJECT IDENTIFIER")
    # X.690 8.19.4: the first two arcs share one subidentifier, 40 * X + Y.
    content = bytearray()
    for subidentifier in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        # Base 128, most significant group first, the high bit set on every octet but the last (8.19.2).
        groups = [subidentifier & 0x7F]
        rest = subidentifier >> 7
        while rest:
            groups.append(0x80 | (rest & 0x7F))
            rest >>= 7
        content += bytes(reversed(groups))
    return tlv(TAG_OID, bytes(content))


def sequence(*elements: bytes) -> bytes:
    """A SEQUENCE of already encoded elements, in the order given."""
    return tlv(TAG_SEQUENCE, b"".join(elements))
