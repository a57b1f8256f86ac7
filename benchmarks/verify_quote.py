"""Quote verification throughput: enklave against dcap-qvl (Rust, from PyPI) on the same real quote.

Runs both in the same process and the same run, each for a fixed time, and prints verifications per second
and enklave's ratio to dcap-qvl:

* enklave, nothing cached: ``verify_quote`` with a parsed collateral object; every certificate, CRL, TCB info
  and QE identity signature and validity window is checked on every call.
* enklave, nothing cached, collateral parsed from JSON on every call (the JSON text is what dcap-qvl's
  collateral object holds, so this is the strictest comparison).
* enklave, cached: one ``QuoteVerifier`` keeps the quote-independent checks while the collateral stays valid,
  as a verifier serving many quotes would; each call still parses the quote and checks the QE report
  signature, the QE binding, the QE identity and the quote signature.

Usage: python benchmarks/verify_quote.py [--seconds 3] [--json]   (needs the test extras: dcap-qvl)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dcap_qvl

from enklave.attestation import QuoteCollateral, QuoteVerifier, verify_quote

ASSETS = Path(__file__).resolve().parent.parent / "tests" / "assets" / "phala-dcap-qvl"
NOW = datetime(2025, 7, 1, tzinfo=UTC)


def rate(function: Callable[[], object], seconds: float) -> float:
    """Calls per second over about ``seconds`` (after a short warm-up)."""
    for _ in range(20):
        function()
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            function()
        calls += 50
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    quote = (ASSETS / "sgx_quote").read_bytes()
    collateral_json = (ASSETS / "sgx_quote_collateral.json").read_text()
    theirs_collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    ours_collateral = QuoteCollateral.from_json(collateral_json)
    now_secs = int(NOW.timestamp())

    # Both must agree before their speed means anything.
    theirs = dcap_qvl.verify(quote, theirs_collateral, now_secs)
    ours = verify_quote(quote, ours_collateral, now=NOW)
    if (theirs.status, sorted(theirs.advisory_ids)) != (ours.tcb_status.value, list(ours.advisory_ids)):
        raise SystemExit(f"verdicts differ: dcap-qvl {theirs.status}, enklave {ours.tcb_status.value}")

    verifier = QuoteVerifier()
    figures = {
        "dcap_qvl": rate(lambda: dcap_qvl.verify(quote, theirs_collateral, now_secs), args.seconds),
        "enklave_uncached": rate(lambda: verify_quote(quote, ours_collateral, now=NOW), args.seconds),
        "enklave_uncached_with_json_parse": rate(
            lambda: verify_quote(quote, QuoteCollateral.from_json(collateral_json), now=NOW), args.seconds
        ),
        "enklave_cached": rate(lambda: verifier.verify(quote, ours_collateral, now=NOW), args.seconds),
    }
    base = figures["dcap_qvl"]
    ratios = {name: value / base for name, value in figures.items() if name != "dcap_qvl"}
    if args.json:
        print(json.dumps({"per_second": figures, "ratio_to_dcap_qvl": ratios}, indent=2))
        return
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"dcap-qvl {dcap_qvl.__version__ if hasattr(dcap_qvl, '__version__') else '?'}")  # fmt: skip
    print(f"{'configuration':<36}{'verifications/s':>16}{'ratio':>8}")
    print(f"{'dcap-qvl verify':<36}{base:>16.0f}{1.0:>8.2f}")
    for name, value in figures.items():
        if name != "dcap_qvl":
            print(f"{name.replace('_', ' '):<36}{value:>16.0f}{ratios[name]:>8.2f}")


if __name__ == "__main__":
    main()
