"""Reading evidence and collateral files for the command line: bounded, with binary, hex or base64 input."""

from __future__ import annotations

import base64
import binascii
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from enklave._home import read_limited
from enklave._json import strict_loads
from enklave.errors import BadDataError, InvalidQuote, TransportError, UsageError

MAX_INPUT_SIZE = 1024 * 1024
_HEX = re.compile(rb"^(?:0x)?[0-9a-fA-F\s]+$")
_B64 = re.compile(rb"^[A-Za-z0-9+/=_\-\s]+$")


def read_file(path: str, *, what: str, limit: int = MAX_INPUT_SIZE) -> bytes:
    """Read at most ``limit`` bytes of a file (``-`` is standard input); larger files are refused."""
    if path == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        try:
            data = read_limited(Path(path), limit)
        except TransportError as exc:
            raise TransportError(f"{what}: {exc}") from exc.__cause__
    if len(data) > limit:
        raise UsageError(f"{what} {path} is larger than {limit} bytes")
    return data


def read_json_object(path: str, *, what: str, limit: int) -> dict[str, Any]:
    """The JSON object in the file at ``path`` (at most ``limit`` bytes); ``what`` names the file in errors.

    Such files hold release policies, keys and key sets, so they are decoded strictly (see :mod:`enklave._json`):
    a duplicated member could otherwise be read one way here and another way by the service it is sent to.
    """
    raw = read_file(path, what=what, limit=limit)
    try:
        document = strict_loads(raw.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise BadDataError(f"{what} {path} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadDataError(f"{what} {path} does not hold a JSON object")
    return document


def decode_evidence(data: bytes) -> bytes:
    """Evidence given as binary, hexadecimal text or base64 / base64url text, as the ecosystem passes it."""
    # Binary evidence starts with a small little-endian version number: 3 or 4 for quotes, 1 or 3 for the
    # Open Enclave headers. Text encodings start with a printable character.
    if data[:1] in (b"\x01", b"\x03", b"\x04"):
        return data
    text = data.strip()
    if text and _HEX.match(text):
        digits = re.sub(rb"\s", b"", text.removeprefix(b"0x"))
        try:
            return binascii.unhexlify(digits)
        except binascii.Error as exc:
            raise InvalidQuote(f"not valid hexadecimal: {exc}") from exc
    if text and _B64.match(text):
        compact = re.sub(rb"\s", b"", text).rstrip(b"=")
        try:
            return base64.urlsafe_b64decode(
                compact.replace(b"+", b"-").replace(b"/", b"_") + b"=" * (-len(compact) % 4)
            )
        except (binascii.Error, ValueError) as exc:
            raise InvalidQuote(f"not valid base64: {exc}") from exc
    raise InvalidQuote("evidence is neither a binary quote nor hexadecimal or base64 text")


def parse_time(value: str | None) -> datetime:
    """An ISO-8601 instant (``Z`` or an offset; a naive value is taken as UTC), or now."""
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"--at: {value!r} is not an ISO-8601 date-time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
