"""The shortcuts of uncached quote verification give exactly the results and errors of the general code."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import REAL_INSIDE
from enklave.attestation import _pki
from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.verify import QuoteVerifier, _masked, verify_quote
from enklave.errors import InvalidQuote, UsageError
from enklave.sgx.quote import Quote
from enklave.sgx.report import ReportBody

WHAT = "the PCK certificate chain"


def _pck_pem(real_quote: bytes) -> bytes:
    pem = Quote.from_bytes(real_quote).pck_chain_pem
    assert pem is not None
    return pem


def _ders(chain: list) -> list[bytes]:  # type: ignore[type-arg]
    return [cert.public_bytes(Encoding.DER) for cert in chain]


def _tail(collateral: QuoteCollateral) -> _pki.KnownChain:
    return _pki.KnownChain(
        collateral.pck_crl_issuer_chain_pem,
        collateral.pck_crl_issuer_chain,
        collateral.signed_der.pck_crl_issuer_chain,
    )


def _load(pem: bytes, tail: _pki.KnownChain | None = None) -> list:  # type: ignore[type-arg]
    return _pki.load_evidence_chain(pem, WHAT, 4, tail)[0]


def test_known_tail_stands_in_for_the_collateral_chain(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    pem = _pck_pem(real_quote)
    tail = _tail(real_collateral)
    assert pem.endswith(tail.pem)  # the real quote carries the collateral chain's exact text
    fast = _load(pem, tail)
    general = _load(pem)
    assert _ders(fast) == _ders(general)
    assert fast[1] is real_collateral.pck_crl_issuer_chain[0]
    assert fast[2] is real_collateral.pck_crl_issuer_chain[1]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda pem, tail: pem[: len(pem) - len(tail)].rstrip(b"\n") + b"\r\n" + tail,  # no plain END line
        lambda pem, tail: tail,  # no head at all
        lambda pem, tail: b"junk\n" + pem,  # text before the first block
    ],
)
def test_other_layouts_read_as_the_general_reader_reads_them(
    real_quote: bytes, real_collateral: QuoteCollateral, mangle: object
) -> None:
    tail = _tail(real_collateral)
    pem = mangle(_pck_pem(real_quote), tail.pem)  # type: ignore[operator]
    try:
        expected: list[bytes] | str = _ders(_load(pem))
    except InvalidQuote as exc:
        expected = str(exc)
    try:
        got: list[bytes] | str = _ders(_load(pem, tail))
    except InvalidQuote as exc:
        got = str(exc)
    assert got == expected


def test_malformed_leaf_before_the_tail_fails_as_before(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    pem = _pck_pem(real_quote)
    tail = _tail(real_collateral)
    # Damage the leaf's base64 body (line 3), keeping the layout that the shortcut looks for.
    lines = pem.split(b"\n")
    lines[3] = b"A" * len(lines[3])
    broken = b"\n".join(lines)
    assert broken.endswith(tail.pem)
    with pytest.raises(InvalidQuote) as general:
        _load(broken)
    with pytest.raises(InvalidQuote) as fast:
        _load(broken, tail)
    assert str(fast.value) == str(general.value)
    assert "is malformed" in str(fast.value)


def test_non_certificate_block_in_the_head_is_still_refused(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    tail = _tail(real_collateral)
    pem = _pck_pem(real_quote)
    head = pem[: len(pem) - len(tail.pem)]
    extra = b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"
    with pytest.raises(InvalidQuote, match="not certificates"):
        _load(extra + head + tail.pem, tail)


def test_each_issuance_signature_is_checked_once_per_verification(
    real_quote: bytes, real_collateral: QuoteCollateral, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[tuple[bytes, bytes]] = []
    original = _pki.check_issued_by

    def counting(what, cert, issuer, signed=None, issuer_signed=None, pending=None):  # type: ignore[no-untyped-def]
        checked.append((cert.public_bytes(Encoding.DER), issuer.public_bytes(Encoding.DER)))
        original(what, cert, issuer, signed, issuer_signed, pending)

    monkeypatch.setattr(_pki, "check_issued_by", counting)
    verify_quote(real_quote, real_collateral, now=REAL_INSIDE)
    # The PCK CA (in the PCK CRL issuer chain and the PCK chain) and the TCB signing certificate (in the TCB info
    # and QE identity chains) appear twice; each issuance is checked once: PCK CA, TCB signing, PCK leaf.
    assert len(checked) == 3
    assert len(set(checked)) == 3


def test_uncached_and_cached_verification_agree(real_quote: bytes, real_collateral: QuoteCollateral) -> None:
    uncached = verify_quote(real_quote, real_collateral, now=REAL_INSIDE)
    cached = QuoteVerifier().verify(real_quote, real_collateral, now=REAL_INSIDE)
    assert uncached.to_dict() == cached.to_dict()
    assert uncached.collateral_expiry == cached.collateral_expiry


def test_masked_matches_bytewise_masking() -> None:
    value, mask = bytes.fromhex("ff00a5c3" * 4), bytes.fromhex("0fff0f00" * 4)
    assert _masked(value, mask) == bytes(a & b for a, b in zip(value, mask, strict=True))
    assert _masked(b"\x00\x01", b"\xff\xff") == b"\x00\x01"  # leading zero bytes are kept
    with pytest.raises(ValueError, match="length"):
        _masked(b"\x00", b"\x00\x00")


def test_report_body_still_names_the_wrong_field(real_quote: bytes) -> None:
    body = Quote.from_bytes(real_quote).body
    fields = {name: getattr(body, name) for name in ReportBody.__dataclass_fields__}
    assert ReportBody(**fields) == body
    with pytest.raises(UsageError, match="mr_signer must be 32 bytes, got 31"):
        ReportBody(**{**fields, "mr_signer": bytes(31)})
    with pytest.raises(UsageError, match="isv_svn must fit in 16 bits, got 65536"):
        ReportBody(**{**fields, "isv_svn": 1 << 16})
    with pytest.raises(UsageError, match="misc_select must fit in 32 bits, got -1"):
        ReportBody(**{**fields, "misc_select": -1})
