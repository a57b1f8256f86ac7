"""SGX enclave identity structures: attributes, report body, report and target info.

Layouts follow the Intel SDM, Vol. 3D, "SGX Data Structures" (SECS attributes, REPORT, TARGETINFO) and the
SGX SDK's ``sgx_report_body_t``. All integers are little-endian. Every model is frozen and round-trips:
``X.from_bytes(b).to_bytes() == b`` for any valid ``b``, reserved bytes included.
"""

from __future__ import annotations

import enum
import operator
import struct
from dataclasses import dataclass
from typing import NewType

from enklave.errors import UsageError
from enklave.sgx._reader import expect_size

__all__ = [
    "ATTRIBUTES_SIZE",
    "REPORT_BODY_SIZE",
    "REPORT_DATA_SIZE",
    "REPORT_SIZE",
    "TARGET_INFO_SIZE",
    "AttributeFlags",
    "Attributes",
    "ConfigId",
    "CpuSvn",
    "MrEnclave",
    "MrSigner",
    "Report",
    "ReportBody",
    "ReportData",
    "TargetInfo",
]

MrEnclave = NewType("MrEnclave", bytes)
"""SHA-256 measurement of the enclave's pages and layout (32 bytes)."""
MrSigner = NewType("MrSigner", bytes)
"""SHA-256 of the enclave signer's RSA-3072 modulus, little-endian (32 bytes)."""
CpuSvn = NewType("CpuSvn", bytes)
"""The CPU security version, 16 opaque bytes."""
ReportData = NewType("ReportData", bytes)
"""64 bytes of data the enclave binds into its report (typically a hash of a key or nonce)."""
ConfigId = NewType("ConfigId", bytes)
"""64 bytes of configuration identity (KSS)."""

ATTRIBUTES_SIZE = 16
REPORT_BODY_SIZE = 384
REPORT_SIZE = 432
TARGET_INFO_SIZE = 512
REPORT_DATA_SIZE = 64


class AttributeFlags(enum.IntFlag):
    """SECS.ATTRIBUTES.FLAGS bits (SDM Vol. 3D, Table "Layout of ATTRIBUTES Structure")."""

    INIT = 0x01
    DEBUG = 0x02
    MODE64BIT = 0x04
    PROVISIONKEY = 0x10
    EINITTOKENKEY = 0x20
    CET = 0x40
    KSS = 0x80
    AEXNOTIFY = 0x400


_ATTRIBUTES = struct.Struct("<QQ")


def _check(value: bytes, size: int, name: str) -> None:
    # Construction from Python is the caller's responsibility; parsing guarantees sizes before this runs.
    if len(value) != size:
        raise UsageError(f"{name} must be {size} bytes, got {len(value)}")


@dataclass(frozen=True, slots=True)
class Attributes:
    """SECS.ATTRIBUTES: 64-bit flags and the 64-bit XSAVE feature request mask (XFRM)."""

    flags: int
    xfrm: int

    @classmethod
    def from_bytes(cls, data: bytes) -> Attributes:
        """Parse 16 bytes; raises :class:`InvalidQuote` on a wrong size."""
        expect_size(data, ATTRIBUTES_SIZE, "attributes")
        flags, xfrm = _ATTRIBUTES.unpack(data)
        return cls(flags, xfrm)

    def to_bytes(self) -> bytes:
        """The 16-byte encoding."""
        return _ATTRIBUTES.pack(self.flags, self.xfrm)

    @property
    def debug(self) -> bool:
        """True for a debug enclave, whose memory the host can read: never trust its secrets."""
        return bool(self.flags & AttributeFlags.DEBUG)

    @property
    def mode64bit(self) -> bool:
        """True for a 64-bit enclave."""
        return bool(self.flags & AttributeFlags.MODE64BIT)

    def flag_names(self) -> list[str]:
        """Names of the set flag bits, in bit order (unknown bits as hex)."""
        names = [f.name for f in AttributeFlags if self.flags & f and f.name]
        unknown = self.flags & ~sum(AttributeFlags)
        if unknown:
            names.append(hex(unknown))
        return names


