"""Service storage: the same tests against SQLite and a real PostgreSQL server (tests/postgres_server.py)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import enklave.services.storage as storage_pkg
from enklave.errors import TransportError, UsageError
from enklave.services.storage import LogRecord, SQLiteStorage, Storage, open_storage

if TYPE_CHECKING:
    from postgres_server import RunningPostgres

# The session's PostgreSQL server and its per-test databases (fixtures postgres_server, postgres_database).
pytest_plugins = ["postgres_server"]


class Backend:
    """Opens storage objects on one database, like replicas or restarts of a service, and closes them all."""

    def __init__(self, kind: str, factory: Callable[..., Storage], url: str) -> None:
        self.kind = kind
        self.url = url
        self._factory = factory
        self._opened: list[Storage] = []

    def open(self, **kwargs: Any) -> Storage:
        storage = self._factory(**kwargs)
        self._opened.append(storage)
        return storage

    def close_all(self) -> None:
        for storage in self._opened:
            storage.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "state" / "storage.db"
        made = Backend("sqlite", lambda **kwargs: SQLiteStorage(path, **kwargs), f"sqlite://{path}")
    else:
        from enklave.services.storage.postgres import PostgresStorage

        server: RunningPostgres = request.getfixturevalue("postgres_server")
        dbname: str = request.getfixturevalue("postgres_database")
        made = Backend(
            "postgres", lambda **kwargs: PostgresStorage(server.dsn(dbname), **kwargs), server.url(dbname)
        )
    try:
        yield made
    finally:
        made.close_all()


def test_records_put_get_replace_delete_keys(backend: Backend) -> None:
    store = backend.open()
    assert store.get("policies", "sgx") is None
    assert store.keys("policies") == []
    store.put("policies", "sgx", b"version=1.0;")
    store.put("policies", "oe", b"\x00\x01binary\xff")
    store.put("keys", "sgx", b"other namespace")
    store.put("policies", "empty", b"")
    assert store.get("policies", "sgx") == b"version=1.0;"
    assert store.get("policies", "oe") == b"\x00\x01binary\xff"
    assert store.get("policies", "empty") == b""
    assert store.get("keys", "sgx") == b"other namespace"
    store.put("policies", "sgx", b"replaced")
    assert store.get("policies", "sgx") == b"replaced"
    assert store.keys("policies") == ["empty", "oe", "sgx"]
    assert store.keys("keys") == ["sgx"]
    assert store.delete("policies", "sgx") is True
    assert store.delete("policies", "sgx") is False
    assert store.get("policies", "sgx") is None
    assert store.get("keys", "sgx") == b"other namespace"
    assert store.keys("policies") == ["empty", "oe"]


def test_keys_sort_by_code_point_in_every_backend(backend: Backend) -> None:
    # PostgreSQL's default collation would put "a" before "B"; the interface promises one order everywhere.
    store = backend.open()
    names = ["b", "B", "a", "A", "_", "é", "z", "10", "9", "日本"]
    for name in names:
        store.put("ns", name, name.encode())
    assert store.keys("ns") == sorted(names)


def test_logs_number_from_one_and_page(backend: Backend) -> None:
    store = backend.open()
    assert store.read_log("audit") == []
    assert [store.append("audit", f"entry {i}".encode()) for i in range(1, 6)] == [1, 2, 3, 4, 5]
    assert store.append("other", b"x") == 1
    assert store.read_log("audit") == [LogRecord(i, f"entry {i}".encode()) for i in range(1, 6)]
    assert store.read_log("audit", after=2, limit=2) == [LogRecord(3, b"entry 3"), LogRecord(4, b"entry 4")]
    assert store.read_log("audit", after=5) == []
    assert store.read_log("other") == [LogRecord(1, b"x")]


def test_concurrent_appends_are_gap_free_and_unique(backend: Backend) -> None:
    # Eight threads on two storage objects (as two replicas would be) append to one log at once.
    replicas = [backend.open(), backend.open()]
    threads_count, per_thread = 8, 25
    results: dict[bytes, int] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads_count)

    def worker(index: int) -> None:
        store = replicas[index % 2]
        try:
            start.wait(timeout=10)
            for j in range(per_thread):
                data = f"{index}:{j}".encode()
                sequence = store.append("audit", data)
                with lock:
                    results[data] = sequence
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    total = threads_count * per_thread
    assert sorted(results.values()) == list(range(1, total + 1))
    records = replicas[0].read_log("audit", limit=total + 10)
    assert [record.sequence for record in records] == list(range(1, total + 1))
    # Each record holds the data whose append returned its number.
    assert {record.data: record.sequence for record in records} == results


# Each process opens the storage, says it is ready, and appends only when told to, so that the appends overlap.
_APPENDER = """
import sys
from enklave.services.storage import open_storage
store = open_storage(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[3])):
    store.append("audit", f"{sys.argv[2]}:{i}".encode())
