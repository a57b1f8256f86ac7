"""enklave's one data directory (``ENKLAVE_HOME``), and the file helpers every layer uses: atomic and
owner-only writes, bounded reads.

The data directory holds per-installation state: the simulated platform's secret keys and its public PKI, signing
keys that ``enklave sign`` generated, caches. It is ``$ENKLAVE_HOME`` when set, else the user's data directory
(``~/.local/share/enklave`` on Linux). Anything secret written here is written atomically with mode 0600 inside
directories with mode 0700, so a crash never leaves a half-written key and no other user can read one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import platformdirs

from enklave.errors import TransportError

__all__ = ["HOME_ENV", "data_home", "private_dir", "read_limited", "write_atomic", "write_private"]

HOME_ENV = "ENKLAVE_HOME"


def data_home(environ: Mapping[str, str] | None = None) -> Path:
    """The data directory: ``$ENKLAVE_HOME`` if set and non-empty, else the platform's user data directory."""
    env = os.environ if environ is None else environ
    value = env.get(HOME_ENV, "")
    return Path(value) if value else Path(platformdirs.user_data_dir("enklave", appauthor=False))


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it owner-only (0700); raises TransportError on failure."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)
    except OSError as exc:
        raise TransportError(f"cannot create private directory {path}: {exc.strerror}") from exc
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600, in a directory made owner-only (0700)."""
    private_dir(path.parent)
    write_atomic(path, data, mode=0o600)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory, fsync, rename) with ``mode``.

    Readers see the old file or the new one, never half of one; a failed write leaves no temporary file. The
    directory must exist. Raises TransportError on failure.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise TransportError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_limited(path: Path, limit: int) -> bytes:
    """Read at most ``limit + 1`` bytes of ``path``: a result longer than ``limit`` means the file is too large
    (the caller says so in its own terms). Raises TransportError (FileNotFoundError chained) when unreadable."""
    try:
        with path.open("rb") as handle:
            return handle.read(limit + 1)
    except OSError as exc:
        raise TransportError(f"cannot read {path}: {exc.strerror or exc}") from exc
