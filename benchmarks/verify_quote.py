"""Quote verification throughput: enklave against dcap-qvl (Rust, from PyPI) on the same real quote.

Runs both in the same process, in rounds: each round measures dcap-qvl and then every enklave configuration for
a fixed time, so that a ratio compares figures taken seconds apart. It prints the median verifications per
second, and for each configuration the median of its per-round ratios to dcap-qvl with their range (a shared
2-core VM drifts by 10% or more between seconds):

* enklave, nothing cached: ``verify_quote`` with a parsed collateral object; every certificate, CRL, TCB info
  and QE identity signature and validity window is checked on every call.
* enklave, nothing cached, collateral parsed from JSON on every call (the JSON text is what dcap-qvl's
  collateral object holds, so this is the strictest comparison).
* enklave, cached: one ``QuoteVerifier`` keeps the quote-independent checks while the collateral stays valid,
  as a verifier serving many quotes would; each call still parses the quote and checks the QE report
  signature, the QE binding, the QE identity and the quote signature.

Usage: python benchmarks/verify_quote.py [--seconds 1] [--rounds 5] [--json]   (needs the test extras: dcap-qvl)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
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
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement (default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of measurements (default 5)")
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
    configurations: dict[str, Callable[[], object]] = {
        "dcap_qvl": lambda: dcap_qvl.verify(quote, theirs_collateral, now_secs),
        "enklave_uncached": lambda: verify_quote(quote, ours_collateral, now=NOW),
        "enklave_uncached_with_json_parse": lambda: verify_quote(
            quote, QuoteCollateral.from_json(collateral_json), now=NOW
        ),
        "enklave_cached": lambda: verifier.verify(quote, ours_collateral, now=NOW),
    }
    rounds: list[dict[str, float]] = [
        {name: rate(function, args.seconds) for name, function in configurations.items()}
        for _ in range(max(1, args.rounds))
    ]
    figures = {name: statistics.median(run[name] for run in rounds) for name in configurations}
    spread = {
        name: [run[name] / run["dcap_qvl"] for run in rounds] for name in configurations if name != "dcap_qvl"
    }
    ratios = {name: statistics.median(values) for name, values in spread.items()}
    if args.json:
        print(
            json.dumps(
                {"per_second": figures, "ratio_to_dcap_qvl": ratios, "ratio_per_round": spread}, indent=2
            )
        )
        return
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"dcap-qvl {dcap_qvl.__version__ if hasattr(dcap_qvl, '__version__') else '?'}, "
          f"{len(rounds)} rounds of {args.seconds:g} s")  # fmt: skip
    print(f"{'configuration':<36}{'verifications/s':>16}{'ratio':>8}{'range':>14}")
    print(f"{'dcap-qvl verify':<36}{figures['dcap_qvl']:>16.0f}{1.0:>8.2f}")
    for name, value in ratios.items():
        low, high = min(spread[name]), max(spread[name])
        print(f"{name.replace('_', ' '):<36}{figures[name]:>16.0f}{value:>8.2f}{f'{low:.2f}-{high:.2f}':>14}")


if __name__ == "__main__":
    main()
