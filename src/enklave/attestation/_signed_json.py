"""Strict JSON reading for Intel's signed collateral documents (private helpers of :mod:`.collateral`).

Intel signs the exact text of the inner object of ``{"tcbInfo": {...}, "signature": "<hex>"}`` (and of
``{"enclaveIdentity": ...}``), so the text of that object must be cut out of the document unchanged: it is
never re-serialized. Every failure here raises :class:`~enklave.errors.InvalidCollateral`, chained to its
cause.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import NoReturn

from enklave._json import STRICT_DECODER
from enklave.errors import InvalidCollateral

# JSON allows exactly these four whitespace characters between tokens (RFC 8259, section 2).
_JSON_WHITESPACE = " \t\n\r"
_HEX = re.compile(r"[0-9A-Fa-f]*")
# Intel writes UTC times as "2025-06-19T10:56:11Z"; fractional seconds are tolerated, offsets are not.
_UTC_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?Z"
)
_MAX_STRING_FIELD = 256


_DECODER = STRICT_DECODER


def _fail(message: str, exc: BaseException | None = None) -> NoReturn:
    raise InvalidCollateral(message) from exc


def decode_text(data: bytes | str, *, what: str, max_size: int) -> str:
    """Return ``data`` as text after checking its size (in bytes) and that it is UTF-8."""
    if isinstance(data, str):
        # Every character takes at least one byte, so an overlong string is refused before it is encoded.
        if len(data) > max_size:
            _fail(f"{what} is {len(data)} characters, more than the limit of {max_size} bytes")
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            _fail(f"{what} is not valid Unicode text", exc)
    if len(data) > max_size:
        _fail(f"{what} is {len(data)} bytes, more than the limit of {max_size}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(f"{what} is not UTF-8 text", exc)


def _decode_value(text: str, pos: int, what: str) -> tuple[object, int]:
    try:
        return _DECODER.raw_decode(text, pos)
    except (ValueError, RecursionError) as exc:
        _fail(f"{what} is not valid JSON: {exc}", exc)


def _skip_whitespace(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _JSON_WHITESPACE:
        pos += 1
    return pos


def load_object(text: str, *, what: str) -> dict[str, object]:
    """Parse ``text`` as exactly one JSON object (surrounding whitespace allowed, nothing else)."""
    start = _skip_whitespace(text, 0)
    value, end = _decode_value(text, start, what)
    if _skip_whitespace(text, end) != len(text):
        _fail(f"{what} has trailing data after the JSON value")
    if not isinstance(value, dict):
        _fail(f"{what} is not a JSON object")
    return value


def load_exact_object(text: str, *, what: str) -> dict[str, object]:
    """Parse ``text`` as one JSON object that spans the whole text, with no whitespace around it.

    Signed bodies are exactly the object's text, so anything around the object means the text is not a body.
    """
    value, end = _decode_value(text, 0, what)
    if end != len(text):
        _fail(f"{what} has data after the JSON object")
    if not isinstance(value, dict):
        _fail(f"{what} is not a JSON object")
    return value


def split_signed(text: str, body_key: str, *, what: str) -> tuple[str, dict[str, object], str]:
    """Cut ``{"<body_key>": {...}, "signature": "<hex>"}`` into (exact body text, parsed body, signature).

    The top-level object is walked token by token, so the body text is the very slice the signer saw.
    """
    pos = _skip_whitespace(text, 0)
    if not text.startswith("{", pos):
        _fail(f"{what} is not a JSON object")
    pos = _skip_whitespace(text, pos + 1)
    members: dict[str, tuple[object, int, int]] = {}
    while True:
        if not text.startswith('"', pos):
            _fail(f"{what} is not a well-formed JSON object (expected a key at offset {pos})")
        key, pos = _decode_value(text, pos, what)
        if not isinstance(key, str) or key in members:
            _fail(f"{what} has a duplicate or malformed key")
        pos = _skip_whitespace(text, pos)
        if not text.startswith(":", pos):
            _fail(f"{what} is not a well-formed JSON object (expected ':' at offset {pos})")
        start = _skip_whitespace(text, pos + 1)
        value, end = _decode_value(text, start, what)
        members[key] = (value, start, end)
        pos = _skip_whitespace(text, end)
        if text.startswith(",", pos):
            pos = _skip_whitespace(text, pos + 1)
            continue
        if text.startswith("}", pos):
            break
        _fail(f"{what} is not a well-formed JSON object (expected ',' or '}}' at offset {pos})")
    if _skip_whitespace(text, pos + 1) != len(text):
        _fail(f"{what} has trailing data after the JSON object")
    if set(members) != {body_key, "signature"}:
        _fail(f"{what} must have exactly the keys {body_key!r} and 'signature', found {sorted(members)}")
    body, body_start, body_end = members[body_key]
    signature = members["signature"][0]
    if not isinstance(body, dict):
        _fail(f"{what}: {body_key!r} is not a JSON object")
    if not isinstance(signature, str):
        _fail(f"{what}: 'signature' is not a string")
    return text[body_start:body_end], body, signature


def parse_hex(value: str, *, where: str, size: int | None = None) -> bytes:
    """Decode strict hexadecimal (no whitespace, no prefix), optionally of exactly ``size`` bytes."""
    if not _HEX.fullmatch(value) or len(value) % 2:
        _fail(f"{where} is not a hexadecimal string")
    if size is not None and len(value) != 2 * size:
        _fail(f"{where} must be {size} bytes ({2 * size} hex digits), found {len(value)} digits")
    return bytes.fromhex(value)


def parse_utc_time(value: str, *, where: str) -> datetime:
    """Parse an ISO-8601 UTC time ending in 'Z' into a timezone-aware datetime."""
    match = _UTC_TIME.fullmatch(value)
    if match is None:
        _fail(f"{where} is not an ISO-8601 UTC time like 2025-01-31T00:00:00Z: {value[:40]!r}")
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0").ljust(6, "0")),
            tzinfo=UTC,
        )
    except ValueError as exc:
        _fail(f"{where} is not a valid date and time: {value!r}", exc)


class Fields:
    """Typed, bounded access to the members of one parsed JSON object; errors name the JSON path."""

    __slots__ = ("_obj", "_path")

    def __init__(self, obj: object, path: str) -> None:
        if not isinstance(obj, dict):
            _fail(f"{path} is not a JSON object")
        self._obj: dict[str, object] = obj
        self._path = path

    def has(self, key: str) -> bool:
        return key in self._obj

    def _get(self, key: str) -> object:
        if key not in self._obj:
            _fail(f"{self._path} has no {key!r}")
        return self._obj[key]

    def string(self, key: str, *, max_length: int = _MAX_STRING_FIELD) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            _fail(f"{self._path}.{key} is not a string")
        if len(value) > max_length:
            _fail(f"{self._path}.{key} is longer than {max_length} characters")
        return value

    def integer(self, key: str, *, maximum: int) -> int:
        value = self._get(key)
        # bool is a subclass of int in Python, but true/false is not a number in the document.
        if not isinstance(value, int) or isinstance(value, bool):
            _fail(f"{self._path}.{key} is not an integer")
        if not 0 <= value <= maximum:
            _fail(f"{self._path}.{key} = {value} is outside 0..{maximum}")
        return value

    def child(self, key: str) -> Fields:
        return Fields(self._get(key), f"{self._path}.{key}")

    def array(self, key: str, *, max_items: int, min_items: int = 0) -> list[object]:
        value = self._get(key)
        if not isinstance(value, list):
            _fail(f"{self._path}.{key} is not a list")
        if not min_items <= len(value) <= max_items:
            _fail(f"{self._path}.{key} has {len(value)} items, expected {min_items}..{max_items}")
        return value

    def hex_bytes(self, key: str, *, size: int) -> bytes:
        return parse_hex(self.string(key, max_length=2 * size), where=f"{self._path}.{key}", size=size)

    def utc_time(self, key: str) -> datetime:
        return parse_utc_time(self.string(key, max_length=40), where=f"{self._path}.{key}")
