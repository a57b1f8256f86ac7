"""What enclave code can ask of its TEE, as one interface with a simulated and a Gramine implementation.

A :class:`Platform` answers four requests, mirroring the SGX instructions and the Gramine pseudo-files behind
them: the enclave's own identity (the REPORT body the CPU would put in a report), EREPORT (a report addressed to
a target enclave), a DCAP quote v3 over chosen report data (the quoting enclave), and EGETKEY for seal keys.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass

from enklave.errors import UsageError
from enklave.sgx.report import REPORT_DATA_SIZE, Report, ReportBody, TargetInfo

__all__ = ["KEY_ID_SIZE", "KeyPolicy", "KeyRequest", "Platform"]

KEY_ID_SIZE = 32


class KeyPolicy(enum.IntFlag):
    """KEYREQUEST.KEYPOLICY bits (SDM Vol. 3D, "Key Request (KEYREQUEST)"): which identity a key is bound to."""

    MRENCLAVE = 0x0001
    MRSIGNER = 0x0002


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """An EGETKEY request for a seal key.

    ``policy`` is exactly one of MRENCLAVE or MRSIGNER. ``isv_svn`` and ``cpu_svn`` may be lower than the
    enclave's own (to read data sealed by an older version) but never higher: the platform refuses with
    :class:`~enklave.errors.PlatformError`, as EGETKEY faults. ``key_id`` (32 bytes) makes every key unique.
    """

    policy: KeyPolicy
    isv_svn: int
    cpu_svn: bytes
    key_id: bytes

    def __post_init__(self) -> None:
        if self.policy not in (KeyPolicy.MRENCLAVE, KeyPolicy.MRSIGNER):
            raise UsageError("a key request's policy must be exactly one of MRENCLAVE or MRSIGNER")
        if not 0 <= self.isv_svn <= 0xFFFF:
            raise UsageError(f"isv_svn must fit in 16 bits, got {self.isv_svn}")
        if len(self.cpu_svn) != 16:
            raise UsageError(f"cpu_svn must be 16 bytes, got {len(self.cpu_svn)}")
        if len(self.key_id) != KEY_ID_SIZE:
            raise UsageError(f"key_id must be {KEY_ID_SIZE} bytes, got {len(self.key_id)}")


class Platform(ABC):
    """The TEE an enclave runs on. Implementations raise :class:`~enklave.errors.PlatformError` on failure."""

    #: ``"sim"`` or ``"sgx"``.
    mode: str
    #: True when evidence from this platform chains to a simulated root, never to Intel's.
    simulated: bool

    @property
    @abstractmethod
    def identity(self) -> ReportBody:
        """This enclave's REPORT body with all-zero report data: MRENCLAVE, MRSIGNER, ISV ids, attributes."""

    @abstractmethod
    def get_report(self, target_info: TargetInfo | None, report_data: bytes) -> Report:
        """EREPORT: a report over ``report_data`` (at most 64 bytes, zero-padded), MACed for ``target_info``
        (``None`` targets this enclave itself)."""

    @abstractmethod
    def get_quote(self, report_data: bytes) -> bytes:
        """A DCAP ECDSA-P256 quote (version 3) of this enclave over ``report_data`` (at most 64 bytes)."""

    @abstractmethod
    def get_seal_key(self, request: KeyRequest) -> bytes:
        """EGETKEY(SEAL_KEY): the 16-byte key for ``request``; refuses SVNs above this enclave's own."""


def check_report_data(report_data: bytes) -> bytes:
    """``report_data`` zero-padded to 64 bytes; raises UsageError when it is longer."""
    if len(report_data) > REPORT_DATA_SIZE:
        raise UsageError(f"report_data must be at most {REPORT_DATA_SIZE} bytes, got {len(report_data)}")
    return report_data.ljust(REPORT_DATA_SIZE, b"\0")
