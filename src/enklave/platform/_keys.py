"""Key derivation of the simulated CPU: EGETKEY seal keys and EREPORT report keys, modelled on SGX.

This module is pure (bytes in, bytes out, no I/O, no randomness) and follows the SDM, Vol. 3D, EGETKEY "Key
Derivation" and EREPORT pseudo-code: a key is derived from the CPU's secret and a *key dependencies* string, so
any change in any dependency (key name, policy, identity, SVNs, key id) gives an unrelated key.

Derivation, fixed for this project and documented in docs/sealing.md:

1. The CPU's root derivation key is ``K = HKDF-SHA256(IKM=cpu_secret, salt=None, info=ROOT_KEY_INFO, L=16)``.
   It stands for the fused seal secret of a real CPU; it never leaves this module.
2. The key dependencies string is :data:`KEY_DEPENDENCIES` packed little-endian (see :func:`key_dependencies`).
3. The key is ``AES-128-CMAC(K, key dependencies)``: 16 bytes, as EGETKEY returns.

The CPU SVN is 16 component bytes; a request is refused when any component is higher than the enclave's own (a
key for a future TCB must not be obtainable), and when the requested ISV SVN is higher than the enclave's.
"""

from __future__ import annotations

import enum
import struct

from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from enklave.errors import PlatformError, UsageError
from enklave.platform._base import KEY_ID_SIZE, KeyPolicy, KeyRequest
from enklave.sgx.report import REPORT_BODY_SIZE, AttributeFlags, Attributes, ReportBody, TargetInfo

__all__ = [
    "KEY_DEPENDENCIES",
    "KEY_SIZE",
    "MISC_MASK",
    "OWNER_EPOCH",
    "ROOT_KEY_INFO",
    "SEAL_ATTRIBUTE_MASK",
    "KeyName",
    "cpu_svn_allows",
    "derive_report_key",
    "derive_seal_key",
    "key_dependencies",
    "report_mac",
]

KEY_SIZE = 16
"""EGETKEY and EREPORT keys are 128-bit AES keys."""

ROOT_KEY_INFO = b"enklave simulated CPU: EGETKEY root key v1"
"""HKDF ``info`` that turns the simulated CPU's secret into its 16-byte root derivation key."""

OWNER_EPOCH = bytes(16)
"""The simulated CPU's fixed SGXOWNEREPOCH (on hardware set by the BIOS; all zeros is the common default)."""

SEAL_ATTRIBUTE_MASK = Attributes(flags=0xFF0000000000000B, xfrm=0)
"""Which attribute bits seal keys depend on: INIT, DEBUG, bit 3 and the high reserved byte of FLAGS, no XFRM.

These are the SGX SDK's sealing defaults, so a debug enclave never derives its production twin's keys while an
XFRM change (which the OS may make) does not lose sealed data.
"""

MISC_MASK = 0xF0000000
"""Which MISCSELECT bits seal keys depend on: the SDK default, the security-relevant high nibble only."""

_FULL_ATTRIBUTE_MASK = Attributes(flags=(1 << 64) - 1, xfrm=(1 << 64) - 1)
_FULL_MISC_MASK = 0xFFFFFFFF
_CPU_SVN_SIZE = 16


class KeyName(enum.IntEnum):
    """KEYREQUEST.KEYNAME values (SDM Vol. 3D, "Key Request (KEYREQUEST)"), the ones this CPU derives."""

    REPORT = 3
    SEAL = 4


KEY_DEPENDENCIES = struct.Struct("<HHHH16s16s16s16s16s32s32s32s16sII64sH")
"""Layout of the key dependencies string (274 bytes), all little-endian, in this order:

key name (u16), key policy (u16), ISV PROD ID (u16), ISV SVN (u16), ISV EXT PROD ID (16, KSS, zero here),
ISV FAMILY ID (16, KSS, zero here), OWNEREPOCH (16), masked ATTRIBUTES (16), ATTRIBUTE MASK (16), MRENCLAVE or
zeros (32), MRSIGNER or zeros (32), KEYID (32), CPU SVN (16), masked MISCSELECT (u32), MISC MASK (u32),
CONFIGID (64), CONFIGSVN (u16).
"""


def key_dependencies(
    *,
    key_name: KeyName,
    key_policy: int,
    isv_prod_id: int,
    isv_svn: int,
    attributes: Attributes,
    attribute_mask: Attributes,
    mr_enclave: bytes,
    mr_signer: bytes,
    key_id: bytes,
    cpu_svn: bytes,
    misc_select: int,
    misc_mask: int,
    config_id: bytes = bytes(64),
    config_svn: int = 0,
) -> bytes:
    """The key dependencies string for one derivation; attributes and MISCSELECT are masked here.

    Raises :class:`~enklave.errors.UsageError` when a field has the wrong size or range.
    """
    for name, value, size in (("mr_enclave", mr_enclave, 32), ("mr_signer", mr_signer, 32),
                              ("key_id", key_id, KEY_ID_SIZE), ("cpu_svn", cpu_svn, _CPU_SVN_SIZE),
                              ("config_id", config_id, 64)):  # fmt: skip
        if len(value) != size:
            raise UsageError(f"{name} must be {size} bytes, got {len(value)}")
    masked = Attributes(attributes.flags & attribute_mask.flags, attributes.xfrm & attribute_mask.xfrm)
    try:
        return KEY_DEPENDENCIES.pack(
            key_name, key_policy, isv_prod_id, isv_svn, bytes(16), bytes(16), OWNER_EPOCH, masked.to_bytes(),
            attribute_mask.to_bytes(), mr_enclave, mr_signer, key_id, cpu_svn, misc_select & misc_mask,
            misc_mask, config_id, config_svn,
        )  # fmt: skip
    except struct.error as exc:
        raise UsageError(f"a key dependency is out of range: {exc}") from exc


