"""``SimulatedPlatform``: the :class:`~enklave.platform.Platform` of an enclave in simulation mode."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

from enklave.errors import UsageError
from enklave.platform._base import KeyRequest, Platform, check_report_data
from enklave.platform.simulated.qe import SimulatedQe
from enklave.platform.simulated.store import load_qe, provision
from enklave.sgx.report import REPORT_DATA_SIZE, Report, ReportBody, ReportData, TargetInfo

__all__ = ["SimulatedPlatform"]


class SimulatedPlatform(Platform):
    """The simulated SGX platform, as seen from inside one enclave (mode ``"sim"``, ``simulated`` True).

    It holds the simulated CPU's secret and the QE's keys, so ONLY THE ENCLAVE PROCESS builds one, with
    :meth:`launch`; host code uses :func:`~enklave.platform.simulated.simulated_root` and
    :class:`~enklave.platform.simulated.SimulatedCollateralSource`, which read public files only. Quotes chain
    to the simulated root, never to Intel's, and verify as ``simulated=True``.
    """

    mode = "sim"
    simulated = True

    __slots__ = ("_identity", "_qe")

    def __init__(self, identity: ReportBody, qe: SimulatedQe) -> None:
        if identity.cpu_svn != qe.cpu.cpu_svn:
            raise UsageError("the enclave identity's CPU SVN must be the simulated CPU's; use launch()")
        self._identity = dataclasses.replace(identity, report_data=ReportData(bytes(REPORT_DATA_SIZE)))
        self._qe = qe

    @classmethod
    def launch(
        cls, identity: ReportBody, *, home: Path | str | None = None, now: datetime | None = None
    ) -> SimulatedPlatform:
        """Start the platform for the enclave ``identity`` (its MRENCLAVE, MRSIGNER, ISV ids, attributes).

        Provisions the simulated platform in ``home`` (default: the data directory) if needed and re-signs
        stale collateral at ``now``, then loads the CPU secrets into this process. The identity's CPU SVN is
        replaced by the simulated CPU's, as the CPU fills it in. Raises
        :class:`~enklave.errors.PlatformError` for damaged state and :class:`~enklave.errors.TransportError`
        when the data directory cannot be written.
        """
        provision(home, now=now)
        qe = load_qe(home)
        return cls(dataclasses.replace(identity, cpu_svn=qe.cpu.cpu_svn), qe)

    def __repr__(self) -> str:
        return f"SimulatedPlatform(mr_enclave={self._identity.mr_enclave.hex()}, {self._qe.cpu!r})"

    @property
    def identity(self) -> ReportBody:
        """This enclave's REPORT body (the simulated CPU's CPU SVN, zero report data)."""
        return self._identity

    @property
    def qe_target_info(self) -> TargetInfo:
        """The target info of the simulated QE (for a report that the QE should quote)."""
        return self._qe.target_info

    def get_report(self, target_info: TargetInfo | None, report_data: bytes) -> Report:
        """EREPORT on the simulated CPU, MACed with ``target_info``'s report key (``None``: this enclave's)."""
        padded = check_report_data(report_data)
        target = target_info if target_info is not None else TargetInfo.for_enclave(self._identity)
        return self._qe.cpu.ereport(self._identity, target, padded)

    def get_quote(self, report_data: bytes) -> bytes:
        """A quote v3 by the simulated QE, chaining to the simulated root; raises UsageError past 64 bytes."""
        # As sgx_qe_get_quote does: EREPORT addressed to the QE, then the QE checks the MAC and signs.
        report = self._qe.cpu.ereport(self._identity, self._qe.target_info, check_report_data(report_data))
        return self._qe.quote(report)

    def get_seal_key(self, request: KeyRequest) -> bytes:
        """EGETKEY(SEAL_KEY) on the simulated CPU; raises PlatformError for an SVN above this enclave's."""
        return self._qe.cpu.seal_key(self._identity, request)

    def verify_report(self, report: Report) -> None:
        """Check that ``report`` was made on this CPU for THIS enclave (local attestation).

        Raises :class:`~enklave.errors.SignatureError` otherwise.
        """
        self._qe.cpu.verify_report(report, self._identity)
