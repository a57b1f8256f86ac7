"""The strict CBOR subset that crosses the host/enclave boundary (RFC 8949), encoded and decoded here.

Decoding is ours, not a general CBOR library's, because a general decoder does work on behalf of the sender
before any type check runs: cbor2 resolves shared and string references (tags 28/29, 25/256), which lets a few
kilobytes expand into gigabytes of lists, and builds regular expressions, decimals, dates and MIME messages from
tags. The boundary needs none of that. The decoder accepts exactly:

- unsigned and negative integers (major types 0 and 1, at most 64 bits),
- byte and text strings of definite length (2, 3; text must be UTF-8),
- arrays and maps of definite length (4, 5), nested at most :data:`MAX_DEPTH` deep, map keys being integers
  or strings, without duplicates,
- false, true, null and half, single and double precision floats (7).

Tags, indefinite lengths, undefined and other simple values are malformed. No length may claim more items or
bytes than the frame has left, so nothing is allocated beyond what the sender actually sent. Trailing bytes are
malformed. Encoding uses cbor2 (which only ever sees our own values) and keeps large byte strings out of its
buffer: CBOR items concatenate, so a byte string can be sent as its head followed by the original object.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Protocol

import cbor2

__all__ = ["LARGE", "MAX_DEPTH", "Reader", "SocketReader", "decode", "encode_pieces", "parse"]

MAX_DEPTH = 32
# Byte strings at least this long are sent as they are (scatter-gather) instead of copied by the encoder.
LARGE = 64 * 1024

_SIMPLE_VALUES = {20: False, 21: True, 22: None}
_FLOATS = {25: struct.Struct(">e"), 26: struct.Struct(">f"), 27: struct.Struct(">d")}


class Reader(Protocol):
    """Where the decoder takes its bytes from: exactly ``size`` bytes, never more than are left."""

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes; raises ValueError when fewer are left in the frame."""
        ...

    def remaining(self) -> int:
        """How many bytes of the frame are left."""
        ...


class SocketReader:
    """A frame still in the socket, read exactly: a large byte string is received with one
    ``recv(n, MSG_WAITALL)`` straight into the bytes object the caller gets.

    Small reads (item heads, short strings) are served from a peek at the next bytes, and the bytes they used are
    consumed from the socket in one call before the next direct read, so a frame costs a few system calls
    whatever its number of heads.
    """

    __slots__ = ("_left", "_peeked", "_sock", "_used")

    _PEEK = 256

    def __init__(self, sock: socket.socket, length: int) -> None:
        self._sock = sock
        self._left = length
        self._peeked = b""  # bytes at the front of the socket, not consumed yet
        self._used = 0  # how many of them the reads have used

    def read(self, size: int) -> bytes:
        if size > self._left:
            raise ValueError("truncated message")
        if self._used + size > len(self._peeked) and size < self._PEEK:
            self._consume_used()
            self._peeked = self._sock.recv(min(self._left, self._PEEK), socket.MSG_PEEK)
        if self._used + size <= len(self._peeked):
            data = self._peeked[self._used : self._used + size]
            self._used += size
            self._left -= size
            return data
        self._consume_used()
        self._left -= size
        return self._receive(size)

    def _consume_used(self) -> None:
        if self._used:
            self._receive(self._used)
        self._peeked, self._used = b"", 0

    def _receive(self, size: int) -> bytes:
        data = self._sock.recv(size, socket.MSG_WAITALL) if size else b""
        if len(data) < size:
            # MSG_WAITALL stops early on a signal or at the end of the stream: finish by hand.
            parts = [data]
            missing = size - len(data)
            while missing:
                chunk = self._sock.recv(missing)
                if not chunk:
                    raise ConnectionResetError("the peer closed the channel mid-frame")
                parts.append(chunk)
                missing -= len(chunk)
            data = b"".join(parts)
        return data

    def remaining(self) -> int:
        return self._left

    def finish(self) -> None:
        """Consume the bytes the last reads used (call once the frame is parsed)."""
        self._consume_used()

    def skip_rest(self) -> None:
        """Consume what is left of the frame, so that the stream stays in step after a malformed one."""
        self._consume_used()
        while self._left:
            size = min(self._left, 1 << 20)
            self._left -= size
            self._receive(size)


