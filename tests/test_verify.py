"""DCAP verification against real and synthetic vectors, expiry, trust roots, caching and mutations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conftest import INTEL_SAMPLE_INSIDE, REAL_AFTER, REAL_BEFORE, REAL_INSIDE
from enklave.attestation.collateral import QuoteCollateral, TcbStatus
from enklave.attestation.policy import EnclavePolicy
from enklave.attestation.trust import TrustedRoot, intel_sgx_root
from enklave.attestation.verified import VerifiedQuote
from enklave.attestation.verify import QuoteVerifier, verify_quote
from enklave.errors import (
    EnklaveError,
    ExpiredError,
    InvalidQuote,
    PolicyError,
    UntrustedRootError,
    UsageError,
    VerificationError,
)
from enklave.sgx.quote import Quote


def test_real_quote_verifies_inside_its_window(real_quote: bytes, real_collateral: QuoteCollateral) -> None:
    verified = verify_quote(real_quote, real_collateral, now=REAL_INSIDE)
    assert verified.tcb_status is TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED
    assert verified.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert verified.platform_tcb_status is TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED
    assert verified.qe_tcb_status is TcbStatus.UP_TO_DATE
    assert verified.fmspc == bytes.fromhex("00a067110000")
    assert verified.intel_root is True
    assert verified.simulated is False
    assert verified.report_data.rstrip(b"\0") == b"Hello, world!"
    assert verified.mr_enclave.hex() == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert not verified.debug
    # The earliest expiry is the TCB info's next update, the end of the window.
    assert verified.collateral_expiry == datetime(2025, 7, 19, 10, 1, 18, tzinfo=UTC)
    assert verified.verified_at == REAL_INSIDE


@pytest.mark.parametrize("now", [REAL_AFTER, datetime(2025, 8, 1, tzinfo=UTC)])
def test_real_quote_expires_just_after_its_window(
    real_quote: bytes, real_collateral: QuoteCollateral, now: datetime
) -> None:
    with pytest.raises(ExpiredError, match=r"expired at 2025-07-19T10:"):
        verify_quote(real_quote, real_collateral, now=now)


def test_real_quote_is_not_yet_valid_before_its_window(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    with pytest.raises(ExpiredError, match="not valid before 2025-06-19T10:56:11Z"):
        verify_quote(real_quote, real_collateral, now=REAL_BEFORE)


def test_window_edges_are_inclusive(real_quote: bytes, real_collateral: QuoteCollateral) -> None:
    verify_quote(real_quote, real_collateral, now=datetime(2025, 6, 19, 10, 56, 11, tzinfo=UTC))
    verify_quote(real_quote, real_collateral, now=datetime(2025, 7, 19, 10, 1, 18, tzinfo=UTC))


def test_intel_sample_verifies_with_its_test_root(
    intel_sample_quote: bytes, intel_sample_collateral: QuoteCollateral, intel_test_root: TrustedRoot
) -> None:
    verified = verify_quote(intel_sample_quote, intel_sample_collateral, now=INTEL_SAMPLE_INSIDE,
                            roots=[intel_test_root])  # fmt: skip
    assert verified.tcb_status is TcbStatus.UP_TO_DATE
    assert verified.qe_tcb_status is TcbStatus.UP_TO_DATE
    assert verified.advisory_ids == ()
    assert verified.intel_root is False
    assert verified.fmspc == bytes.fromhex("00707f000000")


def test_intel_sample_fails_without_its_test_root(
    intel_sample_quote: bytes, intel_sample_collateral: QuoteCollateral
) -> None:
    with pytest.raises(UntrustedRootError, match="untrusted root"):
        verify_quote(intel_sample_quote, intel_sample_collateral, now=INTEL_SAMPLE_INSIDE)


def test_real_quote_fails_when_only_the_test_root_is_trusted(
    real_quote: bytes, real_collateral: QuoteCollateral, intel_test_root: TrustedRoot
) -> None:
    with pytest.raises(UntrustedRootError):
        verify_quote(real_quote, real_collateral, now=REAL_INSIDE, roots=[intel_test_root])


@pytest.mark.parametrize(
    "now",
    [datetime(2023, 5, 1, tzinfo=UTC), datetime(2023, 5, 21, tzinfo=UTC), datetime(2023, 7, 13, tzinfo=UTC),
     datetime(2023, 8, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)],
)  # fmt: skip
def test_set_with_expired_crl_is_rejected_at_any_time(
    mobilecoin_quote: bytes, mobilecoin_collateral: QuoteCollateral, now: datetime
) -> None:
    with pytest.raises(ExpiredError):
        verify_quote(mobilecoin_quote, mobilecoin_collateral, now=now)


def test_naive_time_is_a_usage_error(real_quote: bytes, real_collateral: QuoteCollateral) -> None:
    with pytest.raises(UsageError):
        verify_quote(real_quote, real_collateral, now=datetime(2025, 7, 1))


def test_only_the_verifier_builds_a_verified_quote(real_quote: bytes) -> None:
    with pytest.raises(TypeError):
        VerifiedQuote(Quote.from_bytes(real_quote))  # type: ignore[call-arg]
    with pytest.raises(UsageError):
        VerifiedQuote(*([None] * 17), _token=object())  # type: ignore[arg-type]


def test_cached_verifier_agrees_and_still_detects_expiry(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    verifier = QuoteVerifier()
    first = verifier.verify(real_quote, real_collateral, now=REAL_INSIDE)
    second = verifier.verify(real_quote, real_collateral, now=REAL_INSIDE + timedelta(days=1))
    assert first.to_dict() | {"verified_at": None} == second.to_dict() | {"verified_at": None}
    with pytest.raises(ExpiredError):
        verifier.verify(real_quote, real_collateral, now=REAL_AFTER)
    # After the failure the cache does not let a valid time through with stale results, nor block it.
    assert verifier.verify(real_quote, real_collateral, now=REAL_INSIDE).tcb_status == first.tcb_status


def test_cached_verifier_checks_every_quote_signature(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    verifier = QuoteVerifier()
    verifier.verify(real_quote, real_collateral, now=REAL_INSIDE)
    tampered = bytearray(real_quote)
    tampered[48 + 320] ^= 1  # first byte of report data
    with pytest.raises(VerificationError):
        verifier.verify(bytes(tampered), real_collateral, now=REAL_INSIDE)


def test_empty_root_list_is_misuse() -> None:
    with pytest.raises(UsageError):
        QuoteVerifier(roots=[])


def test_intel_root_is_pinned() -> None:
    root = intel_sgx_root()
    assert root.intel and not root.simulated
    assert root.fingerprint.hex() == "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"


# Offsets of the signed parts of a v3 quote: header and body (signed by the attestation key), the signature
# data (quote signature, attestation key, QE report, QE report signature, QE auth data size and data).
def _signed_offsets(quote: bytes) -> list[int]:
    auth_size = int.from_bytes(quote[1012:1014], "little")
    return list(range(0, 1014 + auth_size))


def test_every_single_byte_change_in_the_signed_parts_is_rejected(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    verifier = QuoteVerifier()
    offsets = _signed_offsets(real_quote)
    assert (
        len(offsets) == 1046
    )  # header 48, body 384, length 4, sig 64, key 64, QE report 384, sig 64, auth 34
    accepted = []
    for offset in offsets:
        tampered = bytearray(real_quote)
        tampered[offset] ^= 0x01
        try:
            verifier.verify(bytes(tampered), real_collateral, now=REAL_INSIDE)
        except (VerificationError, InvalidQuote):
            continue
        accepted.append(offset)
    assert accepted == []


def test_other_bit_flips_and_byte_values_are_rejected_too(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    verifier = QuoteVerifier()
    for offset in range(0, 1046, 13):
        for value in (0x00, 0xFF, real_quote[offset] ^ 0x80):
            if value == real_quote[offset]:
                continue
            tampered = bytearray(real_quote)
            tampered[offset] = value
            with pytest.raises((VerificationError, InvalidQuote)):
                verifier.verify(bytes(tampered), real_collateral, now=REAL_INSIDE)


def test_a_changed_pck_chain_is_rejected(real_quote: bytes, real_collateral: QuoteCollateral) -> None:
    verifier = QuoteVerifier()
    start = real_quote.index(b"-----BEGIN CERTIFICATE-----") + 100
    for offset in range(start, start + 1200, 37):
        tampered = bytearray(real_quote)
        tampered[offset] = ord("A") if tampered[offset] != ord("A") else ord("B")
        with pytest.raises(EnklaveError):
            verifier.verify(bytes(tampered), real_collateral, now=REAL_INSIDE)


def test_policies_appraise_a_real_verified_quote(real_quote: bytes, real_collateral: QuoteCollateral) -> None:
    verified = verify_quote(real_quote, real_collateral, now=REAL_INSIDE)
    statuses = ("UpToDate", "SWHardeningNeeded", "ConfigurationAndSWHardeningNeeded")
    accepting = EnclavePolicy(
        mr_enclave=verified.mr_enclave,
        mr_signer=verified.mr_signer,
        isv_prod_id=0,
        min_isv_svn=0,
        accepted_tcb_statuses=statuses,
        report_data=b"Hello, world!",
    )
    accepting.appraise(verified)
    with pytest.raises(PolicyError) as info:
        EnclavePolicy(mr_enclave=verified.mr_enclave).appraise(verified)
    assert info.value.field == "tcb_status"
    assert info.value.actual == "ConfigurationAndSWHardeningNeeded"
    with pytest.raises(PolicyError) as info:
        EnclavePolicy(accepted_tcb_statuses=statuses, rejected_advisory_ids=["INTEL-SA-00615"]).appraise(
            verified
        )
    assert info.value.field == "advisory_ids"
    with pytest.raises(PolicyError) as info:
        EnclavePolicy(accepted_tcb_statuses=statuses, min_isv_svn=1).appraise(verified)
    assert info.value.field == "isv_svn"