# sgx_report_body_t: cpu_svn[16] misc_select(u32) reserved1[12] isv_ext_prod_id[16] attributes[16]
# mr_enclave[32] reserved2[32] mr_signer[32] reserved3[32] config_id[64] isv_prod_id(u16) isv_svn(u16)
# config_svn(u16) reserved4[42] isv_family_id[16] report_data[64]
# The attributes are read as their two 64-bit fields (flags, XFRM), as Attributes.from_bytes reads them.
_BODY = struct.Struct("<16sI12s16sQQ32s32s32s32s64sHHH42s16s64s")


@dataclass(frozen=True, slots=True)
class ReportBody:
    """The 384-byte body of an SGX REPORT: the enclave identity that a quote signs.

    Field names follow the SGX SDK. ``mr_enclave`` is the measurement, ``mr_signer`` the signer identity,
    ``isv_prod_id``/``isv_svn`` the product and its security version, ``report_data`` what the enclave bound in.
    """

    cpu_svn: CpuSvn
    misc_select: int
    reserved1: bytes
    isv_ext_prod_id: bytes
    attributes: Attributes
    mr_enclave: MrEnclave
    reserved2: bytes
    mr_signer: MrSigner
    reserved3: bytes
    config_id: ConfigId
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    reserved4: bytes
    isv_family_id: bytes
    report_data: ReportData

    def __post_init__(self) -> None:
        # One pass over the field tables accepts a valid body (most come from the parser, on the verification hot
        # path); the loops below only run to name the first field that is wrong.
        if tuple(map(len, _BODY_BYTE_VALUES(self))) == _BODY_BYTE_SIZES and all(
            0 <= value < limit for value, limit in zip(_BODY_INT_VALUES(self), _BODY_INT_LIMITS, strict=True)
        ):
            return
        for name, size in _BODY_BYTE_FIELDS:
            _check(getattr(self, name), size, name)
        for name, bits in _BODY_INT_FIELDS:
            value = getattr(self, name)
            if not 0 <= value < (1 << bits):
                raise UsageError(f"{name} must fit in {bits} bits, got {value}")

    @classmethod
    def from_bytes(cls, data: bytes) -> ReportBody:
        """Parse exactly 384 bytes; raises :class:`InvalidQuote` on a wrong size."""
        expect_size(data, REPORT_BODY_SIZE, "report body")
        f = _BODY.unpack(data)
        # The NewTypes (CpuSvn, MrEnclave, MrSigner, ConfigId, ReportData) are plain bytes at run time: calling
        # them would only cost time on the verification hot path.
        return cls(
            f[0], f[1], f[2], f[3], Attributes(f[4], f[5]), f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13],
            f[14], f[15], f[16],
        )  # fmt: skip

    def to_bytes(self) -> bytes:
        """The 384-byte encoding."""
        return _BODY.pack(
            self.cpu_svn, self.misc_select, self.reserved1, self.isv_ext_prod_id, self.attributes.flags,
            self.attributes.xfrm, self.mr_enclave, self.reserved2, self.mr_signer, self.reserved3, self.config_id,
            self.isv_prod_id, self.isv_svn, self.config_svn, self.reserved4, self.isv_family_id, self.report_data,
        )  # fmt: skip

    @property
    def debug(self) -> bool:
        """True when the enclave was launched in debug mode."""
        return self.attributes.debug

    @classmethod
    def build(
        cls,
        *,
        mr_enclave: bytes,
        mr_signer: bytes,
        isv_prod_id: int = 0,
        isv_svn: int = 0,
        attributes: Attributes | None = None,
        report_data: bytes = b"",
        cpu_svn: bytes = bytes(16),
        misc_select: int = 0,
        config_id: bytes = bytes(64),
        config_svn: int = 0,
        isv_ext_prod_id: bytes = bytes(16),
        isv_family_id: bytes = bytes(16),
    ) -> ReportBody:
        """Build a body with zeroed reserved fields; ``report_data`` shorter than 64 bytes is zero-padded."""
        if len(report_data) > REPORT_DATA_SIZE:
            raise UsageError(f"report_data must be at most {REPORT_DATA_SIZE} bytes, got {len(report_data)}")
        return cls(
            cpu_svn=CpuSvn(cpu_svn),
            misc_select=misc_select,
            reserved1=bytes(12),
            isv_ext_prod_id=isv_ext_prod_id,
            attributes=attributes or Attributes(AttributeFlags.INIT | AttributeFlags.MODE64BIT, 0x3),
            mr_enclave=MrEnclave(mr_enclave),
            reserved2=bytes(32),
            mr_signer=MrSigner(mr_signer),
            reserved3=bytes(32),
            config_id=ConfigId(config_id),
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            config_svn=config_svn,
            reserved4=bytes(42),
            isv_family_id=isv_family_id,
            report_data=ReportData(report_data.ljust(REPORT_DATA_SIZE, b"\0")),
        )