def parse(reader: Reader, depth: int = 0) -> Any:
    """Decode one item of the boundary subset from ``reader``; raises ValueError when it is malformed."""
    initial = reader.read(1)[0]
    major, info = initial >> 5, initial & 0x1F
    if major == 7:
        if info in _SIMPLE_VALUES:
            return _SIMPLE_VALUES[info]
        if info in _FLOATS:
            return _FLOATS[info].unpack(reader.read(_FLOATS[info].size))[0]
        raise ValueError(f"unsupported simple value or break (info {info})")
    if info >= 28:
        raise ValueError("indefinite lengths and reserved additional information are not accepted")
    value = info if info < 24 else int.from_bytes(reader.read(1 << (info - 24)), "big")
    if major == 0:
        return value
    if major == 1:
        return -1 - value
    if major == 6:
        raise ValueError("CBOR tags are not accepted at the enclave boundary")
    # Every byte of a string is in the frame and every item of a container takes at least one byte (two for a
    # map entry), so no length may claim more than what is left: nothing is allocated that was not sent.
    if value > reader.remaining():
        raise ValueError("truncated message")
    if major == 2:
        return reader.read(value)
    if major == 3:
        return reader.read(value).decode("utf-8")
    if depth >= MAX_DEPTH:
        raise ValueError(f"nesting deeper than {MAX_DEPTH} levels")
    if major == 4:
        return [parse(reader, depth + 1) for _ in range(value)]
    result: dict[Any, Any] = {}
    for _ in range(value):
        key = parse(reader, depth + 1)
        if type(key) not in (str, int):
            raise ValueError("map keys must be strings or integers")
        if key in result:
            raise ValueError("duplicate map key")
        result[key] = parse(reader, depth + 1)
    return result


def decode(payload: bytes | memoryview) -> Any:
    """Decode a whole frame held in memory; raises ValueError when it is malformed or has trailing bytes.

    The same rules as :func:`parse`, written with offsets into the frame instead of reads from a
    :class:`Reader`: every ecall and its reply goes through here, and method calls per byte would cost more
    than the socket round trip does.
    """
    data = bytes(payload)
    message, end = _parse_at(data, 0, 0)
    if end != len(data):
        raise ValueError("trailing bytes after the message")
    return message


def _parse_at(data: bytes, position: int, depth: int) -> tuple[Any, int]:
    if position >= len(data):
        raise ValueError("truncated message")
    initial = data[position]
    major, info = initial >> 5, initial & 0x1F
    position += 1
    if major == 7:
        if info in _SIMPLE_VALUES:
            return _SIMPLE_VALUES[info], position
        if info in _FLOATS:
            unpacker = _FLOATS[info]
            if position + unpacker.size > len(data):
                raise ValueError("truncated message")
            return unpacker.unpack_from(data, position)[0], position + unpacker.size
        raise ValueError(f"unsupported simple value or break (info {info})")
    if info >= 28:
        raise ValueError("indefinite lengths and reserved additional information are not accepted")
    if info < 24:
        value = info
    else:
        size = 1 << (info - 24)
        if position + size > len(data):
            raise ValueError("truncated message")
        value = int.from_bytes(data[position : position + size], "big")
        position += size
    if major == 0:
        return value, position
    if major == 1:
        return -1 - value, position
    if major == 6:
        raise ValueError("CBOR tags are not accepted at the enclave boundary")
    if value > len(data) - position:
        raise ValueError("truncated message")
    if major == 2:
        return data[position : position + value], position + value
    if major == 3:
        return data[position : position + value].decode("utf-8"), position + value
    if depth >= MAX_DEPTH:
        raise ValueError(f"nesting deeper than {MAX_DEPTH} levels")
    if major == 4:
        items = []
        for _ in range(value):
            item, position = _parse_at(data, position, depth + 1)
            items.append(item)
        return items, position
    result: dict[Any, Any] = {}
    for _ in range(value):
        key, position = _parse_at(data, position, depth + 1)
        if type(key) not in (str, int):
            raise ValueError("map keys must be strings or integers")
        if key in result:
            raise ValueError("duplicate map key")
        result[key], position = _parse_at(data, position, depth + 1)
    return result, position


def encode_pieces(message: list[Any]) -> list[bytes]:
    """The CBOR encoding of ``message`` as pieces whose concatenation is the encoding.

    Large byte strings in the message or in its argument list are emitted as a head plus the original object, so
    a 1 MiB argument is never copied by the encoder (cbor2 grows its output buffer step by step, which costs
    more than the socket does).
    """
    if not any(
        (type(v) is bytes and len(v) >= LARGE) or (type(v) is list and _has_large(v)) for v in message
    ):
        return [cbor2.dumps(message)]
    pieces: list[bytes] = [_head(4, len(message))]
    for value in message:
        if type(value) is list:
            pieces.append(_head(4, len(value)))
            for item in value:
                _piece(item, pieces)
        else:
            _piece(value, pieces)
    return pieces


def _has_large(values: list[Any]) -> bool:
    return any(type(v) is bytes and len(v) >= LARGE for v in values)


def _piece(value: Any, pieces: list[bytes]) -> None:
    if type(value) is bytes and len(value) >= LARGE:
        pieces.append(_head(2, len(value)))
        pieces.append(value)
    else:
        pieces.append(cbor2.dumps(value))


def _head(major: int, length: int) -> bytes:
    """A CBOR item head (RFC 8949, section 3): major type and length, in the shortest form."""
    if length < 24:
        return bytes([major << 5 | length])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if length < 1 << (8 * size):
            return bytes([major << 5 | info]) + length.to_bytes(size, "big")
    raise ValueError("length too large for CBOR")
