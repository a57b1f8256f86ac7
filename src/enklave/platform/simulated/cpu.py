"""The simulated CPU: its public platform identity, EREPORT and report MAC checks, EGETKEY for seal keys.

A real SGX CPU holds fused secrets from which it derives report keys (EREPORT, EGETKEY(REPORT_KEY)) and seal keys
(EGETKEY(SEAL_KEY)). The simulated CPU holds one 32-byte secret, chosen at provisioning and kept in the data
directory with owner-only permissions, and derives its keys with :mod:`enklave.platform._keys`. A
:class:`SimulatedCpu` therefore carries a secret: only the enclave process builds one.
"""

from __future__ import annotations

import dataclasses
import hmac
import os
from dataclasses import dataclass
from typing import Any, Final

from enklave.errors import SignatureError, UsageError
from enklave.platform._base import KEY_ID_SIZE, KeyRequest
from enklave.platform._keys import derive_report_key, derive_seal_key, report_mac
from enklave.sgx.pck import PckTcb, SgxType
from enklave.sgx.report import REPORT_DATA_SIZE, CpuSvn, Report, ReportBody, ReportData, TargetInfo

__all__ = ["CPU_SECRET_SIZE", "DEFAULT_PCE_SVN", "DEFAULT_TCB_COMPONENTS", "PlatformIdentity", "SimulatedCpu"]

CPU_SECRET_SIZE: Final = 32
"""Size of the simulated CPU's root seal and report secret."""

DEFAULT_TCB_COMPONENTS: Final = (15, 15, 2, 4, 1, 128, 14, 0, 0, 0, 0, 0, 0, 0, 0, 0)
"""The simulated CPU's 16 SGX TCB component SVNs (shaped like a current Intel server platform's)."""
DEFAULT_PCE_SVN: Final = 13
"""The simulated provisioning certification enclave's SVN."""

# Every simulated FMSPC starts with this byte, so a simulated platform is recognisable in any log; the rest is
# random per installation (Intel's FMSPCs start with 0x00).
_FMSPC_PREFIX: Final = b"\xe5"


def _hex(values: dict[str, Any], key: str, size: int) -> bytes:
    value = values.get(key)
    if not isinstance(value, str):
        raise UsageError(f"platform description: {key!r} must be a hex string")
    try:
        decoded = bytes.fromhex(value)
    except ValueError as exc:
        raise UsageError(f"platform description: {key!r} is not hexadecimal") from exc
    if len(decoded) != size:
        raise UsageError(f"platform description: {key!r} must be {size} bytes")
    return decoded


