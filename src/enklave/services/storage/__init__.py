"""Where enklave services keep their state: one :class:`Storage` interface, two backends.

- :class:`SQLiteStorage`, the default: one file, created owner-only, for a single instance of a service.
- :class:`PostgresStorage`, for several replicas behind a load balancer that share one database. It needs the
  ``postgres`` extra (``pip install 'enklave[postgres]'``), so it is imported only when it is used.

:func:`open_storage` picks the backend from a URL, which is what a service's configuration names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from enklave.errors import UsageError
from enklave.services.storage._base import LogRecord, Storage
from enklave.services.storage._common import MAX_NAME_LENGTH
from enklave.services.storage.sqlite import SQLiteStorage

if TYPE_CHECKING:
    from enklave.services.storage.postgres import PostgresStorage

__all__ = ["MAX_NAME_LENGTH", "LogRecord", "PostgresStorage", "SQLiteStorage", "Storage", "open_storage"]

_POSTGRES_SCHEMES = ("postgresql", "postgres")


def __getattr__(name: str) -> object:
    # PostgresStorage imports psycopg, an optional dependency: load it on first use, not with this package.
    if name == "PostgresStorage":
        from enklave.services.storage.postgres import PostgresStorage  # noqa: PLC0415

        return PostgresStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_storage(url: str) -> Storage:
    """Open the storage that ``url`` names.

    - ``sqlite:///abs/path.db``: an SQLite file at an absolute path (percent-escapes decoded), created 0600.
    - ``postgresql://user[:password]@host[:port]/dbname[?param=value...]`` (or ``postgres://``): a PostgreSQL
      database; the URL goes to libpq as it is, so libpq's parameters (``host=/socket/dir``, ``sslmode``...) work.

    Raises UsageError for an unknown scheme, a malformed URL, or PostgreSQL without the ``postgres`` extra (the
    message never repeats the URL, which may hold a password); TransportError when the database cannot be opened.
    """
    if not isinstance(url, str):
        raise UsageError(f"a storage URL must be a str, not {type(url).__name__}")
    scheme, separator, _ = url.partition("://")
    scheme = scheme.lower()
    if not separator:
        raise UsageError("a storage URL looks like sqlite:///path/to/file.db or postgresql://user@host/db")
    if scheme == "sqlite":
        return SQLiteStorage(_sqlite_path(url))
    if scheme in _POSTGRES_SCHEMES:
        try:
            from enklave.services.storage.postgres import PostgresStorage  # noqa: PLC0415
        except ImportError as exc:
            raise UsageError(
                "PostgreSQL storage needs the postgres extra: pip install 'enklave[postgres]'"
            ) from exc
        return PostgresStorage(url)
    raise UsageError(f"unknown storage URL scheme {scheme!r}: use sqlite:// or postgresql://")


def _sqlite_path(url: str) -> Path:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UsageError("the sqlite:// storage URL does not parse") from exc
    if parts.netloc or parts.query or parts.fragment:
        raise UsageError("a sqlite:// storage URL has no host, query or fragment: sqlite:///abs/path.db")
    if parts.path == "/:memory:":
        # A database that vanishes on close would contradict the promise that a restart loses nothing.
        raise UsageError("in-memory SQLite storage is not supported: name a file, sqlite:///abs/path.db")
    path = Path(unquote(parts.path))
    if not path.is_absolute() or path == Path("/") or parts.path.endswith("/"):
        raise UsageError("a sqlite:// storage URL names an absolute file path: sqlite:///abs/path.db")
    return path
