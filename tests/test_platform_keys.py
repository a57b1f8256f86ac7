"""The simulated CPU's EGETKEY / EREPORT key derivation (enklave.platform._keys)."""

from __future__ import annotations

import hmac

import pytest
from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from enklave.errors import PlatformError, UsageError
from enklave.platform._base import KeyPolicy, KeyRequest
from enklave.platform._keys import derive_report_key, derive_seal_key, report_mac
from enklave.sgx.report import AttributeFlags, Attributes, ReportBody, TargetInfo

SECRET = bytes(range(32))
MRENCLAVE = bytes.fromhex("11" * 32)
MRSIGNER = bytes.fromhex("22" * 32)
CPU_SVN = bytes([3] * 16)
KEY_ID = bytes(range(100, 132))
ATTRIBUTES = Attributes(AttributeFlags.INIT | AttributeFlags.MODE64BIT, 0x3)


def _identity(**overrides: object) -> ReportBody:
    fields: dict[str, object] = {"mr_enclave": MRENCLAVE, "mr_signer": MRSIGNER, "isv_prod_id": 7,
                                 "isv_svn": 5, "cpu_svn": CPU_SVN, "attributes": ATTRIBUTES,
                                 "misc_select": 0x1}  # fmt: skip
    fields.update(overrides)
    return ReportBody.build(**fields)  # type: ignore[arg-type]


def _request(policy: KeyPolicy = KeyPolicy.MRENCLAVE, *, isv_svn: int = 5, cpu_svn: bytes = CPU_SVN,
             key_id: bytes = KEY_ID) -> KeyRequest:  # fmt: skip
    return KeyRequest(policy, isv_svn, cpu_svn, key_id)


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def _expected_key(dependencies: bytes) -> bytes:
    """The documented construction, written out independently of the module under test."""
    root = HKDF(hashes.SHA256(), 16, None, b"enklave simulated CPU: EGETKEY root key v1").derive(SECRET)
    mac = cmac.CMAC(algorithms.AES(root))
    mac.update(dependencies)
    return mac.finalize()


@pytest.mark.parametrize("policy", [KeyPolicy.MRENCLAVE, KeyPolicy.MRSIGNER])
def test_seal_key_known_answer(policy: KeyPolicy) -> None:
    identity = _identity()
    request = _request(policy, isv_svn=4, cpu_svn=bytes([2] * 16))
    flags_mask = 0xFF0000000000000B
    dependencies = b"".join([
        _u16(4),  # KEYNAME = SEAL
        _u16(int(policy)),
        _u16(7),  # ISV PROD ID
        _u16(4),  # the requested ISV SVN, not the enclave's 5
        bytes(16),  # ISV EXT PROD ID (KSS, not requested)
        bytes(16),  # ISV FAMILY ID (KSS, not requested)
        bytes(16),  # OWNEREPOCH
        _u64(ATTRIBUTES.flags & flags_mask) + _u64(0),  # masked attributes: INIT only, XFRM masked out
        _u64(flags_mask) + _u64(0),  # attribute mask
        MRENCLAVE if policy == KeyPolicy.MRENCLAVE else bytes(32),
        MRSIGNER if policy == KeyPolicy.MRSIGNER else bytes(32),
        KEY_ID,
        bytes([2] * 16),  # the requested CPU SVN
        _u32(0x1 & 0xF0000000),  # masked MISCSELECT
        _u32(0xF0000000),  # MISC mask
        bytes(64),  # CONFIGID
        _u16(0),  # CONFIGSVN
    ])  # fmt: skip
    assert len(dependencies) == 274
    assert derive_seal_key(SECRET, identity, request) == _expected_key(dependencies)


def test_report_key_known_answer() -> None:
    target = TargetInfo.for_enclave(_identity())
    dependencies = b"".join([
        _u16(3), _u16(0), _u16(0), _u16(0), bytes(16), bytes(16), bytes(16),
        ATTRIBUTES.to_bytes(), b"\xff" * 16, MRENCLAVE, bytes(32), KEY_ID, CPU_SVN,
        _u32(0x1), _u32(0xFFFFFFFF), bytes(64), _u16(0),
    ])  # fmt: skip
    assert derive_report_key(SECRET, target, cpu_svn=CPU_SVN, key_id=KEY_ID) == _expected_key(dependencies)


def test_seal_keys_are_16_bytes_and_deterministic() -> None:
    key = derive_seal_key(SECRET, _identity(), _request())
    assert len(key) == 16
    assert key == derive_seal_key(SECRET, _identity(), _request())


def test_policy_selects_which_identity_counts() -> None:
    other_enclave = _identity(mr_enclave=b"\x33" * 32)
    other_signer = _identity(mr_signer=b"\x44" * 32)
    by_enclave = _request(KeyPolicy.MRENCLAVE)
    by_signer = _request(KeyPolicy.MRSIGNER)
    # MRENCLAVE keys follow MRENCLAVE and ignore MRSIGNER; MRSIGNER keys the other way round.
    assert derive_seal_key(SECRET, _identity(), by_enclave) != derive_seal_key(
        SECRET, other_enclave, by_enclave
    )
    assert derive_seal_key(SECRET, _identity(), by_enclave) == derive_seal_key(
        SECRET, other_signer, by_enclave
    )
    assert derive_seal_key(SECRET, _identity(), by_signer) == derive_seal_key(
        SECRET, other_enclave, by_signer
    )
    assert derive_seal_key(SECRET, _identity(), by_signer) != derive_seal_key(SECRET, other_signer, by_signer)
    assert derive_seal_key(SECRET, _identity(), by_enclave) != derive_seal_key(SECRET, _identity(), by_signer)


