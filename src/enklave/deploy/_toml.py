"""A small TOML writer for Gramine manifest templates: flat dotted keys, strings, integers, booleans, arrays and
inline tables. The standard library reads TOML but does not write it, and a manifest needs nothing more.

Strings are checked for Jinja markup, because ``gramine-manifest`` renders the file as a Jinja template: a path
with ``{{`` in it would otherwise be evaluated. Only the writer's own caller may put template expressions into
the output, through :class:`Template`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from enklave.errors import ConfigError

__all__ = ["BARE_KEY", "ManifestValue", "Template", "check_plain", "render"]

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_JINJA = ("{{", "}}", "{%", "%}", "{#", "#}")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


@dataclass(frozen=True, slots=True)
class Template:
    """A string that holds a ``gramine-manifest`` template expression, written without the Jinja check."""

    text: str


ManifestValue = str | int | bool | Template | Sequence["ManifestValue"] | Mapping[str, "ManifestValue"]


def check_plain(text: str, what: str) -> str:
    """``text`` unchanged; raises ConfigError when it holds Jinja markup or a control character."""
    if any(marker in text for marker in _JINJA):
        raise ConfigError(
            f"{what}: {text!r} contains Jinja template markup, which gramine-manifest would run"
        )
    if any(ord(char) < 0x20 and char != "\t" for char in text):
        raise ConfigError(f"{what}: {text!r} contains a control character")
    return text


def _string(text: str) -> str:
    parts = []
    for char in text:
        if char in _ESCAPES:
            parts.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            parts.append(f"\\u{ord(char):04x}")
        else:
            parts.append(char)
    return '"' + "".join(parts) + '"'


def _value(value: ManifestValue, key: str) -> str:
    if isinstance(value, Template):
        return _string(value.text)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _string(check_plain(value, key))
    if isinstance(value, Mapping):
        items = []
        for name, item in value.items():
            if not BARE_KEY.fullmatch(name) or "." in name:
                raise ConfigError(f"{key}: {name!r} is not a plain TOML key")
            items.append(f"{name} = {_value(item, key)}")
        return "{ " + ", ".join(items) + " }"
    if isinstance(value, Sequence):
        if not value:
            return "[]"
        return "[\n" + "".join(f"  {_value(item, key)},\n" for item in value) + "]"
    raise ConfigError(f"{key}: {type(value).__name__} values cannot be written to a manifest")


def render(entries: Mapping[str, ManifestValue], *, header: str = "") -> str:
    """TOML text with one ``dotted.key = value`` line per entry, in the mapping's order.

    Raises ConfigError for a key that is not a dotted bare key, or for a plain string with Jinja markup.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    if lines:
        lines.append("")
    for key, value in entries.items():
        if not BARE_KEY.fullmatch(key):
            raise ConfigError(f"{key!r} is not a valid manifest key (dotted names of [A-Za-z0-9_-])")
        lines.append(f"{key} = {_value(value, key)}")
    return "\n".join(lines) + "\n"
