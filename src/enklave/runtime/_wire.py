"""The framing of the host/enclave channel: length-prefixed CBOR messages over a connected stream socket.

Each channel stands for one SGX thread control structure (TCS): it carries one ecall at a time, and the ocalls
that ecall makes travel back over the same channel, so a call never has to be matched to a reply by id. A frame
is a 4-byte big-endian length followed by that many bytes of CBOR holding a list whose first element is a
:class:`Kind`:

=================  ==========================================  ==================
kind               rest of the list                            direction
=================  ==========================================  ==================
CALL               name, arguments (list)                      host -> enclave
RETURN             result                                      enclave -> host
ERROR              class, type name, message                   enclave -> host
OCALL              name, arguments (list)                      enclave -> host
OCALL_RETURN       result                                      host -> enclave
OCALL_ERROR        type name, message                          host -> enclave
HELLO              interface description (map)                 enclave -> host, once, first channel
FATAL              error type name, message                    enclave -> host, instead of HELLO
=================  ==========================================  ==================

The length is checked against the channel's limit before a byte of the payload is read, and a payload that does
not decode is a :class:`~enklave.errors.BoundaryError`. CBOR carries no code: unlike pickle, decoding can only
build plain data (bytes, strings, numbers, lists, maps, and inert tag objects that the type checks refuse).
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
from typing import Any

import cbor2

from enklave.errors import BoundaryError, EnclaveCrashedError

__all__ = ["HEADER_SIZE", "Channel", "ChannelClosed", "Kind"]

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size
# Frames up to this size are read with buffered recv calls; larger ones straight into their own buffer.
_CHUNK = 256 * 1024


class Kind(enum.IntEnum):
    """The first element of every message."""

    CALL = 0
    RETURN = 1
    ERROR = 2
    OCALL = 3
    OCALL_RETURN = 4
    OCALL_ERROR = 5
    HELLO = 6
    FATAL = 7


class ChannelClosed(EnclaveCrashedError):
    """The peer closed the channel (or died): no more frames will come."""


class Channel:
    """One connected socket with frame-level send and receive. Not thread-safe: one user at a time (one TCS)."""

    __slots__ = ("_buffer", "_end", "_large", "_max_frame", "_sock", "_start", "_view")

    def __init__(self, sock: socket.socket, max_frame: int) -> None:
        self._sock = sock
        self._max_frame = max_frame
        # Received bytes not yet consumed are _buffer[_start:_end]; recv_into fills the fixed buffer, so small
        # frames cost no allocation beyond the payload itself.
        self._buffer = bytearray(_CHUNK)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0
        # A large frame being received: its buffer and how much of it has arrived (kept across timeouts).
        self._large: tuple[bytearray, int] | None = None

    @property
    def sock(self) -> socket.socket:
        """The underlying socket (for timeouts and closing)."""
        return self._sock

    def send(self, message: list[Any]) -> None:
        """Encode and send one message; raises ChannelClosed when the peer is gone, BoundaryError when too big."""
        try:
            pieces = _encode(message)
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            raise BoundaryError(f"cannot encode a {Kind(message[0]).name} message: {exc}") from exc
        size = sum(len(piece) for piece in pieces)
        if size > self._max_frame:
            raise BoundaryError(
                f"a {Kind(message[0]).name} message of {size} bytes exceeds the channel limit of"
                f" {self._max_frame} bytes (max_message_size)"
            )
        header = _HEADER.pack(size)
        try:
            if len(pieces) == 1:
                # One copy and one system call beat scatter-gather for small frames.
                self._sock.sendall(header + pieces[0])
                return
            sent = self._sock.sendmsg([header, *pieces])
            if sent < len(header) + size:
                self._sock.sendall(memoryview(b"".join([header, *pieces]))[sent:])
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ChannelClosed("the peer closed the channel") from exc

    def receive(self) -> list[Any]:
        """Receive one message: a list whose first element is a known :class:`Kind`.

        Raises ChannelClosed at end of stream, TimeoutError when the socket's timeout expires (the partial frame
        is kept, so the next call goes on where this one stopped), and BoundaryError for an oversized or
        malformed frame (after which the channel must be closed: the stream can no longer be trusted).
        """
        if self._large is None:
            # Peek at the header, and consume it only once the whole frame is here: a timeout loses nothing.
            self._fill(HEADER_SIZE)
            (length,) = _HEADER.unpack_from(self._buffer, self._start)
            if length > self._max_frame:
                # Skip the payload without keeping it, so that the stream stays in step and the channel usable.
                self._start += HEADER_SIZE
                self._discard(length)
                raise BoundaryError(
                    f"frame of {length} bytes exceeds the channel limit of {self._max_frame} bytes"
                )
            if HEADER_SIZE + length <= _CHUNK:
                self._fill(HEADER_SIZE + length)
                begin = self._start + HEADER_SIZE
                payload: bytes | bytearray = bytes(self._view[begin : begin + length])
                self._start = begin + length
            else:
                self._start += HEADER_SIZE
                have = min(self._end - self._start, length)
                out = bytearray(length)
                out[:have] = self._view[self._start : self._start + have]
                self._start += have
                self._large = (out, have)
        if self._large is not None:
            payload = self._read_large()
        try:
            message = _decode(payload)
        except Exception as exc:  # cbor2 raises several types (and RecursionError for deep nesting).
            raise BoundaryError("malformed frame: the payload is not valid CBOR") from exc
        if (
            type(message) is not list
            or not message
            or type(message[0]) is not int
            or message[0] not in _KINDS
        ):
            raise BoundaryError("malformed frame: not a list starting with a known message kind")
        return message

    def close(self) -> None:
        """Shut the socket down in both directions and close it (idempotent)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def _fill(self, size: int) -> None:
        """Make at least ``size`` (<= _CHUNK) unconsumed bytes available in the buffer."""
        if self._start + size > _CHUNK:
            pending = self._end - self._start
            self._buffer[:pending] = self._view[self._start : self._end]
            self._start, self._end = 0, pending
        while self._end - self._start < size:
            self._end += self._recv_into(self._view[self._end :])

    def _discard(self, size: int) -> None:
        while size > 0:
            if self._end == self._start:
                self._start = self._end = 0
                self._end = self._recv_into(self._view)
            taken = min(size, self._end - self._start)
            self._start += taken
            size -= taken

    def _read_large(self) -> bytearray:
        if self._large is None:  # pragma: no cover - only called with a frame in progress
            raise BoundaryError("no large frame in progress")
        out, have = self._large
        with memoryview(out) as view:
            while have < len(out):
                try:
                    have += self._recv_into(view[have:])
                finally:
                    self._large = (out, have)
        self._large = None
        return out

    def _recv_into(self, view: memoryview) -> int:
        try:
            got = self._sock.recv_into(view)
        except ConnectionResetError as exc:
            raise ChannelClosed("the peer reset the channel") from exc
        if not got:
            raise ChannelClosed("the peer closed the channel")
        return got


