"""``enklave demo``: the quick start. A real SGX quote verified offline, then confidential inference end to end.

Part 1 verifies the real SGX quote shipped with enklave against its real Intel collateral and prints who it
attests. Part 2 (:mod:`enklave.cli._demo_inference`) starts the attestation service, the key broker and the
inference service in simulation on 127.0.0.1, uploads the onnx package's ResNet-50 encrypted, runs one attested,
end-to-end encrypted inference from :class:`enklave.inference.Client`, checks it against plain ONNX Runtime, and
stops everything it started, also when it fails or is interrupted.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from types import FrameType
from typing import Any

import click

from enklave._home import data_home
from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.policy import EnclavePolicy
from enklave.attestation.verified import VerifiedQuote
from enklave.attestation.verify import verify_quote
from enklave.cli._demo_inference import MODEL_FILE, InferenceDemoResult, run_inference_demo

__all__ = ["SAMPLE_REPORT_DATA", "SAMPLE_TIME", "demo", "verify_real_quote"]

# The shipped collateral is valid, all of it at once, from 2025-06-19T10:56:11Z to 2025-07-19T10:01:18Z.
SAMPLE_TIME = datetime(2025, 7, 1, tzinfo=UTC)
SAMPLE_REPORT_DATA = b"Hello, world!"


def verify_real_quote() -> VerifiedQuote:
    """Verify the real SGX quote shipped with enklave (Phala Network's dcap-qvl sample) against its shipped Intel
    collateral as of :data:`SAMPLE_TIME`, and appraise it: its MRENCLAVE, the report data it bound, and the
    platform's TCB statuses accepted explicitly. Raises a VerificationError when a check fails."""
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
    return verified


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _terminate_stops_cleanly() -> Iterator[None]:
    """Make SIGTERM unwind like Ctrl-C while the demo runs, so that what it started is stopped either way.

    Signal handlers belong to the main thread; elsewhere (an embedding application) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary instead of the text report.")
def demo(as_json: bool) -> None:
    """Verify a real SGX quote, then run attested, end-to-end encrypted inference on local services.

    \b
    1. The real SGX quote shipped with enklave, verified offline against its real Intel collateral as of
       2025-07-01 (inside the collateral's validity window).
    2. In simulation, on 127.0.0.1 ephemeral ports, with state in a temporary directory and the simulated
       SGX platform in $ENKLAVE_HOME (set up on first use): the attestation service, the key broker and the
       inference service. The key broker releases the inference enclave's HPKE key seed only after the
       attestation service attested that enclave. A client attests the inference enclave (DCAP, fresh
       nonce, a policy pinning its MRENCLAVE, simulated evidence allowed), uploads the onnx package's
       ResNet-50 encrypted with a fresh AES-256-GCM key as the model owner, hands the key to the enclave
       inside the encryption, and runs one inference whose output must equal plain ONNX Runtime's.
    Everything started is stopped at the end, on an error and on Ctrl-C.
    """
    started = time.perf_counter()
    verified = verify_real_quote()
    real_seconds = time.perf_counter() - started
    if not as_json:
        _print_real(verified, real_seconds)
        click.echo("")
        click.echo("2. Confidential inference, in simulation on this machine:")
    home = data_home()
    with _terminate_stops_cleanly():
        result = run_inference_demo(home, on_step=None if as_json else _print_step)
    total = time.perf_counter() - started
    if as_json:
        summary: dict[str, Any] = {
            "real_quote": verified.to_dict(),
            "real_quote_seconds": real_seconds,
            "inference": result.to_dict(),
            "total_seconds": total,
        }
        click.echo(json.dumps(summary, indent=2))
        return
    _print_inference(result, total)


def _print_real(verified: VerifiedQuote, seconds: float) -> None:
    click.echo(
        "1. A real SGX DCAP quote (Phala Network's dcap-qvl sample), verified offline against its Intel "
        f"collateral as of {SAMPLE_TIME:%Y-%m-%d}: accepted ({seconds:.2f} s)"
    )
    click.echo(f"   MRENCLAVE  {verified.mr_enclave.hex()}")
    click.echo(f"   MRSIGNER   {verified.mr_signer.hex()}")
    advisories = ", ".join(verified.platform_advisory_ids) or "none"
    root = "the pinned Intel SGX Root CA" if verified.intel_root else verified.root_name
    click.echo(
        f"   TCB        {verified.platform_tcb_status.value} ({advisories}), QE "
        f"{verified.qe_tcb_status.value}; root: {root}"
    )


def _print_step(step: str, seconds: float) -> None:
    click.echo(f"   {seconds:6.2f} s  {step}")


def _print_inference(result: InferenceDemoResult, total: float) -> None:
    who = result.attestation
    click.echo("")
    click.echo(f"   simulated SGX platform  {result.home}")
    click.echo(
        f"   services                attestation {result.urls['attestation']}, key broker {result.urls['kbs']}, "
        f"inference {result.urls['inference']}"
    )
    click.echo(
        "   enclave identity, as the client verified it (DCAP quote over a fresh nonce, MRENCLAVE pinned):"
    )
    click.echo(f"     MRENCLAVE             {who.mr_enclave.hex()}")
    click.echo(f"     MRSIGNER              {who.mr_signer.hex()}")
    click.echo(
        f"     ISV prod id {who.isv_prod_id}, ISV SVN {who.isv_svn}, TCB {who.tcb_status}, "
        f"simulated: {'yes' if who.simulated else 'no'}, debug: {'yes' if who.debug else 'no'}"
    )
    click.echo(
        "     (both differ from run to run: the demo signs with a key made for the run, and MRENCLAVE measures"
        " the key broker the enclave trusts, also made for the run)"
    )
    click.echo(
        "   HPKE seed               released by the key broker to that MRENCLAVE, on the attestation "
        "service's token"
    )
    click.echo(
        f"   model                   {MODEL_FILE.name} ({result.model_size} bytes, SHA-256 "
        f"{result.model_sha256[:16]}...), stored only encrypted ({result.container_size} bytes)"
    )
    click.echo(
        f"   output                  equals plain ONNX Runtime's (max |difference| {result.max_abs_diff:.3g}) "
        "and the reference output onnx ships"
    )
    top = ", ".join(f"class {index}: {probability:.4f}" for index, probability in result.top)
    click.echo(f"   top-5 classes           {top}")
    if result.uniform:
        click.echo(
            "                           (every class gets the same probability: onnx's light ResNet-50 has "
            "the real graph with constant weights)"
        )
    click.echo(
        f"   inference               {result.inference_seconds * 1000:.0f} ms, then "
        f"{result.warm_inference_seconds * 1000:.0f} ms warm (plain ONNX Runtime in process: "
        f"{result.plain_seconds * 1000:.0f} ms)"
    )
    click.echo(f"   total                   {total:.1f} s; everything the demo started is stopped")
