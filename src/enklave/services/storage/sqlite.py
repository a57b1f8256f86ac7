"""Storage in one SQLite file: the embedded default for a single service instance.

The file is created owner-only (0600; SQLite gives its ``-wal`` and ``-shm`` companions the same mode) and opened
in WAL mode, so readers never block the writer. One connection is shared by the threads of a process behind a
lock; several processes (or several :class:`SQLiteStorage` objects) may open the same file, and SQLite's own
locking keeps them consistent: every write runs in a ``BEGIN IMMEDIATE`` transaction, which takes the database's
write lock before it reads, so log sequence numbers are computed and used under the same lock and stay gap-free
and unique.

"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from enklave.errors import TransportError, UsageError
from enklave.services.storage._base import LogRecord, Storage
from enklave.services.storage._common import (
    DEFAULT_MAX_VALUE_BYTES,
    check_max_value_bytes,
    check_name,
    check_read_window,
    check_value,
    migrate_schema,
)

__all__ = ["SQLiteStorage"]

_T = TypeVar("_T")

# Each entry brings the schema from version i to version i + 1. Every statement is idempotent on its own, and the
# version is read and written in the same write transaction, so two processes that open a new file at the same
# time apply each migration once.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE IF NOT EXISTS records ("
        " namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (namespace, key))",
        "CREATE TABLE IF NOT EXISTS logs ("
        " log TEXT NOT NULL, sequence INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (log, sequence))",
    ),
)


class SQLiteStorage(Storage):
    """:class:`~enklave.services.storage.Storage` in the SQLite file at ``path``, created (0600) if missing.

    ``timeout`` is how long, in seconds, a write waits for another process's write lock before it fails with
    TransportError; ``max_value_bytes`` bounds each value (UsageError above it). Opening creates or migrates the
    schema (a ``meta`` table records its version) and raises TransportError when the file cannot be opened, is
    not a database, or has a schema newer than this code knows. Safe to share between threads.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 10.0,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        self._path = Path(path)
        self._max_value_bytes = check_max_value_bytes(max_value_bytes)
        self._lock = threading.Lock()
        self._create_owner_only(self._path)
        try:
            # isolation_level=None leaves transactions to us (explicit BEGIN IMMEDIATE), and check_same_thread=False
            # is safe because every use of the connection holds self._lock.
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self._path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise TransportError(f"cannot open SQLite storage {self._path}: {exc}") from exc
        try:
            self._run(self._setup)
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @staticmethod
    def _create_owner_only(path: Path) -> None:
        # Creating the file ourselves, before SQLite does, is what makes it 0600 from its first byte: SQLite would
        # create it with the umask's mode. An existing file is narrowed to 0600 as well.
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
        except OSError as exc:
            raise TransportError(f"cannot create SQLite storage {path}: {exc.strerror or exc}") from exc

    def _setup(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise TransportError(f"SQLite storage {self._path} cannot use WAL mode")
        # NORMAL is durable across process crashes in WAL mode; only a power loss can drop the last commits.
        conn.execute("PRAGMA synchronous=NORMAL")
        with self._write(conn):
            migrate_schema(conn.execute, _MIGRATIONS, placeholder="?", where=f"SQLite storage {self._path}")

    @staticmethod
    @contextmanager
    def _write(conn: sqlite3.Connection) -> Iterator[None]:
        # BEGIN IMMEDIATE takes the write lock now rather than at the first write, so what the transaction reads
        # (the last sequence number of a log) cannot change before it commits.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _run(self, operation: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            if self._conn is None:
                raise UsageError("the storage is closed")
            try:
                return operation(self._conn)
            except sqlite3.Error as exc:
                raise TransportError(f"SQLite storage {self._path} failed: {exc}") from exc

    def get(self, namespace: str, key: str) -> bytes | None:
        """The record's value, or None. Raises UsageError for invalid names, TransportError when SQLite fails."""
        check_name("namespace", namespace)
        check_name("key", key)
        row = self._run(
            lambda conn: conn.execute(
                "SELECT value FROM records WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
        )
        return None if row is None else bytes(row[0])

    def put(self, namespace: str, key: str, value: bytes) -> None:
        """Create or replace a record in one transaction. Raises UsageError for invalid names, a value that is
        not bytes or is over the size limit; TransportError when SQLite fails."""
        check_name("namespace", namespace)
        check_name("key", key)
        check_value(value, self._max_value_bytes)

        def operation(conn: sqlite3.Connection) -> None:
            with self._write(conn):
                conn.execute(
                    "INSERT INTO records (namespace, key, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                    (namespace, key, value),
                )

        self._run(operation)

    def delete(self, namespace: str, key: str) -> bool:
        """Remove a record; True when it existed. Raises UsageError or TransportError as :meth:`get` does."""
        check_name("namespace", namespace)
        check_name("key", key)

        def operation(conn: sqlite3.Connection) -> bool:
            with self._write(conn):
                cursor = conn.execute("DELETE FROM records WHERE namespace = ? AND key = ?", (namespace, key))
                return cursor.rowcount > 0

        return self._run(operation)

    def keys(self, namespace: str) -> list[str]:
        """The keys of a namespace, sorted by code point. Raises UsageError or TransportError."""
        check_name("namespace", namespace)
        rows = self._run(
            lambda conn: conn.execute("SELECT key FROM records WHERE namespace = ?", (namespace,)).fetchall()
        )
        return sorted(str(row[0]) for row in rows)

    def append(self, log: str, data: bytes) -> int:
        """Append to a log and return the new sequence number: the last one plus 1, computed under the write
        lock, so concurrent appenders (threads or processes) get distinct, gap-free numbers. Raises UsageError
        for an invalid name or value, TransportError when SQLite fails (then nothing was appended)."""
        check_name("log", log)
        check_value(data, self._max_value_bytes)

        def operation(conn: sqlite3.Connection) -> int:
            with self._write(conn):
                row = conn.execute("SELECT MAX(sequence) FROM logs WHERE log = ?", (log,)).fetchone()
                sequence = 1 if row is None or row[0] is None else int(row[0]) + 1
                conn.execute("INSERT INTO logs (log, sequence, data) VALUES (?, ?, ?)", (log, sequence, data))
                return sequence

        return self._run(operation)

    def read_log(self, log: str, *, after: int = 0, limit: int = 1000) -> list[LogRecord]:
        """Records with sequence > ``after``, oldest first, at most ``limit``. Raises UsageError for an invalid
        name or window (``after`` < 0, ``limit`` < 1), TransportError when SQLite fails."""
        check_name("log", log)
        check_read_window(after, limit)
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT sequence, data FROM logs WHERE log = ? AND sequence > ? ORDER BY sequence LIMIT ?",
                (log, after, limit),
            ).fetchall()
        )
        return [LogRecord(sequence=int(row[0]), data=bytes(row[1])) for row in rows]

    def close(self) -> None:
        """Close the connection (idempotent); later calls raise UsageError."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