_KINDS = frozenset(int(k) for k in Kind)
# Byte strings at least this long are sent as they are (scatter-gather) instead of copied by the encoder.
_LARGE = 64 * 1024


def _encode(message: list[Any]) -> list[bytes]:
    """The CBOR encoding of ``message`` as pieces whose concatenation is the encoding.

    CBOR items concatenate: an array is its header followed by its items. Large byte strings in the message or
    in its argument list are emitted as a header plus the original object, so a 1 MiB argument is never copied
    by the encoder (cbor2 grows its output buffer step by step, which costs more than the socket does).
    """
    if not any(
        (type(v) is bytes and len(v) >= _LARGE) or (type(v) is list and _has_large(v)) for v in message
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
    return any(type(v) is bytes and len(v) >= _LARGE for v in values)


def _piece(value: Any, pieces: list[bytes]) -> None:
    if type(value) is bytes and len(value) >= _LARGE:
        pieces.append(_head(2, len(value)))
        pieces.append(value)
    else:
        pieces.append(cbor2.dumps(value))


def _decode(payload: bytes | bytearray) -> Any:
    """Decode one CBOR message.

    Small frames go to cbor2. Large frames are decoded here when they hold only integers, strings, byte strings,
    booleans, null and (two levels of) arrays, which is what an ecall with large arguments looks like: cbor2
    reads long byte strings in small chunks (its defence against lying lengths, which the frame limit already
    provides) and is then slower than the socket. Anything else in a large frame also goes to cbor2.
    Trailing bytes are malformed.
    """
    if len(payload) < _LARGE:
        return cbor2.loads(payload)
    view = memoryview(payload)
    try:
        message, end = _simple(view, 0, 0)
    except _NotSimple:
        return cbor2.loads(bytes(payload))
    finally:
        view.release()
    if end != len(payload):
        raise ValueError("trailing bytes after the message")
    return message


class _NotSimple(Exception):
    """The item needs the full decoder."""


_SIMPLE_VALUES = {20: False, 21: True, 22: None}


def _simple(view: memoryview, position: int, depth: int) -> tuple[Any, int]:
    """Decode the item at ``position`` (RFC 8949, section 3); returns it and the position after it."""
    if position >= len(view):
        raise ValueError("truncated message")
    initial = view[position]
    major, info = initial >> 5, initial & 0x1F
    if info >= 28 or major in (5, 6) or (major == 7 and info not in _SIMPLE_VALUES):
        raise _NotSimple
    if major == 7:
        return _SIMPLE_VALUES[info], position + 1
    size = 0 if info < 24 else 1 << (info - 24)
    start = position + 1 + size
    if start > len(view):
        raise ValueError("truncated message")
    length = info if info < 24 else int.from_bytes(view[position + 1 : start], "big")
    if major == 0:
        return length, start
    if major == 1:
        return -1 - length, start
    # Every item takes at least one byte, so no length may exceed what is left of the frame.
    if length > len(view) - start:
        raise ValueError("truncated message")
    if major == 2:
        return bytes(view[start : start + length]), start + length
    if major == 3:
        return str(view[start : start + length], "utf-8"), start + length
    if depth >= 2:
        raise _NotSimple
    items = []
    for _ in range(length):
        item, start = _simple(view, start, depth + 1)
        items.append(item)
    return items, start


def _head(major: int, length: int) -> bytes:
    """A CBOR item head (RFC 8949, section 3): major type and length, in the shortest form."""
    if length < 24:
        return bytes([major << 5 | length])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if length < 1 << (8 * size):
            return bytes([major << 5 | info]) + length.to_bytes(size, "big")
    raise ValueError("length too large for CBOR")
