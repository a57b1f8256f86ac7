"""Sealing: round trips, the unique and product policies, rollback, tampering and the blob format."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enklave.errors import InvalidSealedBlob, PlatformError, SealingError, UsageError
from enklave.platform._base import KeyRequest, Platform
from enklave.platform._keys import derive_seal_key
from enklave.sealing import SealedBlob, SealingLimits, UnsealedData, seal, unseal
from enklave.sealing._blob import HEADER_SIZE
from enklave.sgx.report import AttributeFlags, Attributes, Report, ReportBody, TargetInfo

SECRET = b"\x5a" * 32
ENCLAVE_A = b"\xaa" * 32
ENCLAVE_B = b"\xbb" * 32
SIGNER = b"\x51" * 32
OTHER_SIGNER = b"\x52" * 32
CPU_SVN = bytes([4] * 16)


class KeyOnlyPlatform(Platform):
    """A platform that derives seal keys with the simulated CPU's EGETKEY model; nothing else."""

    mode = "sim"
    simulated = True

    def __init__(self, identity: ReportBody, secret: bytes = SECRET) -> None:
        self._identity = identity
        self._secret = secret
        self.requests: list[KeyRequest] = []

    @property
    def identity(self) -> ReportBody:
        return self._identity

    def get_report(self, target_info: TargetInfo | None, report_data: bytes) -> Report:
        raise PlatformError("not needed by these tests")

    def get_quote(self, report_data: bytes) -> bytes:
        raise PlatformError("not needed by these tests")

    def get_seal_key(self, request: KeyRequest) -> bytes:
        self.requests.append(request)
        return derive_seal_key(self._secret, self._identity, request)


def enclave(
    mr_enclave: bytes = ENCLAVE_A,
    *,
    signer: bytes = SIGNER,
    prod_id: int = 1,
    svn: int = 2,
    cpu_svn: bytes = CPU_SVN,
    debug: bool = False,
    secret: bytes = SECRET,
) -> KeyOnlyPlatform:
    flags = AttributeFlags.INIT | AttributeFlags.MODE64BIT | (AttributeFlags.DEBUG if debug else 0)
    body = ReportBody.build(mr_enclave=mr_enclave, mr_signer=signer, isv_prod_id=prod_id, isv_svn=svn,
                            cpu_svn=cpu_svn, attributes=Attributes(flags, 3))  # fmt: skip
    return KeyOnlyPlatform(body, secret)


# --- round trips ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["unique", "product"])
def test_round_trip(policy: str) -> None:
    platform = enclave()
    blob = seal(platform, b"top secret", policy=policy, aad=b"label")  # type: ignore[arg-type]
    assert b"top secret" not in blob
    result = unseal(platform, blob)
    assert result == UnsealedData(data=b"top secret", aad=b"label", policy=policy, isv_svn=2)  # type: ignore[arg-type]


def test_empty_data_and_aad_round_trip() -> None:
    platform = enclave()
    assert unseal(platform, seal(platform, b"")).data == b""


@settings(max_examples=30, deadline=None)
@given(
    data=st.binary(max_size=300), aad=st.binary(max_size=64), policy=st.sampled_from(["unique", "product"])
)
def test_round_trip_property(data: bytes, aad: bytes, policy: str) -> None:
    platform = enclave()
    result = unseal(platform, seal(platform, data, policy=policy, aad=aad))  # type: ignore[arg-type]
    assert (result.data, result.aad, result.policy) == (data, aad, policy)


def test_two_seals_of_the_same_data_differ() -> None:
    platform = enclave()
    first = SealedBlob.from_bytes(seal(platform, b"same"))
    second = SealedBlob.from_bytes(seal(platform, b"same"))
    assert first.key_id != second.key_id
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext
    # Each blob's key was requested with its own key id.
    assert [r.key_id for r in platform.requests] == [first.key_id, second.key_id]


def test_blob_header_records_how_it_was_sealed() -> None:
    platform = enclave(prod_id=9, svn=3)
    raw = seal(platform, b"abc", policy="product", aad=b"xy")
    blob = SealedBlob.from_bytes(raw)
    assert raw.startswith(b"EKSEAL\x01\x02")
    assert (blob.version, blob.policy, blob.isv_prod_id, blob.isv_svn) == (1, "product", 9, 3)
    assert blob.cpu_svn == CPU_SVN
    assert blob.aad == b"xy"
    assert len(blob.ciphertext) == 3 + 16
    assert len(raw) == HEADER_SIZE + 2 + 3 + 16
    assert blob.to_bytes() == raw


# --- unique policy -------------------------------------------------------------------------------------------


def test_unique_another_mrenclave_cannot_unseal() -> None:
    blob = seal(enclave(ENCLAVE_A), b"data", policy="unique")
    with pytest.raises(SealingError, match="tampered with, or sealed by another enclave/signer"):
        unseal(enclave(ENCLAVE_B), blob)


