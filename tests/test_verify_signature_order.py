"""Queued signatures report the same failure as checking each one where the QVL's order meets it.

Verification queues its P-256 signature checks and runs them together (``_pki.Signatures``), before it returns
and before it raises any other failure. These tests compare it with a reference run in which every signature is
checked at once, on evidence and collateral with one or two faults: the error must be the same, type and message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest

from conftest import REAL_AFTER, REAL_INSIDE
from enklave.attestation import _pki
from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.verify import QuoteVerifier, verify_quote
from enklave.errors import EnklaveError, SignatureError
from enklave.sgx.quote import QUOTE_HEADER_SIZE, Quote

# The quote's fixed part: header, report body, signature data length, quote signature, attestation key,
# QE report, QE report signature; the QE auth data and the PCK chain follow.
_FIXED = QUOTE_HEADER_SIZE + 384 + 4 + 64 + 64 + 384 + 64


@contextmanager
def _checked_where_met() -> Iterator[None]:
    """Within the block, every queued signature is checked when it is queued (the reference order)."""
    original = _pki.Signatures.add

    def immediately(self: _pki.Signatures, key, signature, data, error) -> None:  # type: ignore[no-untyped-def]
        original(self, key, signature, data, error)
        self.check()

    _pki.Signatures.add = immediately  # type: ignore[method-assign]
    try:
        yield
    finally:
        _pki.Signatures.add = original  # type: ignore[method-assign]


def _outcome(quote: bytes, collateral: QuoteCollateral, now: datetime) -> tuple[type[Exception], str] | str:
    try:
        verified = verify_quote(quote, collateral, now=now)
    except EnklaveError as exc:
        return type(exc), str(exc)
    return verified.tcb_status.value


def _both(quote: bytes, collateral: QuoteCollateral, now: datetime) -> tuple[object, object]:
    queued = _outcome(quote, collateral, now)
    with _checked_where_met():
        reference = _outcome(quote, collateral, now)
    return queued, reference


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def test_queued_signatures_wait_for_check_and_the_reference_checks_at_once(real_quote: bytes) -> None:
    parsed = Quote.from_bytes(_flip(real_quote, QUOTE_HEADER_SIZE + 384 + 4 + 63))
    key = _pki.p256_key_from_raw("attestation key", parsed.attestation_key)

    def queue(pending: _pki.Signatures) -> None:
        _pki.verify_raw_signature("quote", key, parsed.signature, parsed.signed_bytes, pending)

    pending = _pki.Signatures()
    queue(pending)  # queued: nothing raised yet
    with pytest.raises(SignatureError, match="quote: signature does not verify"):
        pending.check()
    pending.check()  # the queue was emptied
    with _checked_where_met(), pytest.raises(SignatureError, match="quote: signature does not verify"):
        queue(_pki.Signatures())


@pytest.mark.parametrize("now", [REAL_INSIDE, REAL_AFTER], ids=["inside", "after"])
def test_every_fault_in_the_signed_quote_reports_the_reference_failure(
    real_quote: bytes, real_collateral: QuoteCollateral, now: datetime
) -> None:
    # One flipped bit in the fixed part (every byte) and in the QE auth data and PCK chain (every 13th byte):
    # many fail a signature and a later check at once (a QE report field fails both its signature and the QE
    # identity; a PCK leaf byte fails its issuance and often the FMSPC or TCB match).
    offsets = [*range(_FIXED), *range(_FIXED, len(real_quote), 13)]
    differences = []
    for offset in offsets:
        queued, reference = _both(_flip(real_quote, offset), real_collateral, now)
        if queued != reference:
            differences.append((offset, queued, reference))
    assert differences == []


def _with_flipped_signature(collateral_json: str, field: str) -> QuoteCollateral:
    """The collateral with the last byte of a CRL's DER (inside its signature's s) changed."""
    document = json.loads(collateral_json)
    der = bytes.fromhex(document[field])
    document[field] = _flip(der, len(der) - 1).hex()
    return QuoteCollateral.from_json(json.dumps(document))


@pytest.mark.parametrize("field", ["root_ca_crl", "pck_crl"])
def test_a_bad_crl_signature_comes_before_a_later_expiry(
    real_quote: bytes, real_collateral_json: str, field: str
) -> None:
    # Step 2 (the CRL's signature) fails before step 3 (the TCB info's next update, passed at REAL_AFTER).
    collateral = _with_flipped_signature(real_collateral_json, field)
    queued, reference = _both(real_quote, collateral, REAL_AFTER)
    assert queued == reference
    assert queued[0] is SignatureError  # type: ignore[index]


def test_a_bad_qe_report_signature_comes_before_the_qe_identity_mismatch(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    # The QE report's MRSIGNER (offset 128 of the QE report) changed: the PCK key's signature over the QE report
    # (step 6) fails, and so would the QE identity (step 8).
    qe_report = QUOTE_HEADER_SIZE + 384 + 4 + 64 + 64
    bad = _flip(real_quote, qe_report + 128)
    with pytest.raises(SignatureError, match="QE report: signature does not verify"):
        verify_quote(bad, real_collateral, now=REAL_INSIDE)


def test_a_cached_check_is_kept_only_once_its_signatures_verified(
    real_quote: bytes, real_collateral_json: str
) -> None:
    collateral = _with_flipped_signature(real_collateral_json, "root_ca_crl")
    verifier = QuoteVerifier()
    for _ in range(2):
        with pytest.raises(SignatureError, match="root CA CRL"):
            verifier.verify(real_quote, collateral, now=REAL_INSIDE)


def test_no_result_leaves_a_verification_whose_last_signature_fails(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    # The quote signature is the last one queued and nothing else fails: the verification must still refuse.
    signature = QUOTE_HEADER_SIZE + 384 + 4
    bad = _flip(real_quote, signature + 63)
    assert Quote.from_bytes(bad).body == Quote.from_bytes(real_quote).body
    for verify in (verify_quote, QuoteVerifier().verify):
        with pytest.raises(SignatureError, match="quote: signature does not verify"):
            verify(bad, real_collateral, now=REAL_INSIDE)