store.close()
"""


def test_appends_from_several_processes_are_gap_free(backend: Backend) -> None:
    backend.open()  # Creates the schema, so the processes race only on appends.
    count, per_process = 3, 100
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, backend.url, f"p{n}", str(per_process)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(count)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline() == b"ready\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            process.stdin.close()
        for process in processes:
            process.wait(timeout=60)
            assert process.stderr is not None
            assert process.returncode == 0, process.stderr.read().decode()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
    records = backend.open().read_log("audit", limit=count * per_process + 1)
    assert [record.sequence for record in records] == list(range(1, count * per_process + 1))
    expected = sorted(f"p{n}:{i}".encode() for n in range(count) for i in range(per_process))
    assert sorted(record.data for record in records) == expected


def test_two_storage_objects_see_each_others_writes(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    first.put("certs", "admin", b"pem")
    assert second.get("certs", "admin") == b"pem"
    second.put("certs", "admin", b"pem v2")
    assert first.get("certs", "admin") == b"pem v2"
    assert first.append("audit", b"from first") == 1
    assert second.append("audit", b"from second") == 2
    assert first.read_log("audit") == [LogRecord(1, b"from first"), LogRecord(2, b"from second")]
    assert second.delete("certs", "admin") is True
    assert first.get("certs", "admin") is None


def test_restart_keeps_everything(backend: Backend) -> None:
    store = backend.open()
    store.put("policies", "sgx", b"policy")
    store.put("sealed", "signing-key", b"\x01" * 1000)
    store.append("audit", b"one")
    store.append("audit", b"two")
    store.close()
    store.close()  # Idempotent.
    with pytest.raises(UsageError):
        store.get("policies", "sgx")
    reopened = backend.open()
    assert reopened.get("policies", "sgx") == b"policy"
    assert reopened.get("sealed", "signing-key") == b"\x01" * 1000
    assert reopened.keys("sealed") == ["signing-key"]
    assert reopened.append("audit", b"three") == 3
    assert [record.data for record in reopened.read_log("audit")] == [b"one", b"two", b"three"]


def test_reopening_is_idempotent_and_a_newer_schema_is_refused(backend: Backend) -> None:
    backend.open().put("ns", "k", b"v")
    again = backend.open()  # Migrations run again and change nothing.
    assert again.get("ns", "k") == b"v"
    again.close()
    _set_schema_version(backend, 99)
    with pytest.raises(TransportError, match="schema version 99"):
        backend.open()


def _set_schema_version(backend: Backend, version: int) -> None:
    if backend.kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(backend.url.removeprefix("sqlite://"))
        with conn:
            conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(version),))
        conn.close()
    else:
        import psycopg

        with psycopg.connect(backend.url) as conn:
            conn.execute("UPDATE meta SET value = %s WHERE name = 'schema_version'", (str(version),))


_BAD_NAMES: list[object] = ["", "x" * 256, "nul\x00inside", "\ud800", 7, None, b"bytes"]


@pytest.mark.parametrize("bad", _BAD_NAMES, ids=repr)
def test_bad_names_are_usage_errors(backend: Backend, bad: Any) -> None:
    store = backend.open()
    calls: list[Callable[[], object]] = [
        lambda: store.get(bad, "k"),
        lambda: store.get("ns", bad),
        lambda: store.put(bad, "k", b"v"),
        lambda: store.put("ns", bad, b"v"),
        lambda: store.delete("ns", bad),
        lambda: store.keys(bad),
        lambda: store.append(bad, b"v"),
        lambda: store.read_log(bad),
    ]
    for call in calls:
        with pytest.raises(UsageError):
            call()
    # Nothing was written, and the longest valid name still works.
    assert store.keys("ns") == []
    store.put("n" * 255, "k" * 255, b"v")
    assert store.get("n" * 255, "k" * 255) == b"v"


@pytest.mark.parametrize("bad", ["text", bytearray(b"v"), memoryview(b"v"), None, 1], ids=repr)
def test_values_must_be_bytes(backend: Backend, bad: Any) -> None:
    store = backend.open()
    with pytest.raises(UsageError, match="must be bytes"):
        store.put("ns", "k", bad)
    with pytest.raises(UsageError, match="must be bytes"):
        store.append("log", bad)
    assert store.get("ns", "k") is None
    assert store.read_log("log") == []


def test_value_size_limit(backend: Backend) -> None:
    store = backend.open(max_value_bytes=1024)
    store.put("ns", "k", b"x" * 1024)
    with pytest.raises(UsageError, match="limit of 1024"):
        store.put("ns", "k", b"x" * 1025)
    with pytest.raises(UsageError, match="limit of 1024"):
        store.append("log", b"x" * 1025)
    assert store.get("ns", "k") == b"x" * 1024
    with pytest.raises(UsageError):
        backend.open(max_value_bytes=0)


@pytest.mark.parametrize(("after", "limit"), [(-1, 10), (0, 0), (0, -5), (True, 10), (0, 2.5)])
def test_bad_read_windows_are_usage_errors(backend: Backend, after: Any, limit: Any) -> None:
    with pytest.raises(UsageError):
        backend.open().read_log("log", after=after, limit=limit)


def test_default_limit_is_large_values_round_trip(backend: Backend) -> None:
    store = backend.open()
    big = os.urandom(2 * 1024 * 1024)
    store.put("blobs", "big", big)
    assert store.get("blobs", "big") == big


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=st.dictionaries(
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40
        ),
        st.binary(max_size=64),
        max_size=8,
    )
)
def test_any_valid_names_and_values_round_trip(backend: Backend, items: dict[str, bytes]) -> None:
    store = backend.open()
    namespace = f"prop-{os.urandom(6).hex()}"
    for key, value in items.items():
        store.put(namespace, key, value)
    assert store.keys(namespace) == sorted(items)
    assert {key: store.get(namespace, key) for key in items} == items
    store.close()


def test_sqlite_files_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = SQLiteStorage(tmp_path / "fresh" / "state.db")
        store.put("ns", "k", b"v")
    finally:
        os.umask(old)
    try:
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            path = tmp_path / "fresh" / name
            assert path.exists(), name
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    finally:
        store.close()


def test_sqlite_existing_file_is_narrowed_to_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    SQLiteStorage(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_sqlite_not_a_database_is_a_transport_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not an SQLite database file at all" * 100)
    with pytest.raises(TransportError, match=r"state\.db"):
        SQLiteStorage(path)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chain(exc: BaseException | None) -> str:
    text = ""
    while exc is not None:
        text += f"{type(exc).__name__}: {exc}\n"
        exc = exc.__cause__ or exc.__context__
    return text


def test_unreachable_postgres_is_a_transport_error_without_the_password() -> None:
    from enklave.services.storage.postgres import PostgresStorage

    secret = "hunter2-Secret-pw"
    url = f"postgresql://enklave:{secret}@127.0.0.1:{_closed_port()}/state?connect_timeout=3"
    for opener in (lambda: open_storage(url), lambda: PostgresStorage(url)):
        with pytest.raises(TransportError) as info:
            opener()
        assert "127.0.0.1" in str(info.value)
        assert secret not in _chain(info.value)


def test_unparsable_dsn_is_a_usage_error_without_the_password() -> None:
    from enklave.services.storage.postgres import PostgresStorage

    secret = "hunter2-Secret-pw"
    with pytest.raises(UsageError) as info:
        PostgresStorage(f"host=localhost password={secret} 'unterminated")
    assert secret not in _chain(info.value)


def test_postgres_wrong_password_message_has_no_password(postgres_server: RunningPostgres) -> None:
    # The test server trusts local users, so a login as a role that does not exist stands in for a refused login.
    from enklave.services.storage.postgres import PostgresStorage

    secret = "hunter2-Secret-pw"
    dsn = f"host={postgres_server.socket_dir} user=nobody_here password={secret} dbname=postgres"
    with pytest.raises(TransportError, match="nobody_here") as info:
        PostgresStorage(dsn)
    assert secret not in _chain(info.value)


def test_open_storage_sqlite_url(tmp_path: Path) -> None:
    path = tmp_path / "with space" / "s.db"
    store = open_storage("sqlite://" + str(path).replace(" ", "%20"))
    try:
        assert isinstance(store, SQLiteStorage)
        assert store.path == path
        store.put("ns", "k", b"v")
    finally:
        store.close()
    assert path.exists()


def test_open_storage_postgres_url(postgres_server: RunningPostgres, postgres_database: str) -> None:
    from enklave.services.storage.postgres import PostgresStorage

    store = open_storage(postgres_server.url(postgres_database))
    try:
        assert isinstance(store, PostgresStorage)
        store.put("ns", "k", b"v")
        assert store.get("ns", "k") == b"v"
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    ["sqlite://relative.db", "sqlite:relative.db", "sqlite:///", "sqlite:///:memory:", "sqlite:///a.db?mode=ro",
     "mysql://u@h/db", "/abs/path.db", "", "sqlite:///dir/"],
)  # fmt: skip
def test_open_storage_rejects_bad_urls(url: str) -> None:
    with pytest.raises(UsageError):
        open_storage(url)


def test_package_exports() -> None:
    assert set(storage_pkg.__all__) >= {
        "Storage",
        "LogRecord",
        "SQLiteStorage",
        "PostgresStorage",
        "open_storage",
    }
    for name in storage_pkg.__all__:
        value = getattr(storage_pkg, name)
        if callable(value):
            assert (value.__doc__ or "").strip(), name
    with pytest.raises(AttributeError):
        _ = storage_pkg.NoSuchThing  # type: ignore[attr-defined]
