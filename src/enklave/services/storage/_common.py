"""What every storage backend shares: the checks of names and values, and the schema versioning.

The backends differ in their SQL dialect and their locking, not in what they accept: a name or value that one
refuses, the other refuses with the same message. Both keep the schema version in a ``meta`` table and bring a
database up to :data:`SCHEMA_VERSION` with :func:`migrate_schema`, inside one write transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from enklave.errors import TransportError, UsageError

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "MAX_NAME_LENGTH",
    "SCHEMA_VERSION",
    "check_max_value_bytes",
    "check_name",
    "check_read_window",
    "check_value",
    "migrate_schema",
]

MAX_NAME_LENGTH = 255
DEFAULT_MAX_VALUE_BYTES = 16 * 1024 * 1024
SCHEMA_VERSION = 1


def check_name(kind: str, name: object) -> str:
    """Return ``name`` if it is a valid namespace, key or log name: a non-empty ``str`` of at most 255 characters,
    encodable as UTF-8 and without NUL (which PostgreSQL text cannot hold). Raises UsageError otherwise; the
    message names ``kind`` and never echoes the name, which may be derived from something private."""
    if not isinstance(name, str):
        raise UsageError(f"{kind} must be a str, not {type(name).__name__}")
    if not name or len(name) > MAX_NAME_LENGTH:
        raise UsageError(f"{kind} must have 1 to {MAX_NAME_LENGTH} characters, not {len(name)}")
    if "\x00" in name:
        raise UsageError(f"{kind} must not contain NUL")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"{kind} is not encodable as UTF-8") from exc
    return name


def check_value(value: object, max_bytes: int) -> bytes:
    """Return ``value`` if it is ``bytes`` of at most ``max_bytes``; raises UsageError otherwise."""
    if not isinstance(value, bytes):
        raise UsageError(f"a stored value must be bytes, not {type(value).__name__}")
    if len(value) > max_bytes:
        raise UsageError(f"a stored value is {len(value)} bytes, more than the limit of {max_bytes}")
    return value


def check_read_window(after: object, limit: object) -> tuple[int, int]:
    """Return ``(after, limit)`` if ``after`` is an int >= 0 and ``limit`` an int >= 1; raises UsageError."""
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise UsageError("after must be an int >= 0")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise UsageError("limit must be an int >= 1")
    return after, limit


def check_max_value_bytes(max_value_bytes: int) -> int:
    """Return ``max_value_bytes`` if it is an int >= 1; raises UsageError otherwise."""
    if not isinstance(max_value_bytes, int) or isinstance(max_value_bytes, bool) or max_value_bytes < 1:
        raise UsageError("max_value_bytes must be an int >= 1")
    return max_value_bytes


# The statement that records the schema version, per DB-API parameter marker (sqlite3 "?", psycopg "%s").
_RECORD_VERSION = {
    "?": "INSERT INTO meta (name, value) VALUES ('schema_version', ?)"
    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    "%s": "INSERT INTO meta (name, value) VALUES ('schema_version', %s)"
    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
}


def migrate_schema(
    execute: Callable[..., Any], migrations: Sequence[Sequence[str]], *, placeholder: str, where: str
) -> None:
    """Bring a database to :data:`SCHEMA_VERSION`: create ``meta``, refuse a newer schema (TransportError naming
    ``where``), apply the missing steps of ``migrations`` (entry i brings version i to i + 1) and record the
    version. ``execute`` is the connection's ``execute`` (returning a cursor); ``placeholder`` its parameter
    marker. The caller runs this in one write transaction, so concurrent openers apply each step once.
    """
    execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    version = int(row[0]) if row is not None else 0
    if version > SCHEMA_VERSION:
        raise TransportError(
            f"{where} has schema version {version}; this enklave knows up to {SCHEMA_VERSION}"
        )
    for statements in migrations[version:]:
        for statement in statements:
            execute(statement)
    execute(_RECORD_VERSION[placeholder], (str(SCHEMA_VERSION),))
