"""Queued signatures report the same failure as checking each one where the QVL's order meets it.

Verification queues its P-256 signature checks and runs them together (``_pki.PendingSignatures``), before it returns
and before it raises any other failure. These tests compare it with a reference run in which every signature is
checked at once, on evidence and collateral with one or two faults: the error must be the same, type and message.
"""

from __future__ import annotations

import base64
import json
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest
from cryptography import x509

from certificates import PEM_CERTIFICATE, replace_certificate
from conftest import REAL_AFTER, REAL_INSIDE
from enklave.attestation import _pki
from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.verify import QuoteVerifier, verify_quote
from enklave.errors import CertificateChainError, EnklaveError, ExpiredError, SignatureError
from enklave.sgx.quote import QUOTE_HEADER_SIZE, Quote

# Mutated certificates make cryptography warn as it decodes them (a negative serial, a country name of another
# length); that is expected here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive"),
    pytest.mark.filterwarnings("ignore:Attribute's length must be"),
]

# The quote's fixed part: header, report body, signature data length, quote signature, attestation key,
# QE report, QE report signature; the QE auth data and the PCK chain follow.
_FIXED = QUOTE_HEADER_SIZE + 384 + 4 + 64 + 64 + 384 + 64


@contextmanager
def _checked_where_met() -> Iterator[None]:
    """Within the block, every queued signature is checked when it is queued (the reference order)."""
    original = _pki.PendingSignatures.add

    def immediately(self: _pki.PendingSignatures, key, signature, data, error) -> None:  # type: ignore[no-untyped-def]
        original(self, key, signature, data, error)
        self.check()

    _pki.PendingSignatures.add = immediately  # type: ignore[method-assign]
    try:
        yield
    finally:
        _pki.PendingSignatures.add = original  # type: ignore[method-assign]


Verify = Callable[..., object]


def _outcome(
    verify: Verify, quote: bytes, collateral: QuoteCollateral, now: datetime
) -> tuple[type[Exception], str] | object:
    try:
        verified = verify(quote, collateral, now=now)
    except EnklaveError as exc:
        return type(exc), str(exc)
    return verified.tcb_status.value  # type: ignore[attr-defined]


def _both(
    quote: bytes, collateral: QuoteCollateral, now: datetime, *, cached: bool = False
) -> tuple[object, object]:
    """The outcome with queued signatures and in the reference order, each with a fresh verifier (cached or not)."""

    def verify() -> Verify:
        return QuoteVerifier().verify if cached else verify_quote

    queued = _outcome(verify(), quote, collateral, now)
    with _checked_where_met():
        reference = _outcome(verify(), quote, collateral, now)
    return queued, reference


def _flip(data: bytes, offset: int, bit: int = 0x01) -> bytes:
    return data[:offset] + bytes([data[offset] ^ bit]) + data[offset + 1 :]


def _differences(
    cases: Iterable[tuple[object, bytes, QuoteCollateral]], now: datetime, *, cached: bool = False
) -> list[object]:
    differences = []
    for label, quote, collateral in cases:
        queued, reference = _both(quote, collateral, now, cached=cached)
        if queued != reference:
            differences.append((label, queued, reference))
    return differences


def test_queued_signatures_wait_for_check_and_the_reference_checks_at_once(real_quote: bytes) -> None:
    parsed = Quote.from_bytes(_flip(real_quote, QUOTE_HEADER_SIZE + 384 + 4 + 63))
    key = _pki.p256_key_from_raw("attestation key", parsed.attestation_key)

    def queue(pending: _pki.PendingSignatures) -> None:
        _pki.verify_raw_signature("quote", key, parsed.signature, parsed.signed_bytes, pending)

    pending = _pki.PendingSignatures()
    queue(pending)  # queued: nothing raised yet
    with pytest.raises(SignatureError, match="quote: signature does not verify"):
        pending.check()
    pending.check()  # the queue was emptied
    with _checked_where_met(), pytest.raises(SignatureError, match="quote: signature does not verify"):
        queue(_pki.PendingSignatures())


@pytest.mark.parametrize("raised", [ValueError("from the library"), ExpiredError("a later step")])
def test_any_exception_leaving_the_block_checks_the_queue_first(
    real_quote: bytes, raised: BaseException
) -> None:
    # A later step's error, or a library's ValueError on hostile input, gives way to a queued bad signature.
    parsed = Quote.from_bytes(_flip(real_quote, QUOTE_HEADER_SIZE + 384 + 4 + 63))
    key = _pki.p256_key_from_raw("attestation key", parsed.attestation_key)

    def queue_then_raise(exception: BaseException) -> None:
        with _pki.PendingSignatures() as pending:
            _pki.verify_raw_signature("quote", key, parsed.signature, parsed.signed_bytes, pending)
            raise exception

    with pytest.raises(SignatureError, match="quote: signature does not verify") as caught:
        queue_then_raise(raised)
    assert str(raised) not in "".join(traceback.format_exception(caught.value))
    # An interrupt is not a verification failure: it leaves at once, without checking anything.
    with pytest.raises(KeyboardInterrupt):
        queue_then_raise(KeyboardInterrupt())


