"""DCAP quote verification, in the order of Intel's Quote Verification Library (QVL).

``verify_quote(quote, collateral, now=...)`` either returns a :class:`VerifiedQuote` or raises a
:class:`~enklave.errors.VerificationError` subclass (or ``InvalidQuote`` for unparsable evidence). The steps,
numbered as in the comments below:

1. Root of trust: every chain must end in an explicitly trusted root (by default only the pinned Intel root).
2. CRLs: the root CA CRL and the PCK CRL, their issuers, signatures and validity windows.
3. TCB info and QE identity: issuer chains, revocation of their signing certificate, signatures over the exact
   signed JSON text, validity windows.
4. PCK certificate chain: issuance, validity and revocation (intermediate on the root CA CRL, leaf on the PCK CRL).
5. The PCK certificate's FMSPC and PCE-ID match the TCB info.
6. The QE report is signed by the PCK key.
7. The QE report data binds the attestation key and QE auth data: SHA-256(key || auth data) || 32 zero bytes.
8. The QE report matches the QE identity (MRSIGNER, ISV product id, MISCSELECT and attributes under their
   masks), and its ISV SVN selects the QE TCB level.
9. The quote (header and report body) is signed by the attestation key.
10. The platform TCB level is selected with the PCK certificate's TCB components and PCESVN.
11. The platform and QE statuses converge into one TCB status, and their advisory IDs are merged.

The nine ECDSA signatures of steps 1 to 4, 6 and 9 are queued as the steps meet them and checked together once
the other checks passed (:class:`~enklave.attestation._pki.PendingSignatures`). Before any other failure leaves the
verification, the signatures queued ahead of it are checked, so the error reported is always the first one in this
order.

:class:`QuoteVerifier` caches what does not depend on the quote itself (steps 1-3 per collateral object, and
steps 4, 5 and 10 per PCK chain) for as long as every object involved stays valid; a cached result is never
used outside its validity window, so expiry is detected exactly as without the cache.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from enklave.attestation import _pki
from enklave.attestation._pki import Window
from enklave.attestation.collateral import QuoteCollateral, TcbLevel
from enklave.attestation.tcb import converge_status, match_platform_level, match_qe_level, merge_advisories
from enklave.attestation.trust import TrustedRoot, intel_sgx_root
from enklave.attestation.verified import VerifiedQuote, _new_verified_quote
from enklave.errors import (
    BindingError,
    CertificateChainError,
    CollateralMismatchError,
    InvalidQuote,
    QeIdentityError,
    RevokedError,
    UsageError,
)
from enklave.sgx.pck import PckExtension
from enklave.sgx.quote import INTEL_QE_VENDOR_ID, CertificationDataType, Quote

__all__ = ["QuoteVerifier", "verify_quote"]

_MAX_PCK_CHAIN = 4
_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class _CollateralCheck:
    """Steps 1-3 done for one collateral object: the root it chains to and the window in which it holds."""

    collateral: QuoteCollateral  # kept alive so that id(collateral) cannot be reused while cached
    root: TrustedRoot
    window: Window
    issued: frozenset[tuple[bytes, bytes]]  # (certificate DER, issuer DER) signatures checked


@dataclass(frozen=True, slots=True)
class _PckCheck:
    """Steps 4, 5 and 10 done for one PCK chain against one collateral object."""

    key: ec.EllipticCurvePublicKey
    pck: PckExtension
    level: TcbLevel
    window: Window


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _full_window() -> Window:
    return Window(_EARLIEST, _LATEST)


class QuoteVerifier:
    """Verifies SGX DCAP quotes against collateral, with an optional cache of collateral checks.

    ``roots`` are the trusted roots (default: the pinned Intel SGX Root CA only). ``cache_size`` bounds how many
    collateral objects and PCK chains keep their checks; 0 disables caching. Thread-safe.
    """

    def __init__(self, roots: Sequence[TrustedRoot] | None = None, *, cache_size: int = 64) -> None:
        self._roots = tuple(roots) if roots is not None else (intel_sgx_root(),)
        if not self._roots:
            raise UsageError("at least one trusted root is required")
        if cache_size < 0:
            raise UsageError("cache_size must be >= 0")
        self._cache_size = cache_size
        self._collateral_cache: OrderedDict[int, _CollateralCheck] = OrderedDict()
        self._pck_cache: OrderedDict[tuple[int, bytes], _PckCheck] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def roots(self) -> tuple[TrustedRoot, ...]:
        """The trusted roots."""
        return self._roots

    def verify(self, quote: bytes | Quote, collateral: QuoteCollateral, *, now: datetime) -> VerifiedQuote:
        """Verify ``quote`` with ``collateral`` at time ``now`` (timezone-aware); raise on any failure."""
        if now.tzinfo is None:
            raise UsageError("now must be timezone-aware (UTC)")
        # The signatures are queued as the steps meet them and checked together on leaving the block, before any
        # other failure leaves it and before the result is returned (see _pki.PendingSignatures).
        with _pki.PendingSignatures() as pending:
            verified = self._verify(quote, collateral, now, pending)
        return verified

    def _verify(
        self,
        quote: bytes | Quote,
        collateral: QuoteCollateral,
        now: datetime,
        pending: _pki.PendingSignatures,
    ) -> VerifiedQuote:
        parsed = quote if isinstance(quote, Quote) else Quote.from_bytes(quote)
        header = parsed.header
        if header.qe_vendor_id != INTEL_QE_VENDOR_ID:
            raise QeIdentityError(
                f"the quote was produced by an unknown QE vendor ({header.qe_vendor_id.hex()})"
            )

        if self._cache_size:
            checked = self._collateral_check(collateral, now)
            pck = self._pck_check(parsed, checked, now)
        else:
            # Without a cache, skip the lookups (hashing the PEM chain for a key alone costs microseconds).
            checked = _check_collateral(collateral, self._roots, now, pending)
            pck = _check_pck(_pck_chain_source(parsed, collateral), checked, now, pending)

        # 6. The QE report is signed by the PCK key.
        _pki.verify_raw_signature(
            "QE report", pck.key, parsed.qe_report_signature, parsed.qe_report_raw, pending
        )

        # 7. The QE report data binds the attestation key and the QE auth data.
        expected = hashlib.sha256(parsed.attestation_key + parsed.qe_auth_data).digest() + bytes(32)
        if not hmac.compare_digest(parsed.qe_report.report_data, expected):
            raise BindingError("the QE report data does not bind the attestation key and QE auth data")

        # 8. The QE is the one the QE identity describes; its ISV SVN selects the QE TCB level.
        identity = collateral.qe_identity
        qe = parsed.qe_report
        if not hmac.compare_digest(qe.mr_signer, identity.mrsigner):
            raise QeIdentityError(f"QE MRSIGNER {qe.mr_signer.hex()} is not {identity.mrsigner.hex()}")
        if qe.isv_prod_id != identity.isv_prod_id:
            raise QeIdentityError(f"QE ISV product id {qe.isv_prod_id} is not {identity.isv_prod_id}")
        # The QE identity writes MISCSELECT as the hex of the report's four bytes, so compare bytes, not numbers.
        misc = qe.misc_select.to_bytes(4, "little")
        misc_mask = identity.miscselect_mask.to_bytes(4, "big")
        if _masked(misc, misc_mask) != _masked(identity.miscselect.to_bytes(4, "big"), misc_mask):
            raise QeIdentityError(f"QE MISCSELECT {misc.hex()} does not match the QE identity")
        attributes = qe.attributes.to_bytes()
        if _masked(attributes, identity.attributes_mask) != _masked(
            identity.attributes, identity.attributes_mask
        ):
            raise QeIdentityError(f"QE attributes {attributes.hex()} do not match the QE identity")
        qe_level = match_qe_level(identity, qe.isv_svn)

        # 9. The quote is signed by the attestation key.
        attestation_key = _pki.p256_key_from_raw("attestation key", parsed.attestation_key)
        _pki.verify_raw_signature("quote", attestation_key, parsed.signature, parsed.signed_bytes, pending)

        # 11. Converge the platform and QE statuses.
        status = converge_status(pck.level.tcb_status, qe_level.tcb_status)
        if status.value == "Revoked":
            raise RevokedError("the combined TCB status is Revoked")
        root = checked.root
        return _new_verified_quote(
            quote=parsed,
            tcb_status=status,
            advisory_ids=merge_advisories(pck.level.advisory_ids, qe_level.advisory_ids),
            platform_tcb_status=pck.level.tcb_status,
            platform_advisory_ids=pck.level.advisory_ids,
            platform_tcb_date=pck.level.tcb_date,
            qe_tcb_status=qe_level.tcb_status,
            qe_advisory_ids=qe_level.advisory_ids,
            fmspc=pck.pck.fmspc,
            pce_id=pck.pck.pce_id,
            pck=pck.pck,
            tcb_evaluation_data_number=min(
                collateral.tcb_info.tcb_evaluation_data_number, identity.tcb_evaluation_data_number
            ),
            collateral_expiry=min(checked.window.not_after, pck.window.not_after),
            verified_at=now,
            intel_root=root.intel,
            simulated=root.simulated,
            root_name=root.name,
        )

    # -- steps 1 to 3 -------------------------------------------------------------------------------------

    def _collateral_check(self, collateral: QuoteCollateral, now: datetime) -> _CollateralCheck:
        key = id(collateral)
        with self._lock:
            cached = self._collateral_cache.get(key)
        if cached is not None and cached.collateral is collateral and cached.window.contains(now):
            return cached
        # A check is cached only once its signatures verified.
        with _pki.PendingSignatures() as signatures:
            checked = _check_collateral(collateral, self._roots, now, signatures)
        self._remember(self._collateral_cache, key, checked)
        return checked

    def _pck_check(self, quote: Quote, checked: _CollateralCheck, now: datetime) -> _PckCheck:
        chain_pem = _pck_chain_source(quote, checked.collateral)
        key = (id(checked.collateral), chain_pem)
        with self._lock:
            cached = self._pck_cache.get(key)
        if cached is not None and cached.window.contains(now):
            return cached
        with _pki.PendingSignatures() as signatures:
            result = _check_pck(chain_pem, checked, now, signatures)
        self._remember(self._pck_cache, key, result)
        return result

    def _remember(self, cache: OrderedDict[_K, _V], key: _K, value: _V) -> None:
        if not self._cache_size:
            return
        with self._lock:
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > self._cache_size:
                cache.popitem(last=False)

    def clear_cache(self) -> None:
        """Forget every cached check."""
        with self._lock:
            self._collateral_cache.clear()
            self._pck_cache.clear()


def _masked(value: bytes, mask: bytes) -> bytes:
    # Masking the whole value as one integer is several times faster than masking byte by byte.
    if len(value) != len(mask):
        raise ValueError("value and mask differ in length")
    return (int.from_bytes(value) & int.from_bytes(mask)).to_bytes(len(value))


def _check_collateral(
    collateral: QuoteCollateral, roots: Sequence[TrustedRoot], now: datetime, pending: _pki.PendingSignatures
) -> _CollateralCheck:
    window = _full_window()
    issued: _pki.Issued = set()
    # Signatures are checked on the signed bytes sliced from the DER each object was parsed from.
    der = collateral.signed_der

    # 1. Root of trust: the PCK CRL issuer chain fixes the root every other chain must end in.
    crl_chain = collateral.pck_crl_issuer_chain
    root, below = _pki.check_chain(
        "PCK CRL issuer chain", crl_chain, roots, now, window, issued, der.pck_crl_issuer_chain, pending
    )

    # 2. CRLs: the root CA CRL is issued by the root; the PCK CRL by the PCK CA that the chain certifies.
    root_crl = collateral.root_ca_crl
    _pki.check_crl("root CA CRL", root_crl, root.certificate, now, window, der.root_ca_crl, pending)
    pck_ca = _single_below_root("PCK CRL issuer chain", below, 1)[0]
    _pki.check_not_revoked("PCK CA of the PCK CRL issuer chain", pck_ca, root_crl)
    _pki.check_crl("PCK CRL", collateral.pck_crl, pck_ca, now, window, der.pck_crl, pending)

    # 3. TCB info and QE identity: signing chains, revocation, signatures over the signed text, validity.
    chain_roots = (root,)
    for what, chain, signed, ders in (
        ("TCB info", collateral.tcb_info_issuer_chain, collateral.tcb_info, der.tcb_info_issuer_chain),
        (
            "QE identity",
            collateral.qe_identity_issuer_chain,
            collateral.qe_identity,
            der.qe_identity_issuer_chain,
        ),
    ):
        chain_root, below = _pki.check_chain(
            f"{what} issuer chain", chain, chain_roots, now, window, issued, ders, pending
        )
        if chain_root is not root:
            raise CertificateChainError(f"the {what} issuer chain ends in another root than the PCK chain")
        signer = _single_below_root(f"{what} issuer chain", below, 1)[0]
        _pki.check_not_revoked(f"{what} signing certificate", signer, root_crl)
        key = _pki.ec_public_key(f"{what} signing certificate", signer)
        _pki.verify_raw_signature(what, key, signed.signature, signed.body, pending)
        _pki.check_time(what, signed.issue_date, signed.next_update, now, window)
    if collateral.qe_identity.id != "QE":
        raise CollateralMismatchError(f"the QE identity is for {collateral.qe_identity.id!r}, not the SGX QE")
    return _CollateralCheck(collateral, root, window, frozenset(issued))


def _single_below_root(
    what: str, below: Sequence[x509.Certificate], depth: int
) -> Sequence[x509.Certificate]:
    """The certificates below the root (as check_chain returns them), which Intel's PKI fixes at ``depth`` (1 for
    CRL and signing chains, 2 for PCK chains); the last one is issued by the root, so the root CA CRL covers it."""
    if len(below) != depth:
        raise CertificateChainError(f"{what} has {len(below)} certificates below the root, expected {depth}")
    return below


def _pck_chain_source(quote: Quote, collateral: QuoteCollateral) -> bytes:
    """The PEM PCK chain: from certification data type 5, or from the collateral for types 1 to 4."""
    pem = quote.pck_chain_pem
    if pem is not None:
        return pem
    if collateral.pck_certificate_chain is not None:
        return collateral.pck_certificate_chain_pem
    cert_type = quote.certification_data.type
    name = CertificationDataType(cert_type).name
    raise InvalidQuote(
        f"the quote's certification data is type {cert_type} ({name}), which carries no PCK chain, "
        "and the collateral has no pck_certificate_chain"
    )


def _check_pck(
    chain_pem: bytes, checked: _CollateralCheck, now: datetime, pending: _pki.PendingSignatures
) -> _PckCheck:
    collateral = checked.collateral
    window = _full_window()
    # The quote usually carries the PCK CRL issuer chain's exact text after its leaf: that part is not decoded
    # again (the collateral guarantees that its PEM text holds exactly its certificates).
    tail = _pki.KnownChain(
        collateral.pck_crl_issuer_chain_pem,
        collateral.pck_crl_issuer_chain,
        collateral.signed_der.pck_crl_issuer_chain,
    )
    chain, signed = _pki.load_evidence_chain(chain_pem, "the PCK certificate chain", _MAX_PCK_CHAIN, tail)

    # 4. PCK chain: issuance up to the collateral's root, validity, revocation by the root CA and PCK CRLs.
    issued = set(checked.issued)
    root, below = _pki.check_chain(
        "PCK certificate chain", chain, (checked.root,), now, window, issued, signed, pending
    )
    if root is not checked.root:
        raise CertificateChainError("the PCK chain ends in another root than the collateral")
    leaf, chain_ca = _single_below_root("PCK certificate chain", below, 2)
    # The PCK CRL must be the one of the CA that issued this PCK certificate (processor or platform CA).
    crl_ca = collateral.pck_crl_issuer_chain[0]
    if chain_ca is not crl_ca and chain_ca != crl_ca:
        raise CollateralMismatchError(
            f"the PCK certificate is issued by {_pki.subject_of(chain_ca)}, but the PCK CRL is from "
            f"{_pki.subject_of(crl_ca)}"
        )
    _pki.check_not_revoked("PCK CA of the PCK certificate chain", chain_ca, collateral.root_ca_crl)
    _pki.check_not_revoked("PCK certificate", leaf, collateral.pck_crl)
    key = _pki.ec_public_key("PCK certificate", leaf)
    pck = PckExtension.from_certificate(leaf)

    # 5. The collateral is for this platform.
    tcb_info = collateral.tcb_info
    if pck.fmspc != tcb_info.fmspc:
        raise CollateralMismatchError(f"the PCK certificate's FMSPC {pck.fmspc.hex()} is not the TCB info's "
                                      f"{tcb_info.fmspc.hex()}")  # fmt: skip
    if pck.pce_id != tcb_info.pce_id:
        raise CollateralMismatchError(f"the PCK certificate's PCE-ID {pck.pce_id.hex()} is not the TCB info's "
                                      f"{tcb_info.pce_id.hex()}")  # fmt: skip

    # 10. The platform TCB level, from the PCK certificate's TCB components.
    level = match_platform_level(tcb_info, pck.tcb)
    return _PckCheck(key, pck, level, window)


def verify_quote(
    quote: bytes | Quote,
    collateral: QuoteCollateral,
    *,
    now: datetime,
    roots: Sequence[TrustedRoot] | None = None,
) -> VerifiedQuote:
    """Verify a quote with its collateral at ``now``, without caching; see the module docstring for the steps.

    Raises :class:`~enklave.errors.InvalidQuote` for unparsable evidence and a
    :class:`~enklave.errors.VerificationError` subclass for every failed check.
    """
    verifier = _default_uncached_verifier() if roots is None else QuoteVerifier(roots, cache_size=0)
    return verifier.verify(quote, collateral, now=now)


@functools.cache
def _default_uncached_verifier() -> QuoteVerifier:
    # Without a cache a verifier holds nothing but its roots, so one instance serves every call and thread.
    return QuoteVerifier(cache_size=0)
