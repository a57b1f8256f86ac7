"""The key broker's key models and audit records, without an enclave."""

from __future__ import annotations

import json

import pytest

from enklave.errors import BadDataError, BoundaryError, InvalidPolicy, UsageError
from enklave.services.kbs.audit import AuditRecord
from enklave.services.kbs.keys import (
    KeyRecord,
    KeySpec,
    check_key_name,
    key_view,
    policy_from_request,
    record_aad,
)

POLICY = {
    "version": "1.0.0",
    "anyOf": [{"authority": "https://maa.test", "allOf": [{"claim": "x-ms-sgx-svn", "greater": 1}]}],
}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("oct",), KeySpec("oct", size=256)),
        (("oct-HSM",), KeySpec("oct", size=256)),
        (("RSA",), KeySpec("RSA", size=2048)),
        (("RSA-HSM", 4096), KeySpec("RSA", size=4096)),
        (("EC",), KeySpec("EC", curve="P-256")),
        (("EC", None, "P-384"), KeySpec("EC", curve="P-384")),
    ],
)
def test_key_specs_parse_with_akv_names_and_defaults(args: tuple[object, ...], expected: KeySpec) -> None:
    assert KeySpec.parse(*args) == expected


@pytest.mark.parametrize(
    "args",
    [
        ("DES",),
        ("RSA", 1024),
        ("RSA", True),
        ("oct", 128),
        ("EC", None, "P-521"),
        ("EC", 256),
        (3,),
        ("RSA", "2048"),
    ],
)
def test_other_key_specs_are_refused(args: tuple[object, ...]) -> None:
    with pytest.raises(BoundaryError):
        KeySpec.parse(*args)


@pytest.mark.parametrize("name", ["", "a_b", "a/b", "a" * 128, "é", "a b"])
def test_key_names_are_akv_names(name: str) -> None:
    with pytest.raises(BoundaryError):
        check_key_name(name)
    assert check_key_name("Key-1") == "Key-1"


def test_the_aad_binds_name_spec_and_policy() -> None:
    spec = KeySpec("oct", size=256)
    base = record_aad("k", spec, "{}")
    assert base != record_aad("k2", spec, "{}")
    assert base != record_aad("k", KeySpec("RSA", size=2048), "{}")
    assert base != record_aad("k", spec, '{"x":1}')
    assert base == record_aad("k", spec, "{}")


def test_records_round_trip_and_damaged_records_raise_bad_data() -> None:
    record = KeyRecord("k", KeySpec("EC", curve="P-256"), "{}", 1, 2, {"kty": "EC", "x": "AA"}, b"\x00" * 40)
    assert KeyRecord.from_json(record.to_json()) == record
    document = json.loads(record.to_json())
    for damage in ({"version": 2}, {"encrypted": "!!"}, {"spec": {"kty": "DES"}}, {"created": "x"}):
        with pytest.raises(BadDataError):
            KeyRecord.from_json(json.dumps({**document, **damage}).encode())
    with pytest.raises(BadDataError):
        KeyRecord.from_json(b"not json")


def test_policies_come_as_envelope_or_object_and_bad_ones_are_refused() -> None:
    import base64

    data = base64.urlsafe_b64encode(json.dumps(POLICY).encode()).rstrip(b"=").decode()
    canonical = policy_from_request(POLICY)
    assert policy_from_request({"contentType": "application/json; charset=utf-8", "data": data}) == canonical
    with pytest.raises(BoundaryError):
        policy_from_request({"data": "!!"})
    with pytest.raises(BoundaryError):
        policy_from_request([POLICY])
    with pytest.raises(InvalidPolicy):
        policy_from_request({**POLICY, "anyOf": []})


def test_key_views_show_public_parts_only() -> None:
    record = KeyRecord(
        "k", KeySpec("RSA", size=2048), "{}", 1, 2, {"kty": "RSA", "n": "AQAB", "e": "AQAB"}, b"x" * 40
    )
    view = key_view(record)
    assert view["key"] == {
        "kid": "k",
        "kty": "RSA",
        "n": "AQAB",
        "e": "AQAB",
        "key_ops": ["verify", "encrypt", "wrapKey"],
    }
    assert "encrypted" not in json.dumps(view)
    assert view["attributes"] == {"enabled": True, "exportable": True, "created": 1, "updated": 2}


def test_audit_records_keep_identity_fields_only() -> None:
    claims = {"iss": "https://maa.test", "svn": 4, "token_verified": True, "secret": "x", "jti": ["a"]}
    record = AuditRecord.build(key="k", outcome="refused", time=5, claims=claims, reason="r" * 1000)
    document = json.loads(record.to_json())
    assert document == {
        "key": "k", "outcome": "refused", "time": 5, "iss": "https://maa.test", "svn": 4,
        "token_verified": True, "reason": "r" * 512,
    }  # fmt: skip
    with pytest.raises(UsageError):
        AuditRecord("k", "maybe", 1)
