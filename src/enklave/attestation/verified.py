"""The result of a successful quote verification.

A :class:`VerifiedQuote` can only be built by :func:`enklave.attestation.verify_quote` (a private token guards the
constructor), so holding one proves that every DCAP check passed at ``verified_at``. What to *accept* is a
separate question, answered by an appraisal policy (:mod:`enklave.attestation.policy`).
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from datetime import datetime
from typing import Any

from enklave.attestation.collateral import TcbStatus
from enklave.errors import UsageError
from enklave.sgx.pck import PckExtension
from enklave.sgx.quote import Quote
from enklave.sgx.report import MrEnclave, MrSigner, ReportBody

__all__ = ["VerifiedQuote"]

_VERIFIER_TOKEN = object()


@dataclass(frozen=True, slots=True)
class VerifiedQuote:
    """A quote whose signatures, certificate chain, collateral and TCB level were all verified.

    ``tcb_status`` and ``advisory_ids`` are the platform's and the QE's combined as Intel's QVL combines them;
    the separate values are kept too. ``collateral_expiry`` is the earliest time at which a piece of the
    collateral used (TCB info, QE identity, CRLs, certificates) stops being valid. ``intel_root`` is True only
    when the chain ended in the embedded, fingerprint-pinned Intel SGX Root CA; ``simulated`` is True when it
    ended in a root that the caller registered as simulated.
    """

    quote: Quote
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]
    platform_tcb_status: TcbStatus
    platform_advisory_ids: tuple[str, ...]
    platform_tcb_date: datetime | None
    qe_tcb_status: TcbStatus
    qe_advisory_ids: tuple[str, ...]
    fmspc: bytes
    pce_id: bytes
    pck: PckExtension
    tcb_evaluation_data_number: int
    collateral_expiry: datetime
    verified_at: datetime
    intel_root: bool
    simulated: bool
    root_name: str
    _token: InitVar[object]

    def __post_init__(self, _token: object) -> None:
        if _token is not _VERIFIER_TOKEN:
            raise UsageError("a VerifiedQuote is only built by enklave.attestation.verify_quote")

    @property
    def body(self) -> ReportBody:
        """The verified enclave report body."""
        return self.quote.body

    @property
    def mr_enclave(self) -> MrEnclave:
        """The enclave's measurement."""
        return self.quote.body.mr_enclave

    @property
    def mr_signer(self) -> MrSigner:
        """The enclave signer's identity."""
        return self.quote.body.mr_signer

    @property
    def isv_prod_id(self) -> int:
        """The enclave's ISV product id."""
        return self.quote.body.isv_prod_id

    @property
    def isv_svn(self) -> int:
        """The enclave's ISV security version number."""
        return self.quote.body.isv_svn

    @property
    def debug(self) -> bool:
        """True when the enclave runs in debug mode (its memory is readable by the host)."""
        return self.quote.body.debug

    @property
    def report_data(self) -> bytes:
        """The 64 bytes of report data the enclave bound into the quote."""
        return self.quote.body.report_data

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view: identity, statuses and validity, binary values as lowercase hex."""
        body = self.body
        return {
            "version": self.quote.version,
            "mrenclave": body.mr_enclave.hex(),
            "mrsigner": body.mr_signer.hex(),
            "isv_prod_id": body.isv_prod_id,
            "isv_svn": body.isv_svn,
            "debug": body.debug,
            "attributes": {"flags": body.attributes.flag_names(), "raw": body.attributes.to_bytes().hex()},
            "report_data": body.report_data.hex(),
            "tcb_status": self.tcb_status.value,
            "advisory_ids": list(self.advisory_ids),
            "platform_tcb_status": self.platform_tcb_status.value,
            "platform_advisory_ids": list(self.platform_advisory_ids),
            "platform_tcb_date": _iso(self.platform_tcb_date),
            "qe_tcb_status": self.qe_tcb_status.value,
            "qe_advisory_ids": list(self.qe_advisory_ids),
            "fmspc": self.fmspc.hex(),
            "pce_id": self.pce_id.hex(),
            "sgx_type": self.pck.sgx_type.name,
            "tcb_evaluation_data_number": self.tcb_evaluation_data_number,
            "collateral_expiry": _iso(self.collateral_expiry),
            "verified_at": _iso(self.verified_at),
            "intel_root": self.intel_root,
            "simulated": self.simulated,
            "root": self.root_name,
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _new_verified_quote(**fields: Any) -> VerifiedQuote:
    """Build a VerifiedQuote; for the verifier only."""
    return VerifiedQuote(**fields, _token=_VERIFIER_TOKEN)
