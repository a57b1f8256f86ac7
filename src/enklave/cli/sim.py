"""``enklave sim init``, ``enklave sim show`` and ``enklave sim pcs``: the simulated SGX platform."""

from __future__ import annotations

import json

import click

from enklave.platform.simulated import PlatformInfo, platform_info, provision, read_collateral

__all__ = ["sim"]


@click.group()
def sim() -> None:
    """The simulated SGX platform of this installation (state in ENKLAVE_HOME/sim).

    Simulated quotes verify only when the simulated root is trusted explicitly, and never pass as real.
    """


def _print_info(info: PlatformInfo) -> None:
    view = info.to_dict()
    for key in (
        "home",
        "root_ca_sha256",
        "fmspc",
        "pce_id",
        "cpu_svn",
        "pce_svn",
        "sgx_type",
        "provisioned_at",
    ):
        click.echo(f"{key}: {view[key]}")


@sim.command("init")
def init() -> None:
    """Provision the simulated platform if needed (idempotent) and re-sign stale collateral.

    Prints the simulated root CA's SHA-256 fingerprint and the platform's FMSPC.
    """
    info = provision()
    click.echo(f"simulated SGX platform ready in {info.home / 'sim'}")
    click.echo(f"root CA SHA-256: {info.root_fingerprint.hex()}")
    click.echo(f"FMSPC: {info.identity.fmspc.hex()}")


@sim.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def show(as_json: bool) -> None:
    """Print the public description of the simulated platform and its collateral's validity (no secrets)."""
    info = platform_info()
    collateral = read_collateral()
    view = {
        **info.to_dict(),
        "collateral_issued": collateral.tcb_info.issue_date.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "collateral_next_update": collateral.earliest_next_update.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "root_ca_pem": str(info.home / "sim" / "public" / "root_ca.pem"),
        "collateral_json": str(info.home / "sim" / "public" / "collateral.json"),
    }
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    _print_info(info)
    for key in ("collateral_issued", "collateral_next_update", "root_ca_pem", "collateral_json"):
        click.echo(f"{key}: {view[key]}")


@sim.command("pcs")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8081, show_default=True, help="TCP port.")
def pcs(host: str, port: int) -> None:
    """Serve the simulated collateral over the Intel PCS v4 API (a local PCS/PCCS for simulation).

    Use it as `--pcs-url http://HOST:PORT` or PcsCollateralSource(base_url=...). Provisions the platform first
    if needed; re-signs collateral when it goes stale. Stop with Ctrl-C.
    """
    # Imported here so that every other command does not pay for importing starlette and uvicorn.
    import uvicorn  # noqa: PLC0415

    from enklave.platform.simulated.pcs import create_pcs_app  # noqa: PLC0415

    info = provision()
    click.echo(
        f"serving the simulated PCS for FMSPC {info.identity.fmspc.hex()} on http://{host}:{port}", err=True
    )
    uvicorn.run(create_pcs_app(info.home), host=host, port=port, log_level="warning")
