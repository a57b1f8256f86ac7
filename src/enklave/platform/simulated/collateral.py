"""The simulated platform's collateral: TCB info v3 and QE identity v2, signed like Intel's, and both CRLs.

Intel's PCS signs the exact JSON text of the ``tcbInfo`` (``enclaveIdentity``) object with the TCB signing key
(ECDSA P-256, SHA-256, signature as hex r || s) and serves ``{"tcbInfo":<that text>,"signature":"<hex>"}``. The
simulated collateral is made the same way, compact JSON as Intel writes it, and is assembled through
:meth:`QuoteCollateral.from_parts` and the documents' own parsers, so what is emitted is exactly what
:func:`enklave.attestation.verify_quote` reads.

* TCB info (FMSPC and PCE-ID of the platform): the platform's TCB is UpToDate; an older level (every non-zero
  component and the PCE SVN lower) is OutOfDate with the advisory :data:`SIM_ADVISORY_ID`.
* QE identity: the simulated QE's MRSIGNER, product id, attributes and MISCSELECT with Intel's masks; ISV SVN
  :data:`~enklave.platform.simulated.qe.QE_ISV_SVN` is UpToDate, a lower one OutOfDate.
* Everything is issued at ``now`` and valid for :data:`COLLATERAL_VALIDITY`; :func:`needs_refresh` says when
  whoever holds the simulated Intel keys must sign a new set.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from cryptography.hazmat.primitives.serialization import Encoding

from enklave.attestation.collateral import QeIdentity, QuoteCollateral, TcbInfo
from enklave.errors import UsageError
from enklave.platform.simulated.cpu import PlatformIdentity
from enklave.platform.simulated.pki import IntelCertificates, IntelKeys, issue_crl, sign_raw
from enklave.platform.simulated.qe import (
    QE_ATTRIBUTES,
    QE_ATTRIBUTES_MASK,
    QE_ISV_PROD_ID,
    QE_ISV_SVN,
    QE_MISC_SELECT,
    QE_MISC_SELECT_MASK,
    QE_MRSIGNER,
)

__all__ = [
    "COLLATERAL_VALIDITY",
    "REFRESH_MARGIN",
    "SIM_ADVISORY_ID",
    "TCB_EVALUATION_DATA_NUMBER",
    "build_collateral",
    "needs_refresh",
    "qe_identity_body",
    "qe_identity_document",
    "tcb_info_body",
    "tcb_info_document",
]

COLLATERAL_VALIDITY: Final = timedelta(days=30)
"""From issueDate to nextUpdate, as Intel's TCB info and QE identity."""
REFRESH_MARGIN: Final = timedelta(days=1)
"""Collateral is signed anew once it is this close to its nextUpdate (or past it)."""
TCB_EVALUATION_DATA_NUMBER: Final = 17
SIM_ADVISORY_ID: Final = "ENKLAVE-SIM-SA-00001"
"""The advisory of the simulated OutOfDate levels (named so that it never reads as one of Intel's)."""

# The TCB dates of the levels are fixed, like Intel's: they date the TCB recovery, not the document.
_UP_TO_DATE_TCB_DATE: Final = datetime(2025, 2, 12, tzinfo=UTC)
_OUT_OF_DATE_TCB_DATE: Final = datetime(2023, 8, 9, tzinfo=UTC)