def test_unique_same_mrenclave_at_a_higher_svn_unseals() -> None:
    blob = seal(enclave(svn=1), b"data", policy="unique")
    assert unseal(enclave(svn=2), blob).data == b"data"


def test_unique_debug_twin_cannot_unseal() -> None:
    blob = seal(enclave(), b"data", policy="unique")
    with pytest.raises(SealingError):
        unseal(enclave(debug=True), blob)


def test_another_cpu_cannot_unseal() -> None:
    blob = seal(enclave(), b"data", policy="product")
    with pytest.raises(SealingError):
        unseal(enclave(secret=b"\x00" * 32), blob)


# --- product policy ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("svn", [2, 3, 100])
def test_product_same_signer_and_product_at_same_or_higher_svn_unseals(svn: int) -> None:
    blob = seal(enclave(ENCLAVE_A, svn=2), b"data", policy="product")
    reader = enclave(ENCLAVE_B, svn=svn)
    assert unseal(reader, blob) == UnsealedData(b"data", b"", "product", 2)
    # The newer enclave asked for the key at the blob's (older) SVN.
    assert reader.requests[-1].isv_svn == 2


def test_product_lower_svn_is_a_rollback() -> None:
    blob = seal(enclave(svn=3), b"data", policy="product")
    with pytest.raises(SealingError, match="sealed at ISV SVN 3, this enclave has 2: rollback refused"):
        unseal(enclave(svn=2), blob)


def test_product_other_signer_cannot_unseal() -> None:
    blob = seal(enclave(), b"data", policy="product")
    with pytest.raises(SealingError, match="tampered with"):
        unseal(enclave(signer=OTHER_SIGNER), blob)


def test_product_other_product_id_cannot_unseal() -> None:
    blob = seal(enclave(prod_id=1), b"data", policy="product")
    with pytest.raises(SealingError, match="ISV PROD ID 1"):
        unseal(enclave(prod_id=2), blob)


def test_product_lying_header_cannot_unseal_for_another_product() -> None:
    # Rewriting the product id in the header passes the early check but not the key derivation or the tag.
    raw = bytearray(seal(enclave(prod_id=1), b"data", policy="product"))
    struct.pack_into("<H", raw, 8, 2)
    with pytest.raises(SealingError, match="tampered with"):
        unseal(enclave(prod_id=2), bytes(raw))


def test_cpu_svn_rollback_is_refused() -> None:
    blob = seal(enclave(cpu_svn=bytes([5] * 16)), b"data", policy="product")
    with pytest.raises(SealingError, match="CPU SVN"):
        unseal(enclave(cpu_svn=bytes([5] * 15 + [4])), blob)


def test_newer_cpu_svn_unseals_older_data() -> None:
    blob = seal(enclave(cpu_svn=bytes([4] * 16)), b"data", policy="product")
    assert unseal(enclave(cpu_svn=bytes([5] * 16)), blob).data == b"data"


# --- tampering and the format ------------------------------------------------------------------------------------


def test_every_single_bit_flip_is_detected() -> None:
    platform = enclave()
    raw = seal(platform, b"hi", policy="product", aad=b"a")
    for index in range(len(raw)):
        for bit in range(8):
            mutated = bytearray(raw)
            mutated[index] ^= 1 << bit
            with pytest.raises((SealingError, InvalidSealedBlob)):
                unseal(platform, bytes(mutated))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_random_mutations_raise_only_sealing_errors(data: st.DataObject) -> None:
    platform = enclave()
    raw = bytearray(seal(platform, b"payload", policy="unique", aad=b"aad"))
    # XOR with a non-zero byte at distinct offsets: the draws never depend on the random blob itself.
    for index in data.draw(st.sets(st.integers(0, len(raw) - 1), min_size=1, max_size=4)):
        raw[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises((SealingError, InvalidSealedBlob)):
        unseal(platform, bytes(raw))


_VALID_BLOB = seal(enclave(), b"payload", aad=b"aad")


@settings(max_examples=300, deadline=None)
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        # Valid blobs with random bytes written over the header and aad, so parsing gets past the magic.
        st.builds(
            lambda at, patch, cut: (_VALID_BLOB[:at] + patch + _VALID_BLOB[at + len(patch) :])[:cut],
            st.integers(0, HEADER_SIZE + 3),
            st.binary(min_size=1, max_size=8),
            st.integers(0, len(_VALID_BLOB) + 8),
        ),
    )
)
def test_parser_raises_only_invalid_sealed_blob(raw: bytes) -> None:
    try:
        blob = SealedBlob.from_bytes(raw)
    except InvalidSealedBlob:
        return
    assert blob.to_bytes() == raw


def test_truncations_and_trailing_bytes_are_invalid() -> None:
    platform = enclave()
    raw = seal(platform, b"hello", aad=b"aad")
    for length in range(len(raw)):
        with pytest.raises(InvalidSealedBlob):
            unseal(platform, raw[:length])
    with pytest.raises(InvalidSealedBlob, match="trailing"):
        unseal(platform, raw + b"\0")


