"""Verifying a peer's quote end to end: fetch its collateral, verify it, and keep what that needs together.

Every channel that trusts a peer through a quote (an RA-TLS certificate, an OHTTP gateway's key evidence, an
attestation request) does the same first steps: read from the quote which collateral it needs (FMSPC and PCK CA),
fetch it, and run DCAP verification; then it checks its own binding and appraises the result with a policy.
:func:`verify_with_collateral` is those first steps, and :class:`Appraiser` holds the parts a long-lived client
reuses across peers (collateral source, policy, a caching :class:`QuoteVerifier`, a clock).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from enklave.attestation.evidence import collateral_request
from enklave.attestation.policy import Policy
from enklave.attestation.sources import CollateralSource
from enklave.attestation.trust import TrustedRoot
from enklave.attestation.verified import VerifiedQuote
from enklave.attestation.verify import QuoteVerifier
from enklave.errors import UsageError
from enklave.sgx.quote import Quote

__all__ = ["Appraiser", "verify_with_collateral"]


def verify_with_collateral(
    quote: Quote, collateral_source: CollateralSource, verifier: QuoteVerifier, now: datetime
) -> VerifiedQuote:
    """Fetch the collateral ``quote`` needs from ``collateral_source`` and verify the quote with it at ``now``.

    No policy is applied. Raises :class:`~enklave.errors.InvalidQuote` when the quote names no usable PCK chain,
    what the source raises (:class:`~enklave.errors.CollateralUnavailable`, ...), and what
    :meth:`QuoteVerifier.verify` raises.
    """
    request = collateral_request(quote)
    collateral = collateral_source.fetch(request.fmspc, request.ca)
    return verifier.verify(quote, collateral, now=now)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Appraiser:
    """The parts of verifying peers that outlive one peer: collateral source, policy, quote verifier, clock.

    ``roots`` builds a :class:`QuoteVerifier` (default roots: Intel's) whose cache keeps collateral checks across
    peers; pass ``verifier`` instead to share one. ``clock`` gives the time evidence is checked at; inside an
    enclave it comes from the host, so a policy that matters should also pin a nonce. Thread-safe as far as its
    parts are (the verifier and the caching collateral source are).

    Raises :class:`UsageError` when both ``roots`` and ``verifier`` are given.
    """

    def __init__(
        self,
        *,
        collateral_source: CollateralSource,
        policy: Policy,
        roots: Sequence[TrustedRoot] | None = None,
        verifier: QuoteVerifier | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if verifier is not None and roots is not None:
            raise UsageError("pass roots or a verifier (which has its own roots), not both")
        self.collateral_source = collateral_source
        self.policy = policy
        self.quote_verifier = verifier if verifier is not None else QuoteVerifier(roots)
        self.clock = clock

    def verify_quote(self, quote: Quote) -> VerifiedQuote:
        """:func:`verify_with_collateral` with this appraiser's parts at the clock's time (no policy applied)."""
        return verify_with_collateral(quote, self.collateral_source, self.quote_verifier, self.clock())
