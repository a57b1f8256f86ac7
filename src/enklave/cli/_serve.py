"""What ``enklave attestation-service serve`` and ``enklave kbs serve`` share: options, admin token, uvicorn.

:func:`serve_options` adds the options both commands take (address, port, data directory, storage, enclave
mode, admin token file, TLS) and hands them to the command as one :class:`ServeOptions`; :func:`serve` opens
storage, starts the service before serving (so a failure is one line and an exit code) and runs the app with
uvicorn until it stops.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click
import uvicorn

from enklave._home import data_home
from enklave.cli._io import read_file
from enklave.errors import BadDataError, UsageError
from enklave.host import EnclaveInfo
from enklave.services.storage import Storage, open_storage

__all__ = ["ServeOptions", "enclave_identity", "read_admin_token", "serve", "serve_options"]

_MAX_TOKEN_FILE = 4096

S = TypeVar("S", bound="_Service")


class _Service(Protocol):
    def start(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """The options every ``serve`` command takes, checked: TLS files come both or neither (else
    :class:`UsageError`), ``data`` is the data directory (default: ``<ENKLAVE_HOME>/<name>``), ``home`` is
    ENKLAVE_HOME."""

    host: str
    port: int
    storage_url: str | None
    mode: str
    admin_token_file: Path | None
    certfile: str | None
    keyfile: str | None
    home: Path
    data: Path

    def admin_token(self) -> str | None:
        """The admin token read from ``admin_token_file`` (see :func:`read_admin_token`)."""
        return read_admin_token(self.admin_token_file)


def serve_options(
    *, port: int, data: str, mode_help: str, admin_help: str
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Add the options every ``serve`` command takes; the command gets them as its first argument, a
    :class:`ServeOptions` (``data`` names the default data directory under ENKLAVE_HOME)."""
    options = [
        click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on."),
        click.option(
            "--port", default=port, show_default=True, type=click.IntRange(0, 65535), help="TCP port."
        ),
        click.option(
            "--data",
            "--data-dir",  # the name 'enklave inference serve' uses
            "data_dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help=f"Data directory (default: $ENKLAVE_HOME/{data}).",
        ),
        click.option(
            "--storage",
            "storage_url",
            default=None,
            help="sqlite:///abs/path.db (default: state.db in the data directory) or postgresql://...",
        ),
        click.option(
            "--mode",
            type=click.Choice(["sim", "sgx", "auto"]),
            default="auto",
            show_default=True,
            help=mode_help,
        ),
        click.option(
            "--admin-token-file",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            default=None,
            help=admin_help,
        ),
        click.option(
            "--certfile",
            type=click.Path(dir_okay=False, exists=True),
            default=None,
            help="TLS certificate (PEM).",
        ),
        click.option(
            "--keyfile",
            type=click.Path(dir_okay=False, exists=True),
            default=None,
            help="TLS private key (PEM).",
        ),
    ]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(command)
        def with_options(
            *,
            host: str,
            port: int,
            data_dir: Path | None,
            storage_url: str | None,
            mode: str,
            admin_token_file: Path | None,
            certfile: str | None,
            keyfile: str | None,
            **rest: Any,
        ) -> None:
            if (certfile is None) != (keyfile is None):
                raise UsageError("--certfile and --keyfile go together")
            home = data_home()
            chosen = ServeOptions(
                host, port, storage_url, mode, admin_token_file, certfile, keyfile, home,
                data_dir if data_dir is not None else home / data,
            )  # fmt: skip
            command(chosen, **rest)

        # Applied last to first, so that --help lists them in the order above.
        wrapped: Callable[..., None] = with_options
        for option in reversed(options):
            wrapped = option(wrapped)
        return wrapped

    return decorate


def read_admin_token(path: Path | None) -> str | None:
    """The admin bearer token in the file at ``path`` (``None`` for no file).

    Raises :class:`UsageError` for a token shorter than 16 characters or a file larger than 4 KiB,
    :class:`BadDataError` for a file that is not UTF-8, and :class:`TransportError` for an unreadable one.
    """
    if path is None:
        return None
    raw = read_file(str(path), what="the admin token file", limit=_MAX_TOKEN_FILE)
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise BadDataError(f"the admin token file {path} is not UTF-8") from exc
    if len(token) < 16:
        raise UsageError(f"the admin token in {path} must be at least 16 characters")
    return token


def serve(
    options: ServeOptions,
    make_service: Callable[[Storage], S],
    make_app: Callable[[S], Any],
    banner: Callable[[S], str],
) -> None:
    """Open storage (default: ``state.db`` in the data directory), start the service, print ``banner`` to
    stderr and serve ``make_app(service)`` with uvicorn; the service and storage are closed however serving
    ends. Raises what opening storage and starting the service raise.
    """
    data = options.data
    data.mkdir(parents=True, exist_ok=True)
    storage = open_storage(options.storage_url or f"sqlite:///{(data / 'state.db').resolve()}")
    try:
        service = make_service(storage)
        try:
            # Start before serving, so that an enclave or storage failure is one line and an exit code.
            service.start()
            click.echo(banner(service), err=True)
            uvicorn.run(
                make_app(service), host=options.host, port=options.port, ssl_certfile=options.certfile,
                ssl_keyfile=options.keyfile, log_level="info",
            )  # fmt: skip
        finally:
            service.close()
    finally:
        storage.close()


def enclave_identity(info: EnclaveInfo, mode: str) -> str:
    """``enclave <MRENCLAVE> (<mode> mode), signer <MRSIGNER>``: what a service's start-up line tells the operator
    to pin (clients pin the MRENCLAVE; the inference service pins the key broker's MRSIGNER)."""
    return f"enclave {info.mr_enclave.hex()} ({mode} mode), signer {info.mr_signer.hex()}"
