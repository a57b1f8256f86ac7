"""A bounded little-endian byte reader shared by the SGX parsers.

Every read names what it reads, so that a truncated or oversized structure raises :class:`InvalidQuote` saying
what was wrong and at which byte offset of the outermost buffer.
"""

from __future__ import annotations

import struct

from enklave.errors import InvalidQuote

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class Reader:
    """Reads fields from ``data`` in order, starting at ``start``; offsets in errors are absolute.

    ``end`` bounds the reader to a sub-range, so that a nested structure cannot read past its declared size.
    """

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end

    @property
    def offset(self) -> int:
        """The absolute offset of the next byte to read."""
        return self._pos

    @property
    def remaining(self) -> int:
        """How many bytes are left before the end of this reader's range."""
        return self._end - self._pos

    def _need(self, size: int, what: str) -> int:
        pos = self._pos
        if size > self._end - pos:
            raise InvalidQuote(f"truncated {what}: needs {size} bytes, {self._end - pos} left", offset=pos)
        self._pos = pos + size
        return pos

    def take(self, size: int, what: str) -> bytes:
        """Read exactly ``size`` bytes."""
        pos = self._need(size, what)
        return self._data[pos : pos + size]

    def u16(self, what: str) -> int:
        """Read an unsigned 16-bit little-endian integer."""
        pos = self._need(2, what)
        return int(_U16.unpack_from(self._data, pos)[0])

    def u32(self, what: str) -> int:
        """Read an unsigned 32-bit little-endian integer."""
        pos = self._need(4, what)
        return int(_U32.unpack_from(self._data, pos)[0])

    def u64(self, what: str) -> int:
        """Read an unsigned 64-bit little-endian integer."""
        pos = self._need(8, what)
        return int(_U64.unpack_from(self._data, pos)[0])

    def sub(self, size: int, what: str) -> Reader:
        """Split off a reader over the next ``size`` bytes (a length-prefixed nested structure)."""
        pos = self._need(size, what)
        return Reader(self._data, pos, pos + size)

    def consumed_since(self, start: int) -> bytes:
        """The bytes read from absolute offset ``start`` up to the current position (already bounds-checked)."""
        return self._data[start : self._pos]

    def finish(self, what: str) -> None:
        """Fail unless every byte of the range was consumed: trailing bytes are never ignored."""
        if self._pos != self._end:
            raise InvalidQuote(f"{self._end - self._pos} trailing bytes after {what}", offset=self._pos)


def expect_size(data: bytes, size: int, what: str) -> None:
    """Fail unless a fixed-size structure has exactly ``size`` bytes."""
    if len(data) != size:
        raise InvalidQuote(f"{what} must be {size} bytes, got {len(data)}")