_BODY_BYTE_FIELDS = (
    ("cpu_svn", 16), ("reserved1", 12), ("isv_ext_prod_id", 16), ("mr_enclave", 32), ("reserved2", 32),
    ("mr_signer", 32), ("reserved3", 32), ("config_id", 64), ("reserved4", 42), ("isv_family_id", 16),
    ("report_data", 64),
)  # fmt: skip
_BODY_BYTE_SIZES = tuple(size for _, size in _BODY_BYTE_FIELDS)
_BODY_BYTE_VALUES = operator.attrgetter(*(name for name, _ in _BODY_BYTE_FIELDS))
_BODY_INT_FIELDS = (("misc_select", 32), ("isv_prod_id", 16), ("isv_svn", 16), ("config_svn", 16))
_BODY_INT_VALUES = operator.attrgetter(*(name for name, _ in _BODY_INT_FIELDS))
_BODY_INT_LIMITS = tuple(1 << bits for _, bits in _BODY_INT_FIELDS)


@dataclass(frozen=True, slots=True)
class Report:
    """An SGX REPORT (432 bytes): the body, the key id and the CMAC over the body with the target's report key."""

    body: ReportBody
    key_id: bytes
    mac: bytes

    def __post_init__(self) -> None:
        _check(self.key_id, 32, "key_id")
        _check(self.mac, 16, "mac")

    @classmethod
    def from_bytes(cls, data: bytes) -> Report:
        """Parse exactly 432 bytes; raises :class:`InvalidQuote` on a wrong size."""
        expect_size(data, REPORT_SIZE, "report")
        return cls(ReportBody.from_bytes(data[:REPORT_BODY_SIZE]), data[384:416], data[416:432])

    def to_bytes(self) -> bytes:
        """The 432-byte encoding."""
        return self.body.to_bytes() + self.key_id + self.mac


# sgx_target_info_t: mr_enclave[32] attributes[16] reserved1[2] config_svn(u16) misc_select(u32)
# reserved2[8] config_id[64] reserved3[384]
_TARGET = struct.Struct("<32s16s2sHI8s64s384s")


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """SGX TARGETINFO (512 bytes): the enclave a report is addressed to (its report key verifies the MAC)."""

    mr_enclave: MrEnclave
    attributes: Attributes
    reserved1: bytes
    config_svn: int
    misc_select: int
    reserved2: bytes
    config_id: ConfigId
    reserved3: bytes

    def __post_init__(self) -> None:
        for name, size in (("mr_enclave", 32), ("reserved1", 2), ("reserved2", 8), ("config_id", 64),
                           ("reserved3", 384)):  # fmt: skip
            _check(getattr(self, name), size, name)

    @classmethod
    def from_bytes(cls, data: bytes) -> TargetInfo:
        """Parse exactly 512 bytes; raises :class:`InvalidQuote` on a wrong size."""
        expect_size(data, TARGET_INFO_SIZE, "target info")
        f = _TARGET.unpack(data)
        return cls(MrEnclave(f[0]), Attributes.from_bytes(f[1]), f[2], f[3], f[4], f[5], ConfigId(f[6]), f[7])

    def to_bytes(self) -> bytes:
        """The 512-byte encoding."""
        return _TARGET.pack(
            self.mr_enclave, self.attributes.to_bytes(), self.reserved1, self.config_svn, self.misc_select,
            self.reserved2, self.config_id, self.reserved3,
        )  # fmt: skip

    @classmethod
    def for_enclave(cls, body: ReportBody) -> TargetInfo:
        """The target info that addresses reports to the enclave described by ``body``."""
        return cls(
            body.mr_enclave, body.attributes, bytes(2), body.config_svn, body.misc_select, bytes(8),
            body.config_id, bytes(384),
        )  # fmt: skip
