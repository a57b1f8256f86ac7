"""SIGSTRUCT: byte layout at the SDM offsets, signing, what EINIT checks, MRSIGNER."""

from __future__ import annotations

import datetime
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ASSETS
from enklave.errors import InvalidBundle, LaunchError, UsageError
from enklave.sgx import Sigstruct, mr_signer_of
from enklave.sgx.report import AttributeFlags, Attributes
from enklave.sgx.sigstruct import SIGSTRUCT_HEADER, SIGSTRUCT_HEADER2, SIGSTRUCT_SIZE

ENCLAVE_HASH = bytes(range(32))
DATE = datetime.date(2024, 3, 9)


def _key(name: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(
        (ASSETS / "enclaves" / f"test-signing-key-{name}.pem").read_bytes(), password=None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return _key("a")


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return _key("b")


def _sign(key: rsa.RSAPrivateKey, **overrides: object) -> Sigstruct:
    args: dict[str, object] = {
        "enclave_hash": ENCLAVE_HASH,
        "isv_prod_id": 0x1234,
        "isv_svn": 0x0506,
        "attributes": Attributes(AttributeFlags.MODE64BIT | AttributeFlags.DEBUG, 3),
        "misc_select": 0,
        "date": DATE,
        "vendor": 0x8086,
    }
    args.update(overrides)
    return Sigstruct.sign(key, **args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def signed(key: rsa.RSAPrivateKey) -> Sigstruct:
    return _sign(key)


def test_fields_sit_at_the_sdm_offsets(key: rsa.RSAPrivateKey, signed: Sigstruct) -> None:
    raw = signed.to_bytes()
    n = key.public_key().public_numbers().n
    assert len(raw) == SIGSTRUCT_SIZE == 1808
    assert raw[0:16] == SIGSTRUCT_HEADER
    assert struct.unpack_from("<I", raw, 16)[0] == 0x8086
    assert struct.unpack_from("<I", raw, 20)[0] == 0x20240309  # BCD yyyymmdd
    assert raw[24:40] == SIGSTRUCT_HEADER2
    assert raw[44:128] == bytes(84)
    assert raw[128:512] == n.to_bytes(384, "little")
    assert struct.unpack_from("<I", raw, 512)[0] == 3
    assert struct.unpack_from("<II", raw, 900) == (0, 0xFFFFFFFF)
    assert struct.unpack_from("<QQ", raw, 928) == (AttributeFlags.MODE64BIT | AttributeFlags.DEBUG, 3)
    assert struct.unpack_from("<QQ", raw, 944) == (0xFFFFFFFFFFFFFFFF, 3)
    assert raw[960:992] == ENCLAVE_HASH
    assert struct.unpack_from("<HH", raw, 1024) == (0x1234, 0x0506)
    assert raw[1028:1040] == bytes(12)
    assert signed.signing_date == DATE


def test_signature_is_pkcs1_sha256_over_the_two_signed_regions(
    key: rsa.RSAPrivateKey, signed: Sigstruct
) -> None:
    raw = signed.to_bytes()
    signature = int.from_bytes(raw[516:900], "little")
    # Verified independently of Sigstruct.verify: the public key checks the big-endian signature.
    key.public_key().verify(
        signature.to_bytes(384, "big"), raw[0:128] + raw[900:1028], padding.PKCS1v15(), hashes.SHA256()
    )
    assert signed.signed_bytes() == raw[0:128] + raw[900:1028]


def test_q1_q2_follow_the_sdm_formula(key: rsa.RSAPrivateKey, signed: Sigstruct) -> None:
    raw = signed.to_bytes()
    n = key.public_key().public_numbers().n
    s = int.from_bytes(raw[516:900], "little")
    q1 = s * s // n
    q2 = (s**3 - q1 * s * n) // n
    assert raw[1040:1424] == q1.to_bytes(384, "little")
    assert raw[1424:1808] == q2.to_bytes(384, "little")


def test_mr_signer_is_sha256_of_the_little_endian_modulus(key: rsa.RSAPrivateKey, signed: Sigstruct) -> None:
    n = key.public_key().public_numbers().n
    expected = hashlib.sha256(n.to_bytes(384, "little")).digest()
    assert signed.mr_signer == expected
    assert mr_signer_of(key.public_key()) == expected
    assert hashlib.sha256(n.to_bytes(384, "big")).digest() != expected


def test_round_trip_and_verify(signed: Sigstruct) -> None:
    parsed = Sigstruct.from_bytes(signed.to_bytes())
    assert parsed == signed
    assert parsed.to_bytes() == signed.to_bytes()
    parsed.verify()
    assert parsed.debug


@pytest.mark.parametrize("offset", [0, 16, 20, 40, 100, 127, 900, 904, 928, 944, 960, 991, 1024, 1026, 1027])
def test_every_signed_byte_matters(signed: Sigstruct, offset: int) -> None:
    raw = bytearray(signed.to_bytes())
    raw[offset] ^= 0x01
    if offset < 40 and not (16 <= offset < 24):
        with pytest.raises(InvalidBundle):  # the constant headers are checked when parsing
            Sigstruct.from_bytes(bytes(raw))
        return
    with pytest.raises(LaunchError, match="signature does not verify"):
        Sigstruct.from_bytes(bytes(raw)).verify()


@pytest.mark.parametrize(("start", "what"), [(516, "signature"), (1040, "Q1/Q2"), (1424, "Q1/Q2")])
def test_wrong_signature_or_quotients_fail(signed: Sigstruct, start: int, what: str) -> None:
    raw = bytearray(signed.to_bytes())
    raw[start + 5] ^= 0x80
    with pytest.raises(LaunchError, match=what):
        Sigstruct.from_bytes(bytes(raw)).verify()


def test_another_keys_modulus_fails(signed: Sigstruct, other_key: rsa.RSAPrivateKey) -> None:
    raw = bytearray(signed.to_bytes())
    raw[128:512] = other_key.public_key().public_numbers().n.to_bytes(384, "little")
    with pytest.raises(LaunchError):
        Sigstruct.from_bytes(bytes(raw)).verify()


def test_exponent_other_than_3_fails(signed: Sigstruct) -> None:
    raw = bytearray(signed.to_bytes())
    struct.pack_into("<I", raw, 512, 65537)
    with pytest.raises(LaunchError, match="exponent must be 3"):
        Sigstruct.from_bytes(bytes(raw)).verify()


def test_short_modulus_fails(signed: Sigstruct) -> None:
    raw = bytearray(signed.to_bytes())
    raw[511] = 0
    with pytest.raises(LaunchError, match="modulus"):
        Sigstruct.from_bytes(bytes(raw)).verify()


@pytest.mark.parametrize("size", [0, 1807, 1809])
def test_wrong_size_is_invalid_bundle(signed: Sigstruct, size: int) -> None:
    raw = (signed.to_bytes() * 2)[:size]
    with pytest.raises(InvalidBundle, match="1808"):
        Sigstruct.from_bytes(raw)


def test_keys_sgx_does_not_accept_are_refused() -> None:
    wrong_exponent = rsa.generate_private_key(65537, 3072)
    with pytest.raises(UsageError, match="exponent 3"):
        _sign(wrong_exponent)
    with pytest.raises(UsageError, match="RSA-3072"):
        mr_signer_of(wrong_exponent.public_key())
    small = rsa.generate_private_key(3, 2048)
    with pytest.raises(UsageError, match="RSA-2048"):
        _sign(small)


def test_out_of_range_fields_are_usage_errors(key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(UsageError, match="isv_prod_id"):
        _sign(key, isv_prod_id=0x10000)
    with pytest.raises(UsageError, match="enclave_hash"):
        _sign(key, enclave_hash=bytes(31))


def test_date_is_not_bcd_decodes_to_none(signed: Sigstruct) -> None:
    raw = bytearray(signed.to_bytes())
    struct.pack_into("<I", raw, 20, 0x2024AB01)
    assert Sigstruct.from_bytes(bytes(raw)).signing_date is None


def test_to_dict_names_every_field(signed: Sigstruct) -> None:
    view = signed.to_dict()
    assert view["enclave_hash"] == ENCLAVE_HASH.hex()
    assert view["mrsigner"] == signed.mr_signer.hex()
    assert view["date"] == "2024-03-09"
    assert view["attributes"]["flag_names"] == ["DEBUG", "MODE64BIT"]  # type: ignore[index]
    assert view["isv_prod_id"] == 0x1234


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(min_size=SIGSTRUCT_SIZE - 40, max_size=SIGSTRUCT_SIZE - 40),
    vendor=st.binary(min_size=8, max_size=8),
)
def test_fuzzed_sigstructs_only_raise_launch_error(body: bytes, vendor: bytes) -> None:
    raw = SIGSTRUCT_HEADER + vendor + SIGSTRUCT_HEADER2 + body
    parsed = Sigstruct.from_bytes(raw)
    assert parsed.to_bytes() == raw
    with pytest.raises(LaunchError):
        parsed.verify()
