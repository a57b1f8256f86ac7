"""TCB level matching and status convergence, as Intel's Quote Verification Library defines them.

* The platform TCB level is the first level of the TCB info (Intel lists them from newest to oldest) whose 16
  SGX component SVNs and PCESVN are all lower than or equal to the PCK certificate's. The PCK certificate's
  TCB components are used, not the quote body's CPUSVN: the PCK key was certified for exactly that TCB.
* The QE TCB level is the first level of the QE identity whose ISV SVN is lower than or equal to the QE's.
  A platform or QE below every listed level is unsupported (platform) or revoked (QE), as in the QVL.
* The combined status keeps the platform status, except that an out-of-date QE makes an up-to-date platform
  OutOfDate and a platform that needs configuration OutOfDateConfigurationNeeded; advisory IDs are the union.
"""

from __future__ import annotations

from enklave.attestation.collateral import QeIdentity, QeTcbLevel, TcbInfo, TcbLevel, TcbStatus
from enklave.errors import RevokedError, TcbError
from enklave.sgx.pck import PckTcb

__all__ = ["converge_status", "match_platform_level", "match_qe_level", "merge_advisories"]


def match_platform_level(tcb_info: TcbInfo, pck_tcb: PckTcb) -> TcbLevel:
    """The platform's TCB level; raises :class:`TcbError` when none applies and RevokedError when revoked."""
    components = pck_tcb.comp_svns
    for level in tcb_info.tcb_levels:
        if pck_tcb.pce_svn >= level.pce_svn and all(
            have >= need for have, need in zip(components, level.sgx_components, strict=True)
        ):
            if level.tcb_status is TcbStatus.REVOKED:
                raise RevokedError(f"the platform's TCB level (date {level.tcb_date}) is revoked")
            return level
    raise TcbError(
        "the platform's TCB (components "
        f"{'.'.join(map(str, components))}, PCESVN {pck_tcb.pce_svn}) is below every level of the TCB info"
    )


def match_qe_level(qe_identity: QeIdentity, isv_svn: int) -> QeTcbLevel:
    """The quoting enclave's TCB level; raises :class:`RevokedError` when revoked or below every level."""
    for level in qe_identity.tcb_levels:
        if isv_svn >= level.isv_svn:
            if level.tcb_status is TcbStatus.REVOKED:
                raise RevokedError(f"the quoting enclave's TCB level (ISV SVN {isv_svn}) is revoked")
            return level
    raise RevokedError(f"the quoting enclave's ISV SVN {isv_svn} is below every level of the QE identity")


_OUT_OF_DATE_FROM = {
    TcbStatus.UP_TO_DATE: TcbStatus.OUT_OF_DATE,
    TcbStatus.SW_HARDENING_NEEDED: TcbStatus.OUT_OF_DATE,
    TcbStatus.CONFIGURATION_NEEDED: TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED,
    TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED: TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED,
}


def converge_status(platform: TcbStatus, qe: TcbStatus) -> TcbStatus:
    """Combine the platform and QE statuses (QVL ``convergeTcbStatusWithQeTcbStatus``).

    Either one Revoked makes the result Revoked. An OutOfDate QE turns UpToDate and SWHardeningNeeded into
    OutOfDate, and ConfigurationNeeded and ConfigurationAndSWHardeningNeeded into OutOfDateConfigurationNeeded;
    otherwise the platform's status stands.
    """
    if qe is TcbStatus.REVOKED or platform is TcbStatus.REVOKED:
        return TcbStatus.REVOKED
    if qe is TcbStatus.OUT_OF_DATE:
        return _OUT_OF_DATE_FROM.get(platform, platform)
    return platform


def merge_advisories(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """The sorted union of advisory IDs."""
    return tuple(sorted({advisory for group in groups for advisory in group}))
