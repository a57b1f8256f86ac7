"""``enklave attestation-service serve``: run the MAA-compatible attestation service with uvicorn."""

from __future__ import annotations

import click

from enklave.attestation.sources import INTEL_PCS_URL
from enklave.cli._serve import ServeOptions, serve_options
from enklave.cli._serve import serve as serve_service
from enklave.services.attestation.app import create_app
from enklave.services.attestation.service import AttestationService, ServiceConfig

__all__ = ["attestation_service"]


@click.group("attestation-service")
def attestation_service() -> None:
    """The attestation service: Microsoft Azure Attestation's REST API (2022-08-01), self-hosted.

    Its token signing key is created inside its own enclave and sealed to it; tokens are MAA's RS256 JWTs.
    """


@attestation_service.command("serve")
@serve_options(
    port=8443,
    data="attestation-service",
    mode_help="Run the service's enclave in simulation, on SGX, or on SGX when present.",
    admin_help="File holding the bearer token that PUT /policies needs (none: policy changes disabled).",
)
@click.option(
    "--allow-simulated", is_flag=True,
    help="Accept evidence from the simulated platform (its tokens say x-enklave-simulated: true).",
)  # fmt: skip
@click.option("--pcs-url", default=None, help="Intel PCS or PCCS base URL for real collateral.")
@click.option(
    "--base-url", default=None, help="Public base URL, the tokens' issuer (default: from host and port)."
)
def serve(options: ServeOptions, allow_simulated: bool, pcs_url: str | None, base_url: str | None) -> None:
    """Serve the attestation service (plain HTTP on loopback by default; TLS with --certfile/--keyfile)."""
    scheme = "https" if options.certfile else "http"
    shown_host = f"[{options.host}]" if ":" in options.host else options.host
    config = ServiceConfig(
        data_dir=options.data,
        base_url=base_url or f"{scheme}://{shown_host}:{options.port}",
        mode=options.mode,
        allow_simulated=allow_simulated,
        admin_token=options.admin_token(),
        pcs_url=pcs_url or INTEL_PCS_URL,
        home=options.home,
    )
    serve_service(
        options,
        lambda storage: AttestationService(config, storage),
        create_app,
        lambda service: f"attestation service: issuer {config.base_url}, signing key {service.kid}",
    )
