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


def _check_fields(fields: object, what: str) -> str | None:
    if not isinstance(fields, tuple):
        return f"{what} must be a tuple of (name, value) pairs"
    if len(fields) > MAX_FIELD_LINES:
        return f"{what} hold more than {MAX_FIELD_LINES} field lines"
    for line in fields:
        if not (isinstance(line, tuple) and len(line) == 2 and all(isinstance(p, str) for p in line)):
            return f"{what} must be a tuple of (name, value) string pairs"
        name, value = line
        if not _NAME.fullmatch(name):
            return f"{what}: a field name must be a non-empty lowercase token"
        if _VALUE_FORBIDDEN.search(value) or value[:1] in (" ", "\t") or value[-1:] in (" ", "\t"):
            return f"{what}: the value of {name!r} holds NUL, CR or LF or starts or ends with whitespace"
        if any(ord(char) > 0xFF for char in value):
            return f"{what}: the value of {name!r} holds a character outside one byte (Latin-1)"
    return None


def _check_request(request: BhttpRequest) -> str | None:
    if not all(isinstance(v, str) for v in (request.method, request.scheme, request.authority, request.path)):
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
    if not isinstance(response.informational, tuple) or not all(
        isinstance(item, InformationalResponse) for item in response.informational
    ):
        return "informational must be a tuple of InformationalResponse"
    return _check_fields(response.headers, "headers") or _check_fields(response.trailers, "trailers")


def _first(fields: Fields, name: str) -> str | None:
    return next((value for field, value in fields if field == name.lower()), None)


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
        control = b"".join(
            _string(part.encode("ascii")) for part in (self.method, self.scheme, self.authority, self.path)
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
        method, scheme, authority, path = (reader.string().decode("ascii", "replace") for _ in range(4))
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


def _varint(value: int) -> bytes:
    """A QUIC variable-length integer (RFC 9000 §16) in its shortest form."""
    for prefix, size in ((0x00, 1), (0x40, 2), (0x80, 4), (0xC0, 8)):
        if value < 1 << (8 * size - 2):
            return (value | prefix << (8 * size - 8)).to_bytes(size, "big")
    raise UsageError("a Binary HTTP length does not fit in 62 bits")


def _string(data: bytes) -> bytes:
    return _varint(len(data)) + data


def _section(fields: Fields) -> bytes:
    lines = b"".join(
        _string(name.encode("ascii")) + _string(value.encode("latin-1")) for name, value in fields
    )
    return _string(lines)


def _sections(headers: Fields, content: bytes, trailers: Fields) -> bytes:
    # RFC 9292 §3.1: a message may end before any section length; an empty section at the end is left out.
    parts = [_section(headers), _string(content), _section(trailers)]
    while parts and parts[-1] == b"\x00":
        parts.pop()
    return b"".join(parts)


class _Reader:
    """Reads the parts of one message; every length is checked against what is left before it is used."""

    __slots__ = ("_data", "_position")

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise UsageError("a Binary HTTP message must be bytes")
        self._data = bytes(data)
        self._position = 0

    def at_end(self) -> bool:
        return self._position == len(self._data)

    def take(self, size: int) -> bytes:
        if size > len(self._data) - self._position:
            raise BadDataError("Binary HTTP message is truncated inside a field")
        start = self._position
        self._position += size
        return self._data[start : self._position]

    def varint(self) -> int:
        first = self.take(1)[0]
        size = 1 << (first >> 6)
        return int.from_bytes(bytes([first & 0x3F]) + self.take(size - 1), "big")

    def string(self) -> bytes:
        return self.take(self.varint())

    def field_line(self, name_size: int) -> tuple[str, str]:
        name = self.take(name_size).decode("ascii", "replace")
        return name, self.string().decode("latin-1")

    def section(self, indeterminate: bool) -> Fields:
        """One header or trailer section (RFC 9292 §3.6), its field lines not yet validated."""
        lines: list[tuple[str, str]] = []
        if indeterminate:
            # Field lines until a zero name length (the content terminator).
            while (name_size := self.varint()) != 0:
                lines.append(self.field_line(name_size))
                if len(lines) > MAX_FIELD_LINES:
                    raise BadDataError(f"a Binary HTTP field section holds over {MAX_FIELD_LINES} lines")
            return tuple(lines)
        inner = _Reader(self.string())
        while not inner.at_end():
            name_size = inner.varint()
            if name_size == 0:
                raise BadDataError("a Binary HTTP field name is empty")
            lines.append(inner.field_line(name_size))
            if len(lines) > MAX_FIELD_LINES:
                raise BadDataError(f"a Binary HTTP field section holds over {MAX_FIELD_LINES} lines")
        return tuple(lines)

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
