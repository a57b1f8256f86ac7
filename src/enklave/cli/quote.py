"""``enklave quote show`` and ``enklave quote verify``."""

from __future__ import annotations

import json
from typing import Any

import click

from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.evidence import collateral_request
from enklave.attestation.policy import EnclavePolicy
from enklave.attestation.trust import TrustedRoot, intel_sgx_root
from enklave.attestation.verified import VerifiedQuote
from enklave.attestation.verify import verify_quote
from enklave.cli._errors import EXIT_VERIFICATION, fail, hint
from enklave.cli._io import decode_evidence, parse_time, read_file
from enklave.cli._policy import identity_arguments, min_tcb_evaluation_data_number_option
from enklave.errors import InvalidQuote, PolicyError, UsageError, VerificationError
from enklave.platform.simulated import SimulatedCollateralSource, simulated_root
from enklave.sgx.oe import unwrap_evidence
from enklave.sgx.quote import Quote
from enklave.sgx.views import quote_to_dict


@click.group()
def quote() -> None:
    """Read and verify SGX quotes and Open Enclave reports."""


def load_quote(path: str) -> tuple[str, Quote]:
    """Read a quote file (binary, hex or base64; raw quote or Open Enclave report) and parse it."""
    data = read_file(path, what="quote file")
    decoded = decode_evidence(data)
    try:
        evidence_format, raw = unwrap_evidence(decoded)
    except InvalidQuote as exc:
        if decoded is data:
            raise
        # Offsets and first bytes in the message are those of the decoded text, not of the file: say so.
        raise InvalidQuote(
            f"{path} holds text, decoded as hex or base64 into {len(decoded)} bytes: {exc}"
        ) from exc
    return evidence_format.value, Quote.from_bytes(raw)


