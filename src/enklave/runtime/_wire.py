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
not decode is a :class:`~enklave.errors.BoundaryError`. The payload is the strict CBOR subset of
:mod:`enklave.runtime._cbor`: plain data only (no tags, no references), so unlike pickle, decoding can neither run
code nor build more than the sender sent.
"""

from __future__ import annotations

import array
import contextlib
import enum
import fcntl
import socket
import struct
import termios
from typing import Any

import cbor2

from enklave.errors import BoundaryError, EnclaveCrashedError
from enklave.runtime._cbor import SocketReader, decode, encode_pieces, parse

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

    __slots__ = ("_buffer", "_end", "_large", "_max_frame", "_skipping", "_sock", "_spare", "_start", "_view")

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
        self._large: tuple[bytearray, int, int] | None = None
        # The buffer of the last large frame, reused for the next one up to _SPARE_LIMIT bytes: fresh megabyte
        # buffers cost page faults on every frame.
        self._spare: bytearray | None = None
        self._skipping = 0

    @property
    def sock(self) -> socket.socket:
        """The underlying socket (for timeouts and closing)."""
        return self._sock

    def send(self, message: list[Any]) -> None:
        """Encode and send one message; raises ChannelClosed when the peer is gone, BoundaryError when too big."""
        try:
            pieces = encode_pieces(message)
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
        except TimeoutError:
            raise
        except OSError as exc:  # Broken pipe, reset, or closed under us by close() on another thread.
            raise ChannelClosed("the channel is closed") from exc

    def frame_ready(self, limit: int) -> bool | None:
        """Whether :meth:`receive` can return the next message now without waiting (for an event loop).

        True when a whole frame of at most ``limit`` bytes has arrived; False when no byte of it has; None when
        the answer needs a blocking :meth:`receive`: part of the frame has arrived (the rest is on its way, and
        waiting for readability again would find the same bytes), the frame is larger than ``limit`` (the socket
        may never hold all of it at once), bytes are buffered here already, or the peer closed the channel.
        Consumes nothing.
        """
        if self._large is not None or self._skipping or self._start != self._end:
            return None
        try:
            header = self._sock.recv(HEADER_SIZE, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return None
        if len(header) < HEADER_SIZE:
            return None
        length: int = _HEADER.unpack(header)[0]
        if HEADER_SIZE + length > limit:
            return None
        waiting = array.array("i", [0])
        try:
            fcntl.ioctl(self._sock.fileno(), termios.FIONREAD, waiting)
        except OSError:
            return None
        return True if waiting[0] >= HEADER_SIZE + length else None

    def receive(self) -> list[Any]:
        """Receive one message: a list whose first element is a known :class:`Kind`.

        Raises ChannelClosed at end of stream, TimeoutError when the socket's timeout expires (the partial frame
        is kept, so the next call goes on where this one stopped), and BoundaryError for an oversized or
        malformed frame (after which the channel must be closed: the stream can no longer be trusted).
        """
        if self._skipping:
            # A timeout interrupted skipping an oversized frame: finish that first.
            self._discard(self._skipping)
        if self._large is None and self._start == self._end and self._sock.gettimeout() is None:
            # Nothing buffered: peek at the header only, so that a large frame's bytes stay in the socket and are
            # received straight into the byte strings the caller gets (see _cbor.SocketReader).
            self._start = self._end = 0
            peeked = self._recv_into(self._view[:HEADER_SIZE], socket.MSG_PEEK)
            if peeked == HEADER_SIZE:
                (length,) = _HEADER.unpack_from(self._buffer, 0)
                if _CHUNK < HEADER_SIZE + length <= self._max_frame + HEADER_SIZE:
                    self._recv_exact_into(self._view[:HEADER_SIZE])
                    return _checked(self._stream(length))
            # A small frame (or an oversized one): the buffered path below reads it, header included.
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
                payload: bytes | memoryview = bytes(self._view[begin : begin + length])
                self._start = begin + length
            else:
                self._start += HEADER_SIZE
                have = min(self._end - self._start, length)
                spare = self._spare
                out = spare if spare is not None and len(spare) >= length else bytearray(length)
                self._spare = None
                out[:have] = self._view[self._start : self._start + have]
                self._start += have
                self._large = (out, have, length)
        if self._large is not None:
            out, length = self._read_large()
            try:
                with memoryview(out) as whole, whole[:length] as frame:
                    message = decode(frame)
            except ValueError as exc:
                raise BoundaryError(f"malformed frame: {exc}") from exc
            finally:
                if length <= _SPARE_LIMIT:
                    self._spare = out
        else:
            try:
                message = decode(payload)
            except ValueError as exc:
                raise BoundaryError(f"malformed frame: {exc}") from exc
        return _checked(message)

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
        # The count left to skip is channel state, so that a timeout in the middle loses no place in the stream.
        self._skipping = size
        while self._skipping > 0:
            if self._end == self._start:
                self._start = self._end = 0
                self._end = self._recv_into(self._view)
            taken = min(self._skipping, self._end - self._start)
            self._start += taken
            self._skipping -= taken

    def _read_large(self) -> tuple[bytearray, int]:
        if self._large is None:  # pragma: no cover - only called with a frame in progress
            raise BoundaryError("no large frame in progress")
        out, have, length = self._large
        with memoryview(out) as view:
            while have < length:
                try:
                    have += self._recv_into(view[have:length])
                finally:
                    self._large = (out, have, length)
        self._large = None
        return out, length

    def _stream(self, length: int) -> Any:
        reader = SocketReader(self._sock, length)
        try:
            message = parse(reader)
            if reader.remaining():
                raise ValueError("trailing bytes after the message")
            reader.finish()
        except ValueError as exc:
            # Keep the stream in step: the rest of the malformed frame is read and dropped.
            try:
                reader.skip_rest()
            except OSError as closed:
                raise ChannelClosed("the peer closed the channel") from closed
            raise BoundaryError(f"malformed frame: {exc}") from exc
        except OSError as exc:
            raise ChannelClosed("the peer closed the channel") from exc
        return message

    def _recv_exact_into(self, view: memoryview) -> None:
        have = 0
        while have < len(view):
            have += self._recv_into(view[have:])

    def _recv_into(self, view: memoryview, flags: int = 0) -> int:
        try:
            got = self._sock.recv_into(view, 0, flags)
        except TimeoutError:
            raise
        except OSError as exc:  # Reset by the peer, or closed under us by close() on another thread.
            raise ChannelClosed("the channel is closed") from exc
        if not got:
            raise ChannelClosed("the peer closed the channel")
        return got


_KINDS = frozenset(int(k) for k in Kind)


def _checked(message: Any) -> list[Any]:
    if type(message) is not list or not message or type(message[0]) is not int or message[0] not in _KINDS:
        raise BoundaryError("malformed frame: not a list starting with a known message kind")
    return message


_SPARE_LIMIT = 4 * 1024 * 1024
