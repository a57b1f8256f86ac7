"""What the service tests share: a module-wide ENKLAVE_HOME, a service app served on 127.0.0.1 by uvicorn, and
Starlette's TestClient for serving one in process.

Used by tests/test_attestation_service.py, tests/test_kbs_service.py, tests/test_azure_interop.py and the other
tests of Starlette apps.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning  # type: ignore[attr-defined]

from enklave.services._http import serve_in_thread

with warnings.catch_warnings():
    # Starlette's TestClient prefers the httpx2 package and warns with httpx, which is what enklave depends on.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

__all__ = ["TestClient", "enklave_home", "loopback_socket", "serving"]

_START_TIMEOUT = 10.0


def enklave_home(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A fresh directory set as ENKLAVE_HOME while the (module-scoped) fixture that yields from this lives."""
    path = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENKLAVE_HOME", str(path))
        yield path


def loopback_socket() -> socket.socket:
    """A TCP socket bound to an ephemeral port of 127.0.0.1 (for a URL needed before the app exists)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serving(
    app: Any, name: str, *, sock: socket.socket | None = None, scheme: str = "http", **options: Any
) -> Iterator[str]:
    """Serve ``app`` with uvicorn (``options`` go to its Config, e.g. TLS files) on ``sock`` or a new loopback
    socket, and yield its base URL; the server is stopped on exit, and a socket made here is closed."""
    own = sock is None
    bound = loopback_socket() if sock is None else sock
    port = bound.getsockname()[1]
    try:
        with serve_in_thread(app, bound, name=f"loopback {name}", timeout=_START_TIMEOUT, **options):
            yield f"{scheme}://127.0.0.1:{port}"
    finally:
        if own:
            bound.close()