def cpu_svn_allows(own: bytes, requested: bytes) -> bool:
    """True when ``requested`` is not above ``own`` in any of the 16 CPU SVN components (as EGETKEY compares)."""
    if len(own) != _CPU_SVN_SIZE or len(requested) != _CPU_SVN_SIZE:
        raise UsageError(f"a CPU SVN must be {_CPU_SVN_SIZE} bytes")
    return all(r <= o for o, r in zip(own, requested, strict=True))


def derive_seal_key(cpu_secret: bytes, identity: ReportBody, request: KeyRequest) -> bytes:
    """EGETKEY(SEAL_KEY): the 16-byte seal key of the enclave ``identity`` for ``request``.

    The key depends on the policy's identity (MRENCLAVE or MRSIGNER, the other replaced by zeros), the ISV
    PROD ID, the *requested* ISV SVN and CPU SVN, the masked attributes and MISCSELECT, and the key id.
    Raises :class:`~enklave.errors.PlatformError` when the requested ISV SVN or any CPU SVN component is above
    the enclave's own (as EGETKEY fails with SGX_INVALID_ISVSVN / SGX_INVALID_CPUSVN), and
    :class:`~enklave.errors.UsageError` when ``cpu_secret`` is shorter than 16 bytes.
    """
    # 1. Refuse keys of a newer enclave version or a newer TCB: they would open data sealed for the future.
    if request.isv_svn > identity.isv_svn:
        raise PlatformError(
            f"EGETKEY refused: requested ISV SVN {request.isv_svn} is above the enclave's {identity.isv_svn}"
        )
    if not cpu_svn_allows(identity.cpu_svn, request.cpu_svn):
        raise PlatformError("EGETKEY refused: the requested CPU SVN is above the platform's CPU SVN")
    # 2. Only the identity the policy names goes into the key; the other is replaced by zeros.
    policy = request.policy
    dependencies = key_dependencies(
        key_name=KeyName.SEAL,
        key_policy=int(policy),
        isv_prod_id=identity.isv_prod_id,
        isv_svn=request.isv_svn,
        attributes=identity.attributes,
        attribute_mask=SEAL_ATTRIBUTE_MASK,
        mr_enclave=identity.mr_enclave if policy & KeyPolicy.MRENCLAVE else bytes(32),
        mr_signer=identity.mr_signer if policy & KeyPolicy.MRSIGNER else bytes(32),
        key_id=request.key_id,
        cpu_svn=request.cpu_svn,
        misc_select=identity.misc_select,
        misc_mask=MISC_MASK,
    )
    # 3. Derive under the CPU's root key.
    return _cmac(_root_key(cpu_secret), dependencies)


def derive_report_key(cpu_secret: bytes, target: TargetInfo, *, cpu_svn: bytes, key_id: bytes) -> bytes:
    """The 16-byte report key of the enclave ``target`` at ``cpu_svn`` and ``key_id`` (EREPORT / EGETKEY).

    As on hardware the key depends on the TARGET's MRENCLAVE, attributes and MISCSELECT (and, when the target
    has the KSS attribute, its CONFIGID and CONFIGSVN), so only the target enclave can check a report's MAC.
    Raises :class:`~enklave.errors.UsageError` on a wrong-size ``cpu_svn``, ``key_id`` or short ``cpu_secret``.
    """
    kss = bool(target.attributes.flags & AttributeFlags.KSS)
    dependencies = key_dependencies(
        key_name=KeyName.REPORT,
        key_policy=0,
        isv_prod_id=0,
        isv_svn=0,
        attributes=target.attributes,
        attribute_mask=_FULL_ATTRIBUTE_MASK,
        mr_enclave=target.mr_enclave,
        mr_signer=bytes(32),
        key_id=key_id,
        cpu_svn=cpu_svn,
        misc_select=target.misc_select,
        misc_mask=_FULL_MISC_MASK,
        config_id=target.config_id if kss else bytes(64),
        config_svn=target.config_svn if kss else 0,
    )
    return _cmac(_root_key(cpu_secret), dependencies)


def report_mac(report_key: bytes, body: ReportBody) -> bytes:
    """AES-128-CMAC of the 384-byte report body under ``report_key``: the 16-byte MAC of an SGX REPORT.

    Compare MACs with :func:`hmac.compare_digest`. Raises :class:`~enklave.errors.UsageError` on a key that is
    not 16 bytes.
    """
    if len(report_key) != KEY_SIZE:
        raise UsageError(f"a report key must be {KEY_SIZE} bytes, got {len(report_key)}")
    data = body.to_bytes()
    if len(data) != REPORT_BODY_SIZE:  # A ReportBody always encodes to 384 bytes; this guards the invariant.
        raise UsageError("a report body must encode to 384 bytes")
    return _cmac(report_key, data)


def _root_key(cpu_secret: bytes) -> bytes:
    # The secret is the platform's own; a short one is a programming error, not bad input.
    if len(cpu_secret) < KEY_SIZE:
        raise UsageError(f"the CPU secret must be at least {KEY_SIZE} bytes")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=ROOT_KEY_INFO).derive(cpu_secret)


def _cmac(key: bytes, data: bytes) -> bytes:
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()
