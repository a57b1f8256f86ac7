"""``enklave demo``: verify the real SGX quote shipped with enklave, offline, and print who it attests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources

import click

from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.policy import EnclavePolicy
from enklave.attestation.verify import verify_quote
from enklave.cli.quote import print_verified

# The shipped collateral is valid, all of it at once, from 2025-06-19T10:56:11Z to 2025-07-19T10:01:18Z.
SAMPLE_TIME = datetime(2025, 7, 1, tzinfo=UTC)
SAMPLE_REPORT_DATA = b"Hello, world!"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the verified quote as one JSON object.")
def demo(as_json: bool) -> None:
    """Verify the real SGX quote shipped with enklave against its real Intel collateral, offline.

    The collateral was valid in June-July 2025, so the quote is verified as of 2025-07-01; the policy accepts
    the platform's ConfigurationAndSWHardeningNeeded status explicitly and requires the report data the
    enclave bound ("Hello, world!").
    """
    samples = resources.files("enklave") / "_samples"
    quote = (samples / "sgx_quote.bin").read_bytes()
    collateral = QuoteCollateral.from_json((samples / "sgx_quote_collateral.json").read_text("utf-8"))
    verified = verify_quote(quote, collateral, now=SAMPLE_TIME)
    policy = EnclavePolicy(
        mr_enclave=verified.mr_enclave,
        accepted_tcb_statuses=("UpToDate", "SWHardeningNeeded", "ConfigurationAndSWHardeningNeeded"),
        report_data=SAMPLE_REPORT_DATA,
    )
    policy.appraise(verified)
    if as_json:
        click.echo(json.dumps(verified.to_dict(), indent=2))
        return
    click.echo("enklave demo: verifying a real SGX DCAP quote (Phala Network's dcap-qvl sample) with its")
    click.echo(f"Intel collateral, offline, as of {SAMPLE_TIME:%Y-%m-%d} (inside the collateral's window).")
    print_verified(verified)
    platform = f"{verified.platform_tcb_status.value} {list(verified.platform_advisory_ids)}"
    click.echo(f"  platform: {platform}, QE: {verified.qe_tcb_status.value}")
    click.echo(f"  root is the pinned Intel SGX Root CA: {'yes' if verified.intel_root else 'no'}")