def _print_tree(value: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                click.echo(f"{pad}{key}:")
                _print_tree(item, indent + 1)
            else:
                click.echo(f"{pad}{key}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                _print_tree(item, indent + 1)
            else:
                click.echo(f"{pad}- {_scalar(item)}")


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return str(value)


@quote.command("show")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the fields as one JSON object.")
def show(file: str, as_json: bool) -> None:
    """Print every field of a quote or Open Enclave report in FILE ('-' for standard input).

    FILE may be binary, hexadecimal or base64; a raw SGX quote (v3, v4) or one wrapped in an Open Enclave
    report header or attestation header.
    """
    evidence_format, parsed = load_quote(file)
    view = {"evidence_format": evidence_format, **quote_to_dict(parsed)}
    if as_json:
        click.echo(json.dumps(view, indent=2))
    else:
        _print_tree(view)


@quote.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--collateral",
    "collateral_path",
    type=click.Path(dir_okay=False),
    help="Collateral JSON (dcap-qvl QuoteCollateralV3 format, as `enklave collateral fetch` writes). Required"
    " unless --simulated.",
)
@click.option(
    "--simulated",
    is_flag=True,
    help="Trust this installation's simulated SGX root (ENKLAVE_HOME) instead of Intel's, take its simulated"
    " collateral unless --collateral is given, and accept simulated evidence. Development only.",
)
@click.option("--at", "at", metavar="ISO-8601", help="Verify as of this time (default: now).")
@click.option(
    "--root",
    "roots",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Trust this root CA (PEM or DER) instead of the embedded Intel SGX Root CA. Repeatable.",
)
@click.option(
    "--mrenclave", multiple=True, metavar="HEX", help="Accept only this MRENCLAVE (repeat: one of)."
)
@click.option("--mrsigner", multiple=True, metavar="HEX", help="Accept only this MRSIGNER (repeat: one of).")
@click.option("--isv-prod-id", type=click.IntRange(0, 0xFFFF), help="Required ISV product id.")
@click.option("--min-isv-svn", type=click.IntRange(0, 0xFFFF), help="Minimum ISV security version.")
@click.option("--allow-debug", is_flag=True, help="Accept debug enclaves (never in production).")
@click.option(
    "--accept-status",
    "accept_status",
    multiple=True,
    metavar="STATUS",
    help="Accepted TCB status (repeatable; default UpToDate and SWHardeningNeeded).",
)
@click.option("--reject-advisory", multiple=True, metavar="ID", help="Reject if this advisory applies.")
@min_tcb_evaluation_data_number_option
@click.option("--report-data", metavar="HEX", help="Required report data (zero-padded to 64 bytes).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_context
def verify(
    ctx: click.Context,
    file: str,
    collateral_path: str | None,
    simulated: bool,
    at: str | None,
    roots: tuple[str, ...],
    mrenclave: tuple[str, ...],
    mrsigner: tuple[str, ...],
    isv_prod_id: int | None,
    min_isv_svn: int | None,
    allow_debug: bool,
    accept_status: tuple[str, ...],
    reject_advisory: tuple[str, ...],
    min_tcb_eval: int | None,
    report_data: str | None,
    as_json: bool,
) -> None:
    """Verify the quote in FILE with its collateral (DCAP, as Intel's QVL), then appraise it.

    Exits 0 only when verification and the appraisal policy both pass; otherwise prints the reason.
    """
    # Options first: a usage error is reported before any file is read.
    if collateral_path is None and not simulated:
        raise UsageError("--collateral is required (or --simulated for a quote from the simulated platform)")
    if simulated and roots:
        raise UsageError("--simulated and --root are exclusive: --simulated trusts the simulated root")
    policy_args = identity_arguments(
        mrenclave=mrenclave,
        mrsigner=mrsigner,
        isv_prod_id=isv_prod_id,
        min_isv_svn=min_isv_svn,
        min_tcb_eval=min_tcb_eval,
        allow_debug=allow_debug,
        allow_simulated=simulated,
    )
    if accept_status:
        policy_args["accepted_tcb_statuses"] = accept_status
    if reject_advisory:
        policy_args["rejected_advisory_ids"] = reject_advisory
    if report_data is not None:
        try:
            policy_args["report_data"] = bytes.fromhex(report_data)
        except ValueError as exc:
            raise UsageError(f"--report-data must be hexadecimal: {exc}") from exc
    policy = EnclavePolicy(**policy_args)
    now = parse_time(at)
    _, parsed = load_quote(file)
    if collateral_path is not None:
        collateral = QuoteCollateral.from_json(read_file(collateral_path, what="collateral file"))
    else:
        request = collateral_request(parsed)
        collateral = SimulatedCollateralSource().fetch(request.fmspc, request.ca)
    if simulated:
        trusted = [simulated_root()]
    else:
        trusted = [TrustedRoot.from_pem(read_file(path, what="root certificate")) for path in roots] or [
            intel_sgx_root()
        ]

    verified: VerifiedQuote | None = None
    try:
        verified = verify_quote(parsed, collateral, now=now, roots=trusted)
        policy.appraise(verified)
    except VerificationError as exc:
        stage = "appraisal" if isinstance(exc, PolicyError) else "verification"
        if as_json:
            result = {"ok": False, "stage": stage, "error": type(exc).__name__, "reason": str(exc)}
            if verified is not None:
                result["quote"] = verified.to_dict()
            click.echo(json.dumps(result, indent=2))
        else:
            fail(f"{stage} failed: {exc}{hint(exc)}")
        ctx.exit(EXIT_VERIFICATION)
    if verified is None:  # pragma: no cover - verify_quote raises or returns
        ctx.exit(EXIT_VERIFICATION)
        return
    if policy.mr_enclave is None and policy.mr_signer is None:
        # The quote is genuine, but nothing said which enclave it had to come from: any enclave passes.
        click.echo(
            "enklave: warning: no --mrenclave or --mrsigner given, so any genuine enclave passes this policy",
            err=True,
        )
    if as_json:
        click.echo(json.dumps({"ok": True, "quote": verified.to_dict()}, indent=2))
    else:
        print_verified(verified)


def print_verified(verified: VerifiedQuote) -> None:
    """The human summary of a verified, accepted quote."""
    view = verified.to_dict()
    click.echo("OK: the quote verified and the policy accepted it")
    for key in ("mrenclave", "mrsigner", "isv_prod_id", "isv_svn", "debug", "report_data", "tcb_status",
                "advisory_ids", "qe_tcb_status", "fmspc", "collateral_expiry", "root"):  # fmt: skip
        click.echo(f"  {key}: {_scalar(view[key])}")
