"""A throwaway PostgreSQL server for the tests, started once per test session.

The server comes from ``pgserver`` (PostgreSQL binaries on PyPI, in the ``test`` extra), so ``.ci/run`` gets a
real server from ``pip install '.[test]'`` alone; when pgserver is missing, ``initdb`` and ``pg_ctl`` found on
PATH (or in Debian's /usr/lib/postgresql) are used instead. Either way the server lives in a fresh temporary
directory, listens only on a UNIX socket there (no TCP port), trusts local connections, starts within
``START_TIMEOUT`` seconds or fails the session's PostgreSQL tests, and is stopped and deleted at the session's end.

Use it from a test module with ``pytest_plugins = ["postgres_server"]``.

``postgres_server`` is the session's server; ``postgres_database`` creates a fresh, empty database per test and
yields its libpq DSN. Without a PostgreSQL server the fixtures fail: the test extras install pgserver, so a missing
server is a broken set-up, never a reason to skip the PostgreSQL half of the tests.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

__all__ = ["START_TIMEOUT", "RunningPostgres", "postgres_database", "postgres_server", "start_postgres"]

START_TIMEOUT = 60.0


@dataclass
class RunningPostgres:
    """A running server: where its socket is, and how to stop it."""

    socket_dir: Path
    stop: Callable[[], None]
    user: str = "postgres"

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq key=value DSN for ``dbname`` over the UNIX socket."""
        return f"host={self.socket_dir} user={self.user} dbname={dbname} connect_timeout=10"

    def url(self, dbname: str = "postgres") -> str:
        """The same as a ``postgresql://`` URL (what enklave's ``open_storage`` takes)."""
        return f"postgresql://{self.user}@/{dbname}?host={quote(str(self.socket_dir), safe='')}"


def _start_with_pgserver(base: Path) -> RunningPostgres:
    # pgserver's import warns when XDG_RUNTIME_DIR is unset (it then uses /tmp/runtime-<uid>); that is harmless.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    # Run as root, pgserver creates an unprivileged "pgserver" user to run postgres (which refuses root) and
    # opens the permissions of the data directory's parents so that user can reach it: hence a private parent.
    server = pgserver.get_server(base / "pgdata", cleanup_mode="delete")
    socket_dir = server.get_postmaster_info().socket_dir
    if socket_dir is None:
        server.cleanup()
        raise RuntimeError("pgserver started a server without a UNIX socket")
    return RunningPostgres(socket_dir=Path(socket_dir), stop=server.cleanup)


def _find_binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


def _start_with_path_binaries(base: Path) -> RunningPostgres:
    bindir = _find_binaries()
    if bindir is None:
        raise RuntimeError("neither pgserver nor initdb/pg_ctl is available")
    if os.geteuid() == 0:
        raise RuntimeError("PostgreSQL from PATH cannot run as root; install pgserver (the test extra)")
    pgdata = base / "pgdata"
    run = {"check": True, "capture_output": True, "timeout": START_TIMEOUT}
    subprocess.run(  # noqa: PLW1510
        [bindir / "initdb", "-D", pgdata, "-U", "postgres", "--auth=trust", "--encoding=UTF8"], **run
    )
    # -h '' turns TCP off; -k puts the socket in the base directory, whose path is short enough for AF_UNIX.
    subprocess.run(  # noqa: PLW1510
        [bindir / "pg_ctl", "-D", pgdata, "-l", base / "log", "-w", "-t", str(int(START_TIMEOUT)),
         "-o", f"-h '' -k {base}", "start"],
        **run,
    )  # fmt: skip

    def stop() -> None:
        subprocess.run([bindir / "pg_ctl", "-D", pgdata, "-m", "fast", "-w", "stop"], **run)  # noqa: PLW1510

    return RunningPostgres(socket_dir=base, stop=stop)


def start_postgres(base: Path) -> RunningPostgres:
    """Start a server under ``base`` (pgserver first, PATH binaries second) within ``START_TIMEOUT`` seconds;
    raises RuntimeError when neither can start one."""
    outcome: list[RunningPostgres | BaseException] = []

    def target() -> None:
        try:
            try:
                outcome.append(_start_with_pgserver(base))
            except ImportError:
                outcome.append(_start_with_path_binaries(base))
        except BaseException as exc:
            outcome.append(exc)

    # pgserver polls for readiness without a deadline of its own: a thread with a bounded join keeps the session
    # from hanging on a server that never becomes ready.
    thread = threading.Thread(target=target, name="start-postgres", daemon=True)
    thread.start()
    thread.join(START_TIMEOUT)
    if thread.is_alive() or not outcome:
        raise RuntimeError(f"PostgreSQL did not start within {START_TIMEOUT} seconds")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise RuntimeError(f"PostgreSQL did not start: {result}") from result
    return result


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[RunningPostgres]:
    """The session's PostgreSQL server (the tests fail without one)."""
    base = Path(tempfile.mkdtemp(prefix="enklave-pg-"))
    try:
        server = start_postgres(base)
    except RuntimeError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"the storage tests need a PostgreSQL server (pgserver, from the test extras): {exc}")
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


_DATABASE_NUMBERS = itertools.count(1)


@pytest.fixture
def postgres_database(postgres_server: RunningPostgres) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test; yields its name."""
    import psycopg

    name = f"enklave_test_{os.getpid()}_{next(_DATABASE_NUMBERS)}"
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
            # WITH (FORCE) ends connections a failed test left open (PostgreSQL 13 and later).
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