def _time(value: datetime) -> str:
    if value.utcoffset() is None:
        raise UsageError("collateral times must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _compact(value: dict[str, Any]) -> str:
    # Intel's documents are compact JSON; the signature covers this exact text.
    return json.dumps(value, separators=(",", ":"))


def tcb_info_body(platform: PlatformIdentity, *, issue_date: datetime, next_update: datetime) -> str:
    """The ``tcbInfo`` object (version 3, id "SGX") of the simulated platform, as compact JSON text."""

    def level(components: tuple[int, ...], pce_svn: int, date: datetime, status: str) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "tcb": {"sgxtcbcomponents": [{"svn": svn} for svn in components], "pcesvn": pce_svn},
            "tcbDate": _time(date),
            "tcbStatus": status,
        }
        if status != "UpToDate":
            entry["advisoryIDs"] = [SIM_ADVISORY_ID]
        return entry

    older = tuple(max(svn - 1, 0) for svn in platform.tcb_components)
    return _compact(
        {
            "id": "SGX",
            "version": 3,
            "issueDate": _time(issue_date),
            "nextUpdate": _time(next_update),
            "fmspc": platform.fmspc.hex().upper(),
            "pceId": platform.pce_id.hex().upper(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
            "tcbLevels": [
                level(platform.tcb_components, platform.pce_svn, _UP_TO_DATE_TCB_DATE, "UpToDate"),
                level(older, max(platform.pce_svn - 2, 0), _OUT_OF_DATE_TCB_DATE, "OutOfDate"),
            ],
        }
    )


def qe_identity_body(*, issue_date: datetime, next_update: datetime) -> str:
    """The ``enclaveIdentity`` object (version 2, id "QE") of the simulated QE, as compact JSON text."""
    attributes = bytes(a & m for a, m in zip(QE_ATTRIBUTES.to_bytes(), QE_ATTRIBUTES_MASK, strict=True))
    return _compact(
        {
            "id": "QE",
            "version": 2,
            "issueDate": _time(issue_date),
            "nextUpdate": _time(next_update),
            "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
            # MISCSELECT and its mask are written most significant byte first, as Intel writes them.
            "miscselect": f"{QE_MISC_SELECT:08X}",
            "miscselectMask": f"{QE_MISC_SELECT_MASK:08X}",
            "attributes": attributes.hex().upper(),
            "attributesMask": QE_ATTRIBUTES_MASK.hex().upper(),
            "mrsigner": QE_MRSIGNER.hex().upper(),
            "isvprodid": QE_ISV_PROD_ID,
            "tcbLevels": [
                {
                    "tcb": {"isvsvn": QE_ISV_SVN},
                    "tcbDate": _time(_UP_TO_DATE_TCB_DATE),
                    "tcbStatus": "UpToDate",
                },
                {
                    "tcb": {"isvsvn": QE_ISV_SVN - 2},
                    "tcbDate": _time(_OUT_OF_DATE_TCB_DATE),
                    "tcbStatus": "OutOfDate",
                    "advisoryIDs": [SIM_ADVISORY_ID],
                },
            ],
        }
    )


def _pem(*certificates: Any) -> bytes:
    return b"".join(certificate.public_bytes(Encoding.PEM) for certificate in certificates)


def build_collateral(
    keys: IntelKeys, certificates: IntelCertificates, platform: PlatformIdentity, *, now: datetime
) -> QuoteCollateral:
    """Sign a complete collateral set for ``platform`` at ``now``, valid for :data:`COLLATERAL_VALIDITY`.

    The CRLs (root CA CRL by the root, PCK CRL by the PCK Platform CA) are empty and share the window. The
    result went through the collateral parsers; raises :class:`UsageError` for a naive ``now``.
    """
    issue = now.replace(microsecond=0)
    next_update = issue + COLLATERAL_VALIDITY
    number = int(issue.timestamp())
    root_crl = issue_crl(keys.root, certificates.root, now=issue, next_update=next_update, number=number)
    pck_crl = issue_crl(keys.pck_ca, certificates.pck_ca, now=issue, next_update=next_update, number=number)
    tcb_body = tcb_info_body(platform, issue_date=issue, next_update=next_update).encode()
    qe_body = qe_identity_body(issue_date=issue, next_update=next_update).encode()
    signing_chain = _pem(certificates.tcb_signing, certificates.root)
    return QuoteCollateral.from_parts(
        pck_crl_issuer_chain=_pem(certificates.pck_ca, certificates.root),
        root_ca_crl=root_crl.public_bytes(Encoding.DER),
        pck_crl=pck_crl.public_bytes(Encoding.DER),
        tcb_info_issuer_chain=signing_chain,
        tcb_info=TcbInfo.from_parts(tcb_body, sign_raw(keys.tcb_signing, tcb_body)),
        qe_identity_issuer_chain=signing_chain,
        qe_identity=QeIdentity.from_parts(qe_body, sign_raw(keys.tcb_signing, qe_body)),
    )


def needs_refresh(collateral: QuoteCollateral, now: datetime) -> bool:
    """True when ``collateral`` must be signed anew at ``now``.

    That is within :data:`REFRESH_MARGIN` of its earliest nextUpdate or past it, or before its issue date (the
    clock went back, or another clock signed it), when a verifier at ``now`` would reject it.
    """
    if now.utcoffset() is None:
        raise UsageError("now must be timezone-aware")
    issued = max(
        collateral.tcb_info.issue_date,
        collateral.qe_identity.issue_date,
        collateral.root_ca_crl.last_update_utc,
        collateral.pck_crl.last_update_utc,
    )
    return now < issued or now >= collateral.earliest_next_update - REFRESH_MARGIN


def tcb_info_document(collateral: QuoteCollateral) -> bytes:
    """The TCB info as PCS v4 serves it: ``{"tcbInfo":<signed text>,"signature":"<hex r||s>"}``."""
    info = collateral.tcb_info
    return b'{"tcbInfo":' + info.body + b',"signature":"' + info.signature.hex().encode() + b'"}'


def qe_identity_document(collateral: QuoteCollateral) -> bytes:
    """The QE identity as PCS v4 serves it: ``{"enclaveIdentity":<signed text>,"signature":"<hex>"}``."""
    identity = collateral.qe_identity
    return (
        b'{"enclaveIdentity":' + identity.body + b',"signature":"' + identity.signature.hex().encode() + b'"}'
    )
