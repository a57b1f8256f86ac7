"""enklave and the PyPI package dcap-qvl (Phala's Rust verifier) reach the same verdicts and statuses."""

from __future__ import annotations

from datetime import UTC, datetime

import dcap_qvl
import pytest

from conftest import REAL_AFTER, REAL_INSIDE, asset
from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.verify import QuoteVerifier
from enklave.errors import EnklaveError


def _dcap_qvl(quote: bytes, collateral_json: str, now: datetime) -> tuple[str, list[str]] | None:
    """dcap-qvl's status and advisories, or None when it rejects the quote."""
    collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    try:
        report = dcap_qvl.verify(quote, collateral, int(now.timestamp()))
    except ValueError:
        return None
    return report.status, sorted(report.advisory_ids)


def _enklave(
    verifier: QuoteVerifier, quote: bytes, collateral: QuoteCollateral, now: datetime
) -> tuple[str, list[str]] | None:
    try:
        verified = verifier.verify(quote, collateral, now=now)
    except EnklaveError:
        return None
    return verified.tcb_status.value, sorted(verified.advisory_ids)


@pytest.mark.parametrize(
    "now",
    [REAL_INSIDE, datetime(2025, 6, 20, tzinfo=UTC), datetime(2025, 7, 19, tzinfo=UTC), REAL_AFTER,
     datetime(2025, 8, 1, tzinfo=UTC), datetime(2025, 6, 1, tzinfo=UTC)],
)  # fmt: skip
def test_same_verdict_on_the_real_quote(
    real_quote: bytes, real_collateral_json: str, real_collateral: QuoteCollateral, now: datetime
) -> None:
    theirs = _dcap_qvl(real_quote, real_collateral_json, now)
    ours = _enklave(QuoteVerifier(cache_size=0), real_quote, real_collateral, now)
    assert ours == theirs
    if now == REAL_INSIDE:
        assert ours == ("ConfigurationAndSWHardeningNeeded", ["INTEL-SA-00289", "INTEL-SA-00615"])


def test_same_verdict_on_the_set_with_an_expired_crl(
    mobilecoin_quote: bytes, mobilecoin_collateral: QuoteCollateral
) -> None:
    collateral_json = asset("mobilecoin-attestation", "derived", "dcap_qvl_collateral.json").decode()
    for now in (datetime(2023, 7, 20, tzinfo=UTC), datetime(2023, 5, 1, tzinfo=UTC)):
        theirs = _dcap_qvl(mobilecoin_quote, collateral_json, now)
        ours = _enklave(QuoteVerifier(), mobilecoin_quote, mobilecoin_collateral, now)
        assert ours is None
        assert ours == theirs


def test_same_verdict_on_mutated_quotes(
    real_quote: bytes, real_collateral_json: str, real_collateral: QuoteCollateral
) -> None:
    verifier = QuoteVerifier()
    disagreements = []
    # Every 5th byte of header, body and signature data, and a sample of the PCK leaf and PCK CA certificates.
    # The root certificate that ends the quote's chain is left out: dcap-qvl ignores it and uses its own root,
    # while enklave, like Intel's QVL, requires it to be the trusted root (test below).
    root_start = _root_certificate_offset(real_quote)
    offsets = [*range(0, 1046, 5), *range(1046, root_start, 41)]
    for offset in offsets:
        tampered = bytearray(real_quote)
        tampered[offset] ^= 0x04
        ours = _enklave(verifier, bytes(tampered), real_collateral, REAL_INSIDE)
        theirs = _dcap_qvl(bytes(tampered), real_collateral_json, REAL_INSIDE)
        if ours != theirs:
            disagreements.append((offset, ours, theirs))
    assert disagreements == []


def _root_certificate_offset(quote: bytes) -> int:
    marker = b"-----BEGIN CERTIFICATE-----"
    first = quote.index(marker)
    second = quote.index(marker, first + 1)
    return quote.index(marker, second + 1)


def test_enklave_is_stricter_on_the_chains_root_certificate(
    real_quote: bytes, real_collateral_json: str, real_collateral: QuoteCollateral
) -> None:
    root_start = _root_certificate_offset(real_quote)
    tampered = bytearray(real_quote)
    tampered[root_start + 138] ^= 0x04  # inside the root certificate's body
    assert _dcap_qvl(bytes(tampered), real_collateral_json, REAL_INSIDE) is not None
    assert _enklave(QuoteVerifier(), bytes(tampered), real_collateral, REAL_INSIDE) is None
