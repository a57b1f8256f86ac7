"""Storage in a PostgreSQL database: for several replicas of a service behind a load balancer, sharing one state.

Every replica opens its own :class:`PostgresStorage` on the same database; each operation is one transaction on
a connection from a small pool (psycopg 3 and psycopg_pool, the ``postgres`` extra). Log sequence numbers come
from a per-log counter row (``log_heads``) that an append increments with an upsert: the row stays locked until
the append commits, so concurrent appenders in any number of processes queue on it and get distinct, gap-free
numbers, and an append that fails rolls its increment back with it.

The schema is the SQLite backend's (``meta``, ``records``, ``logs``, with BYTEA values) plus ``log_heads``. It
is created or migrated when a storage opens, under a transaction-scoped advisory lock so that replicas starting
together migrate once. Error messages name the database and server but never the password of the DSN.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
from psycopg import conninfo
from psycopg_pool import ConnectionPool

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

__all__ = ["PostgresStorage"]

_T = TypeVar("_T")
_Connection = psycopg.Connection[tuple[Any, ...]]

# The key of the advisory lock held while the schema is created or migrated: "enklave1" as a big-endian int64.
_MIGRATION_LOCK = int.from_bytes(b"enklave1", "big")

# Each entry brings the schema from version i to version i + 1 (see the SQLite backend, which shares the numbers).
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE IF NOT EXISTS records ("
        " namespace TEXT NOT NULL, key TEXT NOT NULL, value BYTEA NOT NULL, PRIMARY KEY (namespace, key))",
        "CREATE TABLE IF NOT EXISTS logs ("
        " log TEXT NOT NULL, sequence BIGINT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (log, sequence))",
        "CREATE TABLE IF NOT EXISTS log_heads (log TEXT PRIMARY KEY, last BIGINT NOT NULL)",
    ),
)


class PostgresStorage(Storage):
    """:class:`~enklave.services.storage.Storage` in the PostgreSQL database that ``dsn`` names (a libpq
    connection string or a ``postgresql://`` URI).

    Opening connects once to create or migrate the schema, then opens a pool of ``min_size`` to ``max_size``
    connections. ``timeout`` (seconds) bounds the wait for a pooled connection, ``connect_timeout`` each new
    connection (unless the DSN sets its own), ``max_value_bytes`` each value. Raises UsageError for a DSN that
    does not parse or invalid sizes, TransportError when the server cannot be reached, refuses the login or fails
    later, or has a schema newer than this code knows. Safe to share between threads.
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        timeout: float = 10.0,
        connect_timeout: int = 5,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        check_max_value_bytes(max_value_bytes)
        if not 1 <= min_size <= max_size:
            raise UsageError("the pool needs 1 <= min_size <= max_size")
        try:
            params = conninfo.conninfo_to_dict(dsn)
        except (psycopg.Error, TypeError):
            # libpq's parse errors quote the DSN, and with it any password: neither the message nor the cause
            # may carry it on.
            raise UsageError("the PostgreSQL DSN does not parse") from None
        password = params.get("password")
        self._secrets = [str(password), quote(str(password), safe="")] if password else []
        host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "the default host"
        port = params.get("port") or os.environ.get("PGPORT") or "5432"
        dbname = params.get("dbname") or os.environ.get("PGDATABASE") or "the default database"
        self._where = f"PostgreSQL storage (database {dbname} at {host}, port {port})"
        self._max_value_bytes = max_value_bytes
        self._timeout = timeout
        self._connect_kwargs: dict[str, Any] = {}
        if "connect_timeout" not in params:
            self._connect_kwargs["connect_timeout"] = connect_timeout
        self._dsn = dsn
        self._migrate()
        pool: ConnectionPool[_Connection] = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs=self._connect_kwargs,
            timeout=timeout,
            # A connection is checked when it leaves the pool, so a server restart costs no failed operation.
            check=ConnectionPool.check_connection,
            open=False,
            name="enklave-storage",
        )
        try:
            pool.open(wait=True, timeout=timeout)
        except psycopg.Error as exc:
            pool.close(timeout=1.0)
            raise TransportError(self._message("cannot open its connection pool", exc)) from exc
        self._pool: ConnectionPool[_Connection] | None = pool

    def _message(self, what: str, exc: BaseException) -> str:
        # libpq does not print passwords, but a server or a future version might echo a DSN: scrub to be sure.
        text = str(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        # libpq's messages span lines ("...\n\tIs the server running...?"); errors here are one line.
        text = " ".join(text.split()) or type(exc).__name__
        return f"{self._where} {what}: {text}"

    def _migrate(self) -> None:
        try:
            with psycopg.connect(self._dsn, **self._connect_kwargs) as conn, conn.transaction():
                # 1. Serialize migrations across replicas; the lock ends with the transaction.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                # 2. Read the version, refuse a newer one, apply the missing steps, record the new version.
                migrate_schema(conn.execute, _MIGRATIONS, placeholder="%s", where=self._where)
        except psycopg.Error as exc:
            raise TransportError(self._message("cannot be opened", exc)) from exc

    def _run(self, operation: Callable[[_Connection], _T]) -> _T:
        pool = self._pool
        if pool is None:
            raise UsageError("the storage is closed")
        try:
            # The pool's context commits when the operation returns and rolls back when it raises.
            with pool.connection(timeout=self._timeout) as conn:
                return operation(conn)
        except psycopg.Error as exc:
            raise TransportError(self._message("failed", exc)) from exc

    def get(self, namespace: str, key: str) -> bytes | None:
        """The record's value, or None. Raises UsageError for invalid names, TransportError when the database
        fails."""
        check_name("namespace", namespace)
        check_name("key", key)
        row = self._run(
            lambda conn: conn.execute(
                "SELECT value FROM records WHERE namespace = %s AND key = %s", (namespace, key)
            ).fetchone()
        )
        return None if row is None else bytes(row[0])

    def put(self, namespace: str, key: str, value: bytes) -> None:
        """Create or replace a record in one transaction (an upsert). Raises UsageError for invalid names, a value
        that is not bytes or is over the size limit; TransportError when the database fails."""
        check_name("namespace", namespace)
        check_name("key", key)
        check_value(value, self._max_value_bytes)
        self._run(
            lambda conn: conn.execute(
                "INSERT INTO records (namespace, key, value) VALUES (%s, %s, %s)"
                " ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value",
                (namespace, key, value),
            )
        )

    def delete(self, namespace: str, key: str) -> bool:
        """Remove a record; True when it existed. Raises UsageError or TransportError as :meth:`get` does."""
        check_name("namespace", namespace)
        check_name("key", key)
        return self._run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM records WHERE namespace = %s AND key = %s", (namespace, key)
                ).rowcount
                > 0
            )
        )

    def keys(self, namespace: str) -> list[str]:
        """The keys of a namespace, sorted by code point (not by the database's collation). Raises UsageError or
        TransportError."""
        check_name("namespace", namespace)
        rows = self._run(
            lambda conn: conn.execute("SELECT key FROM records WHERE namespace = %s", (namespace,)).fetchall()
        )
        return sorted(str(row[0]) for row in rows)

    def append(self, log: str, data: bytes) -> int:
        """Append to a log and return the new sequence number, gap-free and unique across every process that
        shares the database. Raises UsageError for an invalid name or value, TransportError when the database
        fails (then nothing was appended and no number was used)."""
        check_name("log", log)
        check_value(data, self._max_value_bytes)

        def operation(conn: _Connection) -> int:
            # The upsert locks the log's counter row until this transaction ends: the next appender waits here.
            row = conn.execute(
                "INSERT INTO log_heads (log, last) VALUES (%s, 1)"
                " ON CONFLICT (log) DO UPDATE SET last = log_heads.last + 1 RETURNING last",
                (log,),
            ).fetchone()
            if row is None:
                raise TransportError(f"{self._where} returned no sequence number")
            sequence = int(row[0])
            conn.execute("INSERT INTO logs (log, sequence, data) VALUES (%s, %s, %s)", (log, sequence, data))
            return sequence

        return self._run(operation)

    def read_log(self, log: str, *, after: int = 0, limit: int = 1000) -> list[LogRecord]:
        """Records with sequence > ``after``, oldest first, at most ``limit``. Raises UsageError for an invalid
        name or window (``after`` < 0, ``limit`` < 1), TransportError when the database fails."""
        check_name("log", log)
        check_read_window(after, limit)
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT sequence, data FROM logs WHERE log = %s AND sequence > %s ORDER BY sequence LIMIT %s",
                (log, after, limit),
            ).fetchall()
        )
        return [LogRecord(sequence=int(row[0]), data=bytes(row[1])) for row in rows]

    def close(self) -> None:
        """Close the pool's connections (idempotent); later calls raise UsageError."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=5.0)
