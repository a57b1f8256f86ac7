"""Quote verification throughput: enklave against dcap-qvl (Rust, from PyPI) on the same real quote.

Runs both in the same process and compares them in alternating bursts: for each enklave configuration, a round
runs a burst of dcap-qvl calls, then a burst of enklave calls, and so on for about twice ``--seconds``, and
takes the ratio of the two rates. Bursts of a fraction of a second put both sides through the same state of the
machine, so the drift of a shared VM (10% or more from one second to the next) cancels out of each ratio.

Each burst starts with ``--warmup`` untimed calls: right after the other library ran, the first calls are slower
(the other one's code and data took the CPU caches), and enklave's Python takes about ten calls to get back to its
steady rate where dcap-qvl takes one. A verifier serving many quotes runs in that steady state, which is what the
rates and ratios describe. The script also prints the median time of the first call after a switch, for both.

It prints the median verifications per second and, for each configuration, the median of its per-round ratios
to dcap-qvl with their range:

* enklave, nothing cached: ``verify_quote`` with a parsed collateral object; every certificate, CRL, TCB info
  and QE identity signature and validity window is checked on every call.
* enklave, nothing cached, collateral parsed from JSON on every call (the JSON text is what dcap-qvl's
  collateral object holds, so this is the strictest comparison).
* enklave, cached: one ``QuoteVerifier`` keeps the quote-independent checks while the collateral stays valid,
  as a verifier serving many quotes would; each call still parses the quote and checks the QE report
  signature, the QE binding, the QE identity and the quote signature.

The dcap-qvl rate shown is the median over the rounds of every configuration, and each ratio the median of its
own per-round ratios, so a ratio is not the quotient of the two rates shown.

Usage: python benchmarks/verify_quote.py [--seconds 1] [--rounds 5] [--burst 100] [--warmup 20] [--json]
(``--burst 20 --warmup 0`` is the method used until 2026-11-29)
(needs the test extras, for dcap-qvl)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dcap_qvl

from enklave.attestation import QuoteCollateral, QuoteVerifier, verify_quote

ASSETS = Path(__file__).resolve().parent.parent / "tests" / "assets" / "phala-dcap-qvl"
NOW = datetime(2025, 7, 1, tzinfo=UTC)


@dataclass
class _Side:
    """One side's timed calls, and the durations of the first call of each burst (right after a switch)."""

    function: Callable[[], object]
    calls: int = 0
    spent: float = 0.0
    first_calls: list[float] = field(default_factory=list)

    def burst(self, warmup: int, burst: int) -> None:
        clock = time.perf_counter
        function = self.function
        for index in range(warmup):
            start = clock()
            function()
            if index == 0:
                self.first_calls.append(clock() - start)
        start = clock()
        for _ in range(burst):
            function()
        self.spent += clock() - start
        self.calls += burst


def paired_rates(
    baseline: Callable[[], object], candidate: Callable[[], object], seconds: float, burst: int, warmup: int
) -> tuple[_Side, _Side]:
    """``baseline`` and ``candidate`` timed in alternating bursts of ``burst`` calls each, each burst after
    ``warmup`` untimed calls, for about ``2 * seconds`` of timed calls in all."""
    sides = _Side(baseline), _Side(candidate)
    while sides[0].spent + sides[1].spent < 2 * seconds:
        for side in sides:
            side.burst(warmup, burst)
    return sides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="each round times about twice this long per configuration, both sides together (default 1)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of measurements (default 5)")
    parser.add_argument("--burst", type=int, default=100, help="timed calls per burst (default 100)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=20,
        help="untimed calls before each burst, after a switch (default 20; 0 times every call, as until "
        "2026-11-29, and leaves the first-call column out)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rounds < 1 or args.burst < 1 or args.warmup < 0:
        parser.error("--seconds must be positive, --rounds and --burst at least 1, --warmup at least 0")

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

    def baseline() -> object:
        return dcap_qvl.verify(quote, theirs_collateral, now_secs)

    configurations: dict[str, Callable[[], object]] = {
        "enklave_uncached": lambda: verify_quote(quote, ours_collateral, now=NOW),
        "enklave_uncached_with_json_parse": lambda: verify_quote(
            quote, QuoteCollateral.from_json(collateral_json), now=NOW
        ),
        "enklave_cached": lambda: verifier.verify(quote, ours_collateral, now=NOW),
    }
    baseline_rates: list[float] = []
    rates: dict[str, list[float]] = {name: [] for name in configurations}
    spread: dict[str, list[float]] = {name: [] for name in configurations}
    first_calls: dict[str, list[float]] = {"dcap_qvl": [], **{name: [] for name in configurations}}
    for _ in range(args.rounds):
        for name, function in configurations.items():
            theirs, ours = paired_rates(baseline, function, args.seconds, args.burst, args.warmup)
            theirs_rate, ours_rate = theirs.calls / theirs.spent, ours.calls / ours.spent
            baseline_rates.append(theirs_rate)
            rates[name].append(ours_rate)
            spread[name].append(ours_rate / theirs_rate)
            first_calls["dcap_qvl"] += theirs.first_calls
            first_calls[name] += ours.first_calls
    figures = {"dcap_qvl": statistics.median(baseline_rates)}
    figures.update((name, statistics.median(values)) for name, values in rates.items())
    ratios = {name: statistics.median(values) for name, values in spread.items()}
    # Microseconds of the first call after the other library ran, and of a call in the steady state.
    first: dict[str, float | None] = {
        name: statistics.median(values) * 1e6 if values else None for name, values in first_calls.items()
    }
    steady = {name: 1e6 / rate for name, rate in figures.items()}
    if args.json:
        print(
            json.dumps(
                {
                    "per_second": figures,
                    "ratio_to_dcap_qvl": ratios,
                    "ratio_per_round": spread,
                    "first_call_after_switch_us": first,
                    "steady_call_us": steady,
                },
                indent=2,
            )
        )
        return
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"dcap-qvl {dcap_qvl.__version__ if hasattr(dcap_qvl, '__version__') else '?'}, "
          f"{args.rounds} rounds of 2 x {args.seconds:g} s per configuration, "
          f"bursts of {args.burst} after {args.warmup} untimed")  # fmt: skip
    print(
        f"{'configuration':<36}{'verifications/s':>16}{'ratio':>8}{'range':>14}{'steady µs':>11}{'first µs':>10}"
    )
    print(f"{'dcap-qvl verify':<36}{figures['dcap_qvl']:>16.0f}{1.0:>8.2f}{'':>14}"
          f"{steady['dcap_qvl']:>11.0f}{_microseconds(first['dcap_qvl']):>10}")  # fmt: skip
    for name, value in ratios.items():
        low, high = min(spread[name]), max(spread[name])
        print(f"{name.replace('_', ' '):<36}{figures[name]:>16.0f}{value:>8.2f}{f'{low:.2f}-{high:.2f}':>14}"
              f"{steady[name]:>11.0f}{_microseconds(first[name]):>10}")  # fmt: skip


def _microseconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


if __name__ == "__main__":
    main()
