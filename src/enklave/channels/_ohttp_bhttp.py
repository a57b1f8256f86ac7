"""Binary HTTP messages (RFC 9292): the content that Oblivious HTTP encapsulates (``message/bhttp``).

Encoding always produces the known-length form (framing indicator 0 for a request, 1 for a response) and
truncates the empty sections at the end of a message, as RFC 9292 §3.1 allows, so that the RFC 9458 Appendix A
messages come out byte for byte. Decoding accepts both the known-length and the indeterminate-length forms,
informational (1xx) responses, truncation before a section (§3.1, §3.2) and zero padding (§3.8); anything else
is invalid (§4).

Field names and values are checked by the rules of HTTP/2 (RFC 9113 §8.2.1), as RFC 9292 §3.6 requires: names
are non-empty lowercase tokens, values hold no NUL, CR or LF and neither start nor end with a space or tab.
Values are kept as ``str`` with one character per byte (Latin-1), so every byte an HTTP value may hold round
trips. Control data follows RFC 9113 §8.3.1 loosely: the method is a token, the scheme a URI scheme, authority and
path visible ASCII, and the path of an ``http``/``https`` request is not empty.

Errors: :class:`~enklave.errors.BadDataError` for every invalid or oversized message from a peer;
:class:`~enklave.errors.UsageError` when a message built locally holds an invalid value.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Final

from enklave.errors import BadDataError, UsageError

__all__ = [
    "BHTTP_MEDIA_TYPE",
    "MAX_FIELD_LINES",
    "BhttpRequest",
    "BhttpResponse",
    "Fields",
    "InformationalResponse",
]

BHTTP_MEDIA_TYPE: Final = "message/bhttp"
#: Most field lines one header or trailer section may hold; a peer cannot make the decoder build more.
MAX_FIELD_LINES: Final = 1024

Fields = tuple[tuple[str, str], ...]
"""Field lines in order, as ``(name, value)`` pairs; a name may repeat (RFC 9110 §5.2)."""

# Framing indicators (RFC 9292 §3.3).
_KNOWN_REQUEST, _KNOWN_RESPONSE, _INDETERMINATE_REQUEST, _INDETERMINATE_RESPONSE = 0, 1, 2, 3
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_VISIBLE = re.compile(r"[\x21-\x7e]*")
_VALUE_FORBIDDEN = re.compile(r"[\x00\r\n]")
# A valid field value in one pass: no NUL, CR, LF or character above one byte anywhere, and no space or tab at
# either end. A value that fails it goes through the slower checks only to say what is wrong with it.
_VALUE = re.compile(
    r"(?:[^\x00\r\n\t \u0100-\U0010ffff]"
    r"(?:[^\x00\r\n\u0100-\U0010ffff]*[^\x00\r\n\t \u0100-\U0010ffff])?)?"
)
_NOT_LATIN1 = re.compile(r"[^\x00-\xff]")


def _value_problem(what: str, name: str, value: str) -> str:
    if _VALUE_FORBIDDEN.search(value) or value[:1] in (" ", "\t") or value[-1:] in (" ", "\t"):
        return f"{what}: the value of {name!r} holds NUL, CR or LF or starts or ends with whitespace"
    if _NOT_LATIN1.search(value):
        return f"{what}: the value of {name!r} holds a character outside one byte (Latin-1)"
    # Unreachable while _VALUE and the checks above agree; kept so a divergence fails closed.
    return f"{what}: the value of {name!r} is not a valid field value"


def _check_fields(fields: object, what: str) -> str | None:
    if not isinstance(fields, tuple):
        return f"{what} must be a tuple of (name, value) pairs"
    if len(fields) > MAX_FIELD_LINES:
        return f"{what} hold more than {MAX_FIELD_LINES} field lines"
    name_ok = _NAME.fullmatch
    value_ok = _VALUE.fullmatch
    for line in fields:
        if not (
            isinstance(line, tuple)
            and len(line) == 2
            and isinstance(line[0], str)
            and isinstance(line[1], str)
        ):
            return f"{what} must be a tuple of (name, value) string pairs"
        name, value = line
        if name_ok(name) is None:
            return f"{what}: a field name must be a non-empty lowercase token"
        if value_ok(value) is None:
            return _value_problem(what, name, value)
    return None


def _check_request(request: BhttpRequest) -> str | None:
    if not (
        isinstance(request.method, str)
        and isinstance(request.scheme, str)
        and isinstance(request.authority, str)
        and isinstance(request.path, str)
    ):
        return "method, scheme, authority and path must be strings"
    if not _TOKEN.fullmatch(request.method):
        return "the method must be a non-empty token"
    if request.scheme and not _SCHEME.fullmatch(request.scheme):
        return "the scheme is not a URI scheme"
    if not (_VISIBLE.fullmatch(request.authority) and _VISIBLE.fullmatch(request.path)):
        return "authority and path must be visible ASCII"
    if request.scheme.lower() in ("http", "https") and not request.path:
        return "an http or https request needs a path"
    if not isinstance(request.content, bytes):
        return "content must be bytes"
    return _check_fields(request.headers, "headers") or _check_fields(request.trailers, "trailers")


def _check_response(response: BhttpResponse) -> str | None:
    if type(response.status) is not int or not 200 <= response.status <= 599:
        return "a final status must be an integer from 200 to 599"
    if not isinstance(response.content, bytes):
        return "content must be bytes"
    if not isinstance(response.informational, tuple) or (
        response.informational
        and not all(isinstance(item, InformationalResponse) for item in response.informational)
    ):
        return "informational must be a tuple of InformationalResponse"
    return _check_fields(response.headers, "headers") or _check_fields(response.trailers, "trailers")


def _first(fields: Fields, name: str) -> str | None:
    wanted = name.lower()
    for field, value in fields:
        if field == wanted:
            return value
    return None


@dataclass(frozen=True, slots=True)
class BhttpRequest:
    """An HTTP request as Binary HTTP carries it: control data (RFC 9292 §3.4), headers, content, trailers.

    Construction raises :class:`UsageError` for a value that would make the message invalid;
    :meth:`from_bytes` raises :class:`BadDataError` for an invalid message.
    """

    method: str
    scheme: str = "https"
    authority: str = ""
    path: str = "/"
    headers: Fields = ()
    content: bytes = b""
    trailers: Fields = ()

    def __post_init__(self) -> None:
        problem = _check_request(self)
        if problem is not None:
            raise UsageError(f"invalid Binary HTTP request: {problem}")

    def header(self, name: str) -> str | None:
        """The value of the first header field called ``name`` (case-insensitive), or None."""
        return _first(self.headers, name)

    def to_bytes(self) -> bytes:
        """The known-length encoding (RFC 9292 §3.1), with empty trailing sections truncated."""
        control = (
            _string(self.method.encode("ascii"))
            + _string(self.scheme.encode("ascii"))
            + _string(self.authority.encode("ascii"))
            + _string(self.path.encode("ascii"))
        )
        return _varint(_KNOWN_REQUEST) + control + _sections(self.headers, self.content, self.trailers)

    @classmethod
    def from_bytes(cls, data: bytes) -> BhttpRequest:
        """Decode a known- or indeterminate-length request; raises :class:`BadDataError` when it is invalid."""
        reader = _Reader(data)
        framing = reader.varint()
        if framing not in (_KNOWN_REQUEST, _INDETERMINATE_REQUEST):
            raise BadDataError(f"Binary HTTP framing indicator {framing} is not a request")
        indeterminate = framing == _INDETERMINATE_REQUEST
        method = reader.string().decode("ascii", "replace")
        scheme = reader.string().decode("ascii", "replace")
        authority = reader.string().decode("ascii", "replace")
        path = reader.string().decode("ascii", "replace")
        headers, content, trailers = reader.rest(indeterminate)
        try:
            return cls(method, scheme, authority, path, headers, content, trailers)
        except UsageError as exc:
            raise BadDataError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class InformationalResponse:
    """An interim (1xx) response that precedes the final one (RFC 9292 §3.5.1)."""

    status: int
    headers: Fields = ()

    def __post_init__(self) -> None:
        if type(self.status) is not int or not 100 <= self.status <= 199:
            raise UsageError("an informational status must be an integer from 100 to 199")
        problem = _check_fields(self.headers, "headers")
        if problem is not None:
            raise UsageError(f"invalid informational response: {problem}")


@dataclass(frozen=True, slots=True)
class BhttpResponse:
    """An HTTP response as Binary HTTP carries it: interim responses, status, headers, content, trailers.

    Construction raises :class:`UsageError` for a value that would make the message invalid;
    :meth:`from_bytes` raises :class:`BadDataError` for an invalid message.
    """

    status: int = 200
    headers: Fields = ()
    content: bytes = b""
    trailers: Fields = ()
    informational: tuple[InformationalResponse, ...] = ()

    def __post_init__(self) -> None:
        problem = _check_response(self)
        if problem is not None:
            raise UsageError(f"invalid Binary HTTP response: {problem}")

    def header(self, name: str) -> str | None:
        """The value of the first header field called ``name`` (case-insensitive), or None."""
        return _first(self.headers, name)

    def to_bytes(self) -> bytes:
        """The known-length encoding (RFC 9292 §3.1), with empty trailing sections truncated."""
        interim = b"".join(_varint(item.status) + _section(item.headers) for item in self.informational)
        body = _sections(self.headers, self.content, self.trailers)
        return _varint(_KNOWN_RESPONSE) + interim + _varint(self.status) + body

    @classmethod
    def from_bytes(cls, data: bytes) -> BhttpResponse:
        """Decode a known- or indeterminate-length response; raises :class:`BadDataError` when it is invalid."""
        reader = _Reader(data)
        framing = reader.varint()
        if framing not in (_KNOWN_RESPONSE, _INDETERMINATE_RESPONSE):
            raise BadDataError(f"Binary HTTP framing indicator {framing} is not a response")
        indeterminate = framing == _INDETERMINATE_RESPONSE
        informational: list[InformationalResponse] = []
        while True:
            status = reader.varint()
            if not 100 <= status <= 599:
                raise BadDataError(f"Binary HTTP status {status} is outside 100..599")
            if status >= 200:
                break
            # An interim response's header section cannot be truncated: the final control data follows it.
            try:
                informational.append(InformationalResponse(status, reader.section(indeterminate)))
            except UsageError as exc:
                raise BadDataError(f"invalid Binary HTTP informational response: {exc}") from exc
            if len(informational) > MAX_FIELD_LINES:
                raise BadDataError("too many Binary HTTP informational responses")
        headers, content, trailers = reader.rest(indeterminate)
        try:
            return cls(status, headers, content, trailers, tuple(informational))
        except UsageError as exc:
            raise BadDataError(str(exc)) from exc


# QUIC variable-length integers (RFC 9000 §16): the two high bits of the first byte give the size (1, 2, 4 or 8
# bytes), the other bits are the value. Indexed by those two bits: the struct that reads the whole integer and
# the mask that removes the size bits. The one-byte form (0) needs neither: it is the byte itself.
_VARINT_READERS: Final = {1: struct.Struct(">H"), 2: struct.Struct(">I"), 3: struct.Struct(">Q")}
_VARINT_MASKS: Final = (0x3F, 0x3FFF, 0x3FFF_FFFF, 0x3FFF_FFFF_FFFF_FFFF)
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_TRUNCATED: Final = "Binary HTTP message is truncated inside a field"


def _varint(value: int) -> bytes:
    """A QUIC variable-length integer (RFC 9000 §16) in its shortest form."""
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return _U16.pack(value | 0x4000)
    if value < 0x4000_0000:
        return _U32.pack(value | 0x8000_0000)
    if value < 0x4000_0000_0000_0000:
        return _U64.pack(value | 0xC000_0000_0000_0000)
    raise UsageError("a Binary HTTP length does not fit in 62 bits")


def _string(data: bytes) -> bytes:
    return _varint(len(data)) + data


def _section(fields: Fields) -> bytes:
    lines = b"".join(
        [_string(name.encode("ascii")) + _string(value.encode("latin-1")) for name, value in fields]
    )
    return _varint(len(lines)) + lines


def _sections(headers: Fields, content: bytes, trailers: Fields) -> bytes:
    # RFC 9292 §3.1: a message may end before any section length; an empty section at the end is left out.
    parts = [_section(headers), _string(content), _section(trailers)]
    while parts and parts[-1] == b"\x00":
        parts.pop()
    return b"".join(parts)


class _Reader:
    """Reads the parts of one message; every length is checked against what is left before it is used.

    ``_end`` bounds every read: the end of the message, or of the known-length section being read, so that a
    field line can never run past its section.
    """

    __slots__ = ("_data", "_end", "_position")

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise UsageError("a Binary HTTP message must be bytes")
        self._data = bytes(data)
        self._position = 0
        self._end = len(self._data)

    def at_end(self) -> bool:
        return self._position == self._end

    def varint(self) -> int:
        position = self._position
        if position >= self._end:
            raise BadDataError(_TRUNCATED)
        first = self._data[position]
        kind = first >> 6
        if kind == 0:
            self._position = position + 1
            return first
        end = position + (1 << kind)
        if end > self._end:
            raise BadDataError(_TRUNCATED)
        self._position = end
        value: int = _VARINT_READERS[kind].unpack_from(self._data, position)[0]
        return value & _VARINT_MASKS[kind]

    def take(self, size: int) -> bytes:
        start = self._position
        end = start + size
        if end > self._end:
            raise BadDataError(_TRUNCATED)
        self._position = end
        return self._data[start:end]

    def string(self) -> bytes:
        position = self._position
        # Most lengths are under 64 and fit in one byte: read those without the general varint path.
        if position < self._end and self._data[position] < 0x40:
            size = self._data[position]
            self._position = position + 1
        else:
            size = self.varint()
        return self.take(size)

    def _field_lines(self, indeterminate: bool) -> Fields:
        lines: list[tuple[str, str]] = []
        data = self._data
        while True:
            if not indeterminate and self._position == self._end:
                return tuple(lines)
            name_size = self.varint()
            if name_size == 0:
                if indeterminate:
                    # A zero name length is the content terminator of an indeterminate-length section.
                    return tuple(lines)
                raise BadDataError("a Binary HTTP field name is empty")
            start = self._position
            end = start + name_size
            if end > self._end:
                raise BadDataError(_TRUNCATED)
            self._position = end
            name = data[start:end].decode("ascii", "replace")
            lines.append((name, self.string().decode("latin-1")))
            if len(lines) > MAX_FIELD_LINES:
                raise BadDataError(f"a Binary HTTP field section holds over {MAX_FIELD_LINES} lines")

    def section(self, indeterminate: bool) -> Fields:
        """One header or trailer section (RFC 9292 §3.6), its field lines not yet validated."""
        if indeterminate:
            return self._field_lines(True)
        size = self.varint()
        section_end = self._position + size
        if section_end > self._end:
            raise BadDataError(_TRUNCATED)
        # Field lines are read with the section's end as the limit, then reading resumes after the section.
        outer_end = self._end
        self._end = section_end
        try:
            lines = self._field_lines(False)
        finally:
            self._end = outer_end
        return lines

    def content(self, indeterminate: bool) -> bytes:
        if not indeterminate:
            return self.string()
        chunks = []
        while (size := self.varint()) != 0:
            chunks.append(self.take(size))
        return b"".join(chunks)

    def rest(self, indeterminate: bool) -> tuple[Fields, bytes, Fields]:
        """Headers, content and trailers, each empty when the message was truncated before it; then padding."""
        headers: Fields = ()
        content = b""
        trailers: Fields = ()
        if not self.at_end():
            headers = self.section(indeterminate)
        if not self.at_end():
            content = self.content(indeterminate)
        if not self.at_end():
            trailers = self.section(indeterminate)
        # RFC 9292 §3.8: padding is zero bytes; any other byte makes the message invalid.
        if self._data.count(0, self._position) != len(self._data) - self._position:
            raise BadDataError("Binary HTTP padding holds a non-zero byte")
        return headers, content, trailers
