"""JSON decoding for enklave: every document it reads goes through :func:`loads` or :func:`strict_loads`.

Both raise ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``) for every malformed document,
including one nested too deeply for the decoder, which by itself raises ``RecursionError``: a request body, a
token header or a file of a few kilobytes of ``[`` would otherwise escape every handler of bad input.

Strict JSON is for signed and security-relevant documents: no duplicated keys, no NaN or Infinity. Two parsers
that resolve a duplicated key differently (first wins, last wins) could read different values from the same
signed text, and NaN/Infinity are not JSON. Every enklave parser of such documents (collateral, JWKS and tokens,
key release policies) decodes through :func:`strict_loads` (:data:`STRICT_DECODER`), which raises ``ValueError``
for both.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

__all__ = ["STRICT_DECODER", "loads", "strict_loads"]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # repr() escapes control characters, so a hostile key cannot break the one-line message.
            raise ValueError(f"duplicate key {key[:64]!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"non-standard JSON constant {name} (not a JSON number)")


STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def loads(data: str | bytes | bytearray, **options: Any) -> Any:
    """``json.loads`` that raises ValueError for every malformed document, too deep nesting included."""
    try:
        return json.loads(data, **options)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def strict_loads(text: str) -> Any:
    """Decode one JSON document strictly; raises ValueError (json.JSONDecodeError included) when malformed."""
    try:
        return STRICT_DECODER.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