def test_aad_is_authenticated() -> None:
    platform = enclave()
    raw = bytearray(seal(platform, b"data", aad=b"role=admin"))
    raw[HEADER_SIZE + 5 : HEADER_SIZE + 10] = b"guest"
    with pytest.raises(SealingError):
        unseal(platform, bytes(raw))


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [(0, b"X", "wrong magic"), (6, b"\x02", "version 2"), (7, b"\x03", "policy code 3")],
)
def test_structural_errors_are_named(offset: int, value: bytes, message: str) -> None:
    raw = bytearray(seal(enclave(), b"data"))
    raw[offset : offset + 1] = value
    with pytest.raises(InvalidSealedBlob, match=message):
        SealedBlob.from_bytes(bytes(raw))


def test_not_a_blob_at_all() -> None:
    with pytest.raises(InvalidSealedBlob):
        unseal(enclave(), b"")
    with pytest.raises(InvalidSealedBlob):
        unseal(enclave(), b"\0" * 200)


# --- limits and usage ----------------------------------------------------------------------------------------------


def test_seal_limits_are_checked_before_work() -> None:
    platform = enclave()
    limits = SealingLimits(max_data=10, max_aad=4)
    with pytest.raises(UsageError, match="limit"):
        seal(platform, b"x" * 11, limits=limits)
    with pytest.raises(UsageError, match="limit"):
        seal(platform, b"x", aad=b"y" * 5, limits=limits)
    assert platform.requests == []  # No key was derived for a refused request.


def test_unseal_limits() -> None:
    platform = enclave()
    big_data = seal(platform, b"x" * 11)
    big_aad = seal(platform, b"x", aad=b"y" * 5)
    limits = SealingLimits(max_data=10, max_aad=4)
    with pytest.raises(InvalidSealedBlob, match="limit"):
        unseal(platform, big_data, limits=limits)
    with pytest.raises(InvalidSealedBlob, match="limit"):
        unseal(platform, big_aad, limits=limits)
    # A header that declares an aad above the limit fails before anything else is read.
    raw = bytearray(seal(platform, b"x"))
    struct.pack_into("<I", raw, 72, 0xFFFFFFFF)
    with pytest.raises(InvalidSealedBlob, match="limit"):
        SealedBlob.from_bytes(bytes(raw))


def test_unknown_policy_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="policy"):
        seal(enclave(), b"data", policy="signer")  # type: ignore[arg-type]


def test_limits_must_fit_aes_gcm() -> None:
    with pytest.raises(UsageError):
        SealingLimits(max_data=1 << 31)
    with pytest.raises(UsageError):
        SealingLimits(max_aad=-1)


def test_public_api_is_exported_and_documented() -> None:
    import inspect

    import enklave.sealing

    for name in enklave.sealing.__all__:
        value = getattr(enklave.sealing, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert (value.__doc__ or "").strip(), name


# --- through the simulated platform --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("enklave-home")


def test_simulated_platform_seals_across_restarts(sim_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from enklave.platform.simulated import SimulatedPlatform

    # The home is always explicit; the variable guards against anything reading the real data directory.
    monkeypatch.setenv("ENKLAVE_HOME", str(sim_home))
    v1 = ReportBody.build(mr_enclave=ENCLAVE_A, mr_signer=SIGNER, isv_prod_id=1, isv_svn=1)
    v2 = ReportBody.build(mr_enclave=ENCLAVE_B, mr_signer=SIGNER, isv_prod_id=1, isv_svn=2)
    unique = seal(SimulatedPlatform.launch(v1, home=sim_home), b"state", policy="unique", aad=b"n=1")
    product = seal(SimulatedPlatform.launch(v1, home=sim_home), b"state", policy="product")
    # A restart of the same enclave (a new platform object from the stored CPU secret) unseals both.
    restarted = SimulatedPlatform.launch(v1, home=sim_home)
    assert unseal(restarted, unique) == UnsealedData(b"state", b"n=1", "unique", 1)
    assert unseal(restarted, product).data == b"state"
    # The next version of the product reads the product blob, not the unique one; and it cannot go back.
    newer = SimulatedPlatform.launch(v2, home=sim_home)
    assert unseal(newer, product).data == b"state"
    with pytest.raises(SealingError):
        unseal(newer, unique)
    with pytest.raises(SealingError, match="rollback refused"):
        unseal(restarted, seal(newer, b"new", policy="product"))


def test_simulated_platform_of_another_installation_cannot_unseal(
    sim_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from enklave.platform.simulated import SimulatedPlatform

    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path))
    identity = ReportBody.build(mr_enclave=ENCLAVE_A, mr_signer=SIGNER, isv_prod_id=1, isv_svn=1)
    blob = seal(SimulatedPlatform.launch(identity, home=sim_home), b"state", policy="product")
    other_cpu = SimulatedPlatform.launch(identity, home=tmp_path / "other")
    with pytest.raises((SealingError, InvalidSealedBlob)):
        unseal(other_cpu, blob)
