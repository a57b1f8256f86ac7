"""``enklave collateral fetch`` and ``enklave collateral show``."""

from __future__ import annotations

import json
from datetime import datetime

import click

from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.evidence import collateral_request
from enklave.attestation.sources import HttpxTransport, PcsCollateralSource, write_collateral_file
from enklave.cli._io import read_file
from enklave.cli.quote import load_quote
from enklave.errors import UsageError

INTEL_PCS_URL = "https://api.trustedservices.intel.com"


@click.group()
def collateral() -> None:
    """Fetch and inspect DCAP collateral (TCB info, QE identity, CRLs, issuer chains)."""


@collateral.command("fetch")
@click.option(
    "--quote",
    "quote_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Take the FMSPC and PCK CA from this quote.",
)
@click.option("--fmspc", metavar="HEX", help="FMSPC (12 hex digits), instead of --quote.")
@click.option("--ca", type=click.Choice(["processor", "platform"]), help="PCK CA, with --fmspc.")
@click.option(
    "--pcs-url",
    default=INTEL_PCS_URL,
    show_default=True,
    envvar="ENKLAVE_PCCS_URL",
    help="Intel PCS or a PCCS base URL (same v4 API).",
)
@click.option("--insecure", is_flag=True, help="Do not verify the PCCS's TLS certificate (self-signed PCCS).")
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=30.0, show_default=True, help="Seconds.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the collateral JSON here ('-' for standard output).",
)
def fetch(
    quote_path: str | None, fmspc: str | None, ca: str | None, pcs_url: str, insecure: bool, timeout: float,
    output: str,
) -> None:  # fmt: skip
    """Fetch the collateral for a quote from Intel PCS v4 or a PCCS, in dcap-qvl's collateral JSON format."""
    if quote_path is not None:
        if fmspc or ca:
            raise UsageError("give either --quote or --fmspc with --ca, not both")
        request = collateral_request(load_quote(quote_path)[1])
        fmspc_bytes, ca_name = request.fmspc, request.ca
    elif fmspc and ca:
        try:
            fmspc_bytes = bytes.fromhex(fmspc)
        except ValueError as exc:
            raise UsageError(f"--fmspc must be hexadecimal: {exc}") from exc
        if len(fmspc_bytes) != 6:
            raise UsageError("--fmspc must be 6 bytes (12 hex digits)")
        ca_name = ca
    else:
        raise UsageError("give --quote, or --fmspc together with --ca")
    with HttpxTransport(timeout=timeout, verify=not insecure) as transport:
        fetched = PcsCollateralSource(pcs_url, transport=transport).fetch(fmspc_bytes, ca_name)
    if output == "-":
        click.echo(fetched.to_json())
        return
    write_collateral_file(output, fetched)
    click.echo(f"wrote collateral for FMSPC {fmspc_bytes.hex()} ({ca_name} CA) to {output}", err=True)


@collateral.command("show")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print as one JSON object.")
def show(file: str, as_json: bool) -> None:
    """Summarise a collateral file: FMSPC, versions, issue and next-update dates, TCB levels."""
    parsed = QuoteCollateral.from_json(read_file(file, what="collateral file"))
    tcb, qe = parsed.tcb_info, parsed.qe_identity
    view = {
        "fmspc": tcb.fmspc.hex(),
        "pce_id": tcb.pce_id.hex(),
        "tcb_info": {"version": tcb.version, "issue_date": tcb.issue_date.isoformat(),
                     "next_update": tcb.next_update.isoformat(),
                     "tcb_evaluation_data_number": tcb.tcb_evaluation_data_number,
                     "levels": [{"status": level.tcb_status.value, "pce_svn": level.pce_svn,
                                 "components": list(level.sgx_components),
                                 "advisory_ids": list(level.advisory_ids)} for level in tcb.tcb_levels]},
        "qe_identity": {"id": qe.id, "version": qe.version, "issue_date": qe.issue_date.isoformat(),
                        "next_update": qe.next_update.isoformat(), "mrsigner": qe.mrsigner.hex(),
                        "isv_prod_id": qe.isv_prod_id},
        "root_ca_crl_next_update": _iso(parsed.root_ca_crl.next_update_utc),
        "pck_crl_next_update": _iso(parsed.pck_crl.next_update_utc),
        "earliest_next_update": parsed.earliest_next_update.isoformat(),
    }  # fmt: skip
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    click.echo(f"FMSPC {view['fmspc']}, PCE-ID {view['pce_id']}")
    click.echo(f"TCB info v{tcb.version}: issued {tcb.issue_date:%Y-%m-%d %H:%M:%S}Z, "
               f"next update {tcb.next_update:%Y-%m-%d %H:%M:%S}Z, {len(tcb.tcb_levels)} levels")  # fmt: skip
    click.echo(f"QE identity v{qe.version} ({qe.id}): next update {qe.next_update:%Y-%m-%d %H:%M:%S}Z")
    click.echo(f"valid until {view['earliest_next_update']} (earliest next update)")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
