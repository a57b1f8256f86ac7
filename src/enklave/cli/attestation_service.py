"""``enklave attestation-service serve``: run the MAA-compatible attestation service with uvicorn."""

from __future__ import annotations

from pathlib import Path

import click
import uvicorn

from enklave._home import data_home, read_limited
from enklave.attestation.sources import INTEL_PCS_URL
from enklave.errors import UsageError
from enklave.services.attestation.app import create_app
from enklave.services.attestation.service import AttestationService, ServiceConfig
from enklave.services.storage import open_storage

__all__ = ["attestation_service"]

_MAX_TOKEN_FILE = 4096


@click.group("attestation-service")
def attestation_service() -> None:
    """The attestation service: Microsoft Azure Attestation's REST API (2022-08-01), self-hosted.

    Its token signing key is created inside its own enclave and sealed to it; tokens are MAA's RS256 JWTs.
    """


def _admin_token(path: Path | None) -> str | None:
    if path is None:
        return None
    token = read_limited(path, _MAX_TOKEN_FILE).decode("utf-8", errors="strict").strip()
    if len(token) < 16:
        raise UsageError(f"the admin token in {path} must be at least 16 characters")
    return token


@attestation_service.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option(
    "--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Data directory (default: $ENKLAVE_HOME/attestation-service).",
)  # fmt: skip
@click.option(
    "--storage", "storage_url", default=None,
    help="sqlite:///abs/path.db (default: state.db in the data directory) or postgresql://...",
)  # fmt: skip
@click.option(
    "--mode", type=click.Choice(["sim", "sgx", "auto"]), default="auto", show_default=True,
    help="Run the service's enclave in simulation, on SGX, or on SGX when present.",
)  # fmt: skip
@click.option(
    "--allow-simulated", is_flag=True,
    help="Accept evidence from the simulated platform (its tokens say x-enklave-simulated: true).",
)  # fmt: skip
@click.option(
    "--admin-token-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
    help="File holding the bearer token that PUT /policies needs (none: policy changes disabled).",
)  # fmt: skip
@click.option("--pcs-url", default=None, help="Intel PCS or PCCS base URL for real collateral.")
@click.option(
    "--base-url", default=None, help="Public base URL, the tokens' issuer (default: from host and port)."
)
@click.option(
    "--certfile", type=click.Path(dir_okay=False, exists=True), default=None, help="TLS certificate (PEM)."
)
@click.option(
    "--keyfile", type=click.Path(dir_okay=False, exists=True), default=None, help="TLS private key (PEM)."
)
def serve(
    host: str,
    port: int,
    data_dir: Path | None,
    storage_url: str | None,
    mode: str,
    allow_simulated: bool,
    admin_token_file: Path | None,
    pcs_url: str | None,
    base_url: str | None,
    certfile: str | None,
    keyfile: str | None,
) -> None:
    """Serve the attestation service (plain HTTP on loopback by default; TLS with --certfile/--keyfile)."""
    if (certfile is None) != (keyfile is None):
        raise UsageError("--certfile and --keyfile go together")
    home = data_home()
    data = data_dir if data_dir is not None else home / "attestation-service"
    scheme = "https" if certfile else "http"
    shown_host = f"[{host}]" if ":" in host else host
    config = ServiceConfig(
        data_dir=data,
        base_url=base_url or f"{scheme}://{shown_host}:{port}",
        mode=mode,
        allow_simulated=allow_simulated,
        admin_token=_admin_token(admin_token_file),
        pcs_url=pcs_url or INTEL_PCS_URL,
        home=home,
    )
    data.mkdir(parents=True, exist_ok=True)
    storage = open_storage(storage_url or f"sqlite:///{(data / 'state.db').resolve()}")
    service = AttestationService(config, storage)
    try:
        # Start before serving, so that an enclave or storage failure is one line and an exit code.
        service.start()
        click.echo(f"attestation service: issuer {config.base_url}, signing key {service.kid}", err=True)
        uvicorn.run(
            create_app(service), host=host, port=port, ssl_certfile=certfile, ssl_keyfile=keyfile,
            log_level="info",
        )  # fmt: skip
    finally:
        service.close()
        storage.close()