@pytest.mark.parametrize(
    ("identity", "request_", "secret"),
    [
        (_identity(isv_prod_id=8), _request(), SECRET),
        (_identity(), _request(isv_svn=4), SECRET),
        (_identity(), _request(cpu_svn=bytes([3] * 15 + [2])), SECRET),
        (_identity(), _request(key_id=bytes(32)), SECRET),
        (_identity(attributes=Attributes(ATTRIBUTES.flags | AttributeFlags.DEBUG, 0x3)), _request(), SECRET),
        (_identity(misc_select=0x10000001), _request(), SECRET),
        (_identity(), _request(), bytes(32)),
    ],
    ids=["isv_prod_id", "isv_svn", "cpu_svn", "key_id", "debug", "misc_select", "cpu_secret"],
)
def test_every_dependency_changes_the_seal_key(
    identity: ReportBody, request_: KeyRequest, secret: bytes
) -> None:
    assert derive_seal_key(secret, identity, request_) != derive_seal_key(SECRET, _identity(), _request())


def test_masked_bits_do_not_change_the_seal_key() -> None:
    # XFRM and the low MISCSELECT bits are outside the masks (the OS may change them without losing data).
    changed = _identity(attributes=Attributes(ATTRIBUTES.flags, 0xE7), misc_select=0x0)
    assert derive_seal_key(SECRET, changed, _request()) == derive_seal_key(SECRET, _identity(), _request())


def test_higher_isv_svn_is_refused() -> None:
    with pytest.raises(PlatformError, match="ISV SVN 6"):
        derive_seal_key(SECRET, _identity(), _request(isv_svn=6))


@pytest.mark.parametrize("component", [0, 7, 15])
def test_cpu_svn_above_own_in_any_component_is_refused(component: int) -> None:
    # Lower everywhere else, higher in one component: still refused, as SGX compares each component.
    requested = bytearray([0] * 16)
    requested[component] = 4
    with pytest.raises(PlatformError, match="CPU SVN"):
        derive_seal_key(SECRET, _identity(), _request(cpu_svn=bytes(requested)))


def test_lower_svns_are_allowed() -> None:
    key = derive_seal_key(SECRET, _identity(), _request(isv_svn=0, cpu_svn=bytes(16)))
    assert len(key) == 16


def test_short_cpu_secret_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        derive_seal_key(b"short", _identity(), _request())


def test_report_mac_verifies_only_with_the_targets_key() -> None:
    body = _identity(report_data=b"hello")
    target = TargetInfo.for_enclave(_identity())
    mac = report_mac(derive_report_key(SECRET, target, cpu_svn=CPU_SVN, key_id=KEY_ID), body)
    assert len(mac) == 16
    # The target re-derives its own report key and gets the same MAC.
    assert hmac.compare_digest(mac, report_mac(derive_report_key(SECRET, target, cpu_svn=CPU_SVN,
                                                                  key_id=KEY_ID), body))  # fmt: skip
    others = [
        TargetInfo.for_enclave(_identity(mr_enclave=b"\x55" * 32)),
        TargetInfo.for_enclave(_identity(attributes=Attributes(ATTRIBUTES.flags | AttributeFlags.DEBUG, 3))),
        TargetInfo.for_enclave(_identity(misc_select=0x2)),
    ]
    for other in others:
        assert report_mac(derive_report_key(SECRET, other, cpu_svn=CPU_SVN, key_id=KEY_ID), body) != mac
    assert report_mac(derive_report_key(SECRET, target, cpu_svn=CPU_SVN, key_id=bytes(32)), body) != mac
    assert report_mac(derive_report_key(bytes(32), target, cpu_svn=CPU_SVN, key_id=KEY_ID), body) != mac
    # Any change of the body changes the MAC.
    assert report_mac(derive_report_key(SECRET, target, cpu_svn=CPU_SVN, key_id=KEY_ID),
                      _identity(report_data=b"hellp")) != mac  # fmt: skip


def test_report_key_uses_config_id_only_for_kss_targets() -> None:
    plain = _identity(config_id=b"\x01" * 64)
    kss_attributes = Attributes(ATTRIBUTES.flags | AttributeFlags.KSS, 3)

    def key(body: ReportBody) -> bytes:
        return derive_report_key(SECRET, TargetInfo.for_enclave(body), cpu_svn=CPU_SVN, key_id=KEY_ID)

    assert key(plain) == key(_identity())
    assert key(_identity(attributes=kss_attributes, config_id=b"\x01" * 64)) != key(
        _identity(attributes=kss_attributes)
    )


def test_report_mac_rejects_a_wrong_size_key() -> None:
    with pytest.raises(UsageError):
        report_mac(bytes(15), _identity())