@dataclass(frozen=True, slots=True)
class PlatformIdentity:
    """What the simulated platform is, all public: it is what the PCK certificate of every quote states.

    ``cpu_svn`` is the 16 TCB component SVNs as bytes, as on the Intel platforms whose CPUSVN and TCB components
    agree. Construction checks every size and range and raises :class:`UsageError`.
    """

    ppid: bytes
    fmspc: bytes
    pce_id: bytes
    tcb_components: tuple[int, ...]
    pce_svn: int
    platform_instance_id: bytes
    sgx_type: SgxType = SgxType.STANDARD

    def __post_init__(self) -> None:
        # PckTcb validates the components and the PCE SVN with the same rules as the certificate parser.
        PckTcb(tuple(self.tcb_components), self.pce_svn, bytes(16))
        for name, size in (("ppid", 16), ("fmspc", 6), ("pce_id", 2), ("platform_instance_id", 16)):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != size:
                raise UsageError(f"{name} must be {size} bytes")

    @classmethod
    def generate(cls) -> PlatformIdentity:
        """A new platform: random PPID, platform instance id and FMSPC (prefix 0xE5), the default TCB."""
        return cls(
            ppid=os.urandom(16),
            fmspc=_FMSPC_PREFIX + os.urandom(3) + bytes(2),
            pce_id=bytes(2),
            tcb_components=DEFAULT_TCB_COMPONENTS,
            pce_svn=DEFAULT_PCE_SVN,
            platform_instance_id=os.urandom(16),
        )

    @property
    def cpu_svn(self) -> CpuSvn:
        """The CPU SVN: the 16 component SVNs as bytes."""
        return CpuSvn(bytes(self.tcb_components))

    @property
    def pck_tcb(self) -> PckTcb:
        """The TCB that the PCK certificate certifies."""
        return PckTcb(tuple(self.tcb_components), self.pce_svn, bytes(self.cpu_svn))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (binary values as lowercase hex)."""
        return {
            "ppid": self.ppid.hex(),
            "fmspc": self.fmspc.hex(),
            "pce_id": self.pce_id.hex(),
            "cpu_svn": self.cpu_svn.hex(),
            "tcb_components": list(self.tcb_components),
            "pce_svn": self.pce_svn,
            "platform_instance_id": self.platform_instance_id.hex(),
            "sgx_type": self.sgx_type.name,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PlatformIdentity:
        """Read :meth:`to_dict` output back; raises :class:`UsageError` when a value is missing or malformed."""
        components = values.get("tcb_components")
        pce_svn = values.get("pce_svn")
        sgx_type = values.get("sgx_type")
        if not isinstance(components, list) or not isinstance(pce_svn, int):
            raise UsageError("platform description: tcb_components and pce_svn are required")
        if not isinstance(sgx_type, str) or sgx_type not in SgxType.__members__:
            raise UsageError("platform description: unknown sgx_type")
        identity = cls(
            ppid=_hex(values, "ppid", 16),
            fmspc=_hex(values, "fmspc", 6),
            pce_id=_hex(values, "pce_id", 2),
            tcb_components=tuple(components),
            pce_svn=pce_svn,
            platform_instance_id=_hex(values, "platform_instance_id", 16),
            sgx_type=SgxType[sgx_type],
        )
        if _hex(values, "cpu_svn", 16) != identity.cpu_svn:
            raise UsageError("platform description: cpu_svn does not match tcb_components")
        return identity


class SimulatedCpu:
    """The simulated CPU of one platform: EREPORT, the target side of a report MAC check, and EGETKEY.

    Holds the CPU secret; never log or pickle it (it has no pickle support and its repr omits the secret).
    """

    __slots__ = ("_platform", "_secret")

    def __init__(self, secret: bytes, platform: PlatformIdentity) -> None:
        if not isinstance(secret, bytes) or len(secret) != CPU_SECRET_SIZE:
            raise UsageError(f"the CPU secret must be {CPU_SECRET_SIZE} bytes")
        self._secret = secret
        self._platform = platform

    def __repr__(self) -> str:
        return f"SimulatedCpu(fmspc={self._platform.fmspc.hex()}, cpu_svn={self.cpu_svn.hex()})"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a SimulatedCpu holds the CPU secret and cannot be pickled")

    @property
    def platform(self) -> PlatformIdentity:
        """The platform's public identity."""
        return self._platform

    @property
    def cpu_svn(self) -> CpuSvn:
        """The CPU SVN that EREPORT writes into every report body."""
        return self._platform.cpu_svn

    def ereport(self, identity: ReportBody, target: TargetInfo, report_data: bytes) -> Report:
        """EREPORT: a report of the enclave ``identity`` over ``report_data``, MACed for ``target``.

        The body is ``identity`` with the CPU's CPU SVN and ``report_data`` (at most 64 bytes, zero-padded). The
        MAC is AES-128-CMAC over the 384-byte body under the target's report key for a random 32-byte key id,
        so only the target enclave (on this CPU) can check it. Raises :class:`UsageError` for longer data.
        """
        if len(report_data) > REPORT_DATA_SIZE:
            raise UsageError(f"report_data must be at most {REPORT_DATA_SIZE} bytes, got {len(report_data)}")
        body = dataclasses.replace(
            identity,
            cpu_svn=self.cpu_svn,
            report_data=ReportData(report_data.ljust(REPORT_DATA_SIZE, b"\0")),
        )
        key_id = os.urandom(KEY_ID_SIZE)
        key = derive_report_key(self._secret, target, cpu_svn=self.cpu_svn, key_id=key_id)
        return Report(body, key_id, report_mac(key, body))

    def verify_report(self, report: Report, target_identity: ReportBody) -> None:
        """Check a report's MAC as the enclave ``target_identity`` does with EGETKEY(REPORT_KEY).

        Raises :class:`SignatureError` when the report was not made on this CPU for this target, or was changed.
        """
        target = TargetInfo.for_enclave(target_identity)
        key = derive_report_key(self._secret, target, cpu_svn=self.cpu_svn, key_id=report.key_id)
        if not hmac.compare_digest(report_mac(key, report.body), report.mac):
            raise SignatureError("the report's MAC does not verify for this target enclave on this platform")

    def seal_key(self, identity: ReportBody, request: KeyRequest) -> bytes:
        """EGETKEY(SEAL_KEY) for the enclave ``identity``; raises PlatformError for an SVN above its own."""
        return derive_seal_key(self._secret, identity, request)