@pytest.mark.parametrize(
    ("now", "bits", "cached"),
    [(REAL_INSIDE, (0x01, 0x80), False), (REAL_INSIDE, (0x01,), True), (REAL_AFTER, (0x01,), False)],
    ids=["inside", "inside-cached", "after"],
)
def test_every_fault_in_the_quote_reports_the_reference_failure(
    real_quote: bytes, real_collateral: QuoteCollateral, now: datetime, bits: tuple[int, ...], cached: bool
) -> None:
    # A flipped bit in every byte of the fixed part and in every 13th byte of the QE auth data and the PEM chain:
    # many fail a signature and a later check at once (a QE report field fails both its signature and the QE
    # identity).
    offsets = [*range(_FIXED), *range(_FIXED, len(real_quote), 13)]
    cases = ((offset, _flip(real_quote, offset, bit), real_collateral) for offset in offsets for bit in bits)
    assert _differences(cases, now, cached=cached) == []


@pytest.mark.parametrize("bit", [0x01, 0x80])
def test_every_fault_in_the_pck_leaf_reports_the_reference_failure(
    real_quote: bytes, real_collateral: QuoteCollateral, bit: int
) -> None:
    # Each byte of the PCK leaf's DER, written back as valid base64 of the same length: its issuance signature
    # fails, and often a later check too (its FMSPC or TCB components, its key for the QE report, its serial).
    size = len(base64.b64decode(PEM_CERTIFICATE.search(real_quote).group(2)))  # type: ignore[union-attr]
    cases = (
        (index, replace_certificate(real_quote, 0, lambda der, i=index: _flip(der, i, bit)), real_collateral)
        for index in range(size)
    )
    assert _differences(cases, REAL_INSIDE) == []


def test_a_forged_leaf_with_a_negative_serial_fails_its_signature(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    # The serial's first octet (DER offset 15) set to 0xc0 makes it negative: the revocation lookup would refuse it
    # with a ValueError, but the leaf's issuance signature comes first and fails.
    quote = replace_certificate(real_quote, 0, lambda der: der[:15] + b"\xc0" + der[16:])
    for cached in (False, True):
        queued, reference = _both(quote, real_collateral, REAL_INSIDE, cached=cached)
        assert queued == reference
        assert queued[0] is CertificateChainError  # type: ignore[index]
        assert "bad signature" in queued[1]  # type: ignore[index]


def test_a_negative_serial_is_refused_before_the_revocation_lookup(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    # Under a root of one's own, a validly signed certificate could carry one; the library's lookup would raise
    # ValueError on it.
    der = base64.b64decode(PEM_CERTIFICATE.search(real_quote).group(2))  # type: ignore[union-attr]
    leaf = x509.load_der_x509_certificate(der[:15] + b"\xc0" + der[16:])
    with pytest.raises(CertificateChainError, match="PCK certificate has a negative serial number"):
        _pki.check_not_revoked("PCK certificate", leaf, real_collateral.pck_crl)


@pytest.mark.parametrize(("chain", "index"), [("pck_crl_issuer_chain", 0), ("tcb_info_issuer_chain", 0)])
def test_every_fault_in_a_collateral_certificate_reports_the_reference_failure(
    real_quote: bytes, real_collateral_json: str, chain: str, index: int
) -> None:
    # The PCK CA (its issuance is checked in step 1, its key signs the PCK CRL and the leaf) and the TCB signing
    # certificate (step 3), every 5th byte of their DER; collateral that no longer loads is skipped.
    document = json.loads(real_collateral_json)
    text = document[chain].encode()
    size = len(base64.b64decode(list(PEM_CERTIFICATE.finditer(text))[index].group(2)))
    cases = []
    for offset in range(0, size, 5):
        document[chain] = replace_certificate(text, index, lambda der, i=offset: _flip(der, i)).decode()
        try:
            collateral = QuoteCollateral.from_json(json.dumps(document))
        except EnklaveError:
            continue
        cases.append((offset, real_quote, collateral))
    assert len(cases) > size // 10
    assert _differences(cases, REAL_AFTER) == []


def _with_flipped_signature(collateral_json: str, field: str) -> QuoteCollateral:
    """The collateral with the last byte of a hex field changed: inside the signature's s for a CRL's DER, and
    the signature itself for the TCB info and QE identity signatures."""
    document = json.loads(collateral_json)
    value = bytes.fromhex(document[field])
    document[field] = _flip(value, len(value) - 1).hex()
    return QuoteCollateral.from_json(json.dumps(document))


@pytest.mark.parametrize("field", ["root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature"])
def test_a_bad_collateral_signature_comes_before_a_later_expiry(
    real_quote: bytes, real_collateral_json: str, field: str
) -> None:
    # The CRLs' signatures (step 2), the TCB info's and the QE identity's (step 3) fail before the TCB info's
    # next update (step 3, after its signature) passed at REAL_AFTER; the expiry is not even the error's context.
    collateral = _with_flipped_signature(real_collateral_json, field)
    queued, reference = _both(real_quote, collateral, REAL_AFTER)
    assert queued == reference
    assert queued[0] is SignatureError  # type: ignore[index]
    with pytest.raises(SignatureError) as caught:
        verify_quote(real_quote, collateral, now=REAL_AFTER)
    assert "expired" not in "".join(traceback.format_exception(caught.value))


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
