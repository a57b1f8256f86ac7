"""Tests for the appraisal policies in enklave.attestation.policy."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enklave.attestation import policy as policy_module
from enklave.attestation.collateral import TcbStatus
from enklave.attestation.policy import (
    DEFAULT_ACCEPTED_TCB_STATUSES,
    AllOf,
    AnyOf,
    AppraisableEvidence,
    EnclavePolicy,
    Policy,
    UnsafeNoPolicy,
)
from enklave.errors import PolicyError, UsageError, VerificationError

MRE_A = bytes.fromhex("aa" * 32)
MRE_B = bytes.fromhex("bb" * 32)
MRE_C = bytes.fromhex("cc" * 32)
MRS_A = bytes(range(32))
MRS_B = bytes(range(32, 64))
KEY = b"an enclave public key"
GOOD_REPORT_DATA = hashlib.sha256(KEY).digest() + b"\x07" * 32


@dataclass(frozen=True)
class Evidence:
    """A stand-in for VerifiedQuote that satisfies AppraisableEvidence."""

    mr_enclave: bytes = MRE_A
    mr_signer: bytes = MRS_A
    isv_prod_id: int = 1
    isv_svn: int = 5
    debug: bool = False
    report_data: bytes = GOOD_REPORT_DATA
    tcb_status: TcbStatus | str = TcbStatus.UP_TO_DATE
    advisory_ids: tuple[str, ...] = ()
    simulated: bool = False
    tcb_evaluation_data_number: int = 17


def _as_evidence(evidence: Evidence) -> AppraisableEvidence:
    # mypy checks here that the stand-in satisfies the protocol.
    return evidence


GOOD = Evidence()


def rejects(policy: Policy, evidence: Evidence) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        policy.appraise(evidence)
    return info.value


# ----------------------------------------------------------------------------------------------------------
# EnclavePolicy: every field accepted and rejected.


def test_accepts_matching_evidence_and_returns_none() -> None:
    policy = EnclavePolicy(
        mr_enclave=MRE_A.hex(),
        mr_signer=MRS_A,
        isv_prod_id=1,
        min_isv_svn=5,
        rejected_advisory_ids=["INTEL-SA-00334"],
        report_data_binds=KEY,
    )
    policy.appraise(_as_evidence(GOOD))


def test_policy_error_is_a_verification_error() -> None:
    error = rejects(EnclavePolicy(mr_enclave=MRE_B), GOOD)
    assert isinstance(error, VerificationError)


@pytest.mark.parametrize(
    ("policy", "evidence", "field", "expected", "actual"),
    [
        (EnclavePolicy(), replace(GOOD, simulated=True), "simulated", False, True),
        (EnclavePolicy(), replace(GOOD, debug=True), "debug", False, True),
        (EnclavePolicy(mr_enclave=MRE_B), GOOD, "mr_enclave", MRE_B.hex(), MRE_A.hex()),
        (
            EnclavePolicy(mr_enclave=[MRE_C, MRE_B.hex()]),
            GOOD,
            "mr_enclave",
            (MRE_B.hex(), MRE_C.hex()),
            MRE_A.hex(),
        ),
        (EnclavePolicy(mr_signer=MRS_B.hex()), GOOD, "mr_signer", MRS_B.hex(), MRS_A.hex()),
        (EnclavePolicy(isv_prod_id=2), GOOD, "isv_prod_id", 2, 1),
        (EnclavePolicy(min_isv_svn=6), GOOD, "isv_svn", ">= 6", 5),
        (
            EnclavePolicy(),
            replace(GOOD, tcb_status=TcbStatus.OUT_OF_DATE),
            "tcb_status",
            ("UpToDate", "SWHardeningNeeded"),
            "OutOfDate",
        ),
        (
            EnclavePolicy(rejected_advisory_ids=["INTEL-SA-00615", "INTEL-SA-00334"]),
            replace(GOOD, advisory_ids=("INTEL-SA-00219", "INTEL-SA-00334")),
            "advisory_ids",
            "none of INTEL-SA-00334, INTEL-SA-00615",
            ("INTEL-SA-00219", "INTEL-SA-00334"),
        ),
        (
            EnclavePolicy(report_data=b"\x01" * 64),
            GOOD,
            "report_data",
            ("01" * 64),
            GOOD_REPORT_DATA.hex(),
        ),
        (
            EnclavePolicy(report_data_prefix=b"nonce"),
            GOOD,
            "report_data",
            b"nonce".hex(),
            GOOD_REPORT_DATA.hex(),
        ),
        (
            EnclavePolicy(report_data_binds=b"another key"),
            GOOD,
            "report_data",
            hashlib.sha256(b"another key").hexdigest(),
            GOOD_REPORT_DATA.hex(),
        ),
    ],
)
def test_each_check_names_field_expected_and_actual(
    policy: EnclavePolicy, evidence: Evidence, field: str, expected: object, actual: object
) -> None:
    error = rejects(policy, evidence)
    assert error.field == field
    assert error.expected == expected
    assert error.actual == actual


@pytest.mark.parametrize(
    ("policy", "evidence"),
    [
        (EnclavePolicy(allow_simulated=True), replace(GOOD, simulated=True)),
        (EnclavePolicy(allow_debug=True), replace(GOOD, debug=True)),
        (EnclavePolicy(mr_enclave=MRE_A), GOOD),
        (EnclavePolicy(mr_enclave=MRE_A.hex().upper()), GOOD),
        (EnclavePolicy(mr_signer=[MRS_B, MRS_A]), GOOD),
        (EnclavePolicy(isv_prod_id=1), GOOD),
        (EnclavePolicy(min_isv_svn=5), GOOD),
        (EnclavePolicy(accepted_tcb_statuses=["OutOfDate"]), replace(GOOD, tcb_status=TcbStatus.OUT_OF_DATE)),
        (
            EnclavePolicy(rejected_advisory_ids="INTEL-SA-00334"),
            replace(GOOD, advisory_ids=("INTEL-SA-00615",)),
        ),
        (EnclavePolicy(report_data=GOOD_REPORT_DATA), GOOD),
        (EnclavePolicy(report_data_prefix=GOOD_REPORT_DATA[:40]), GOOD),
        (EnclavePolicy(report_data_binds=KEY), GOOD),
    ],
)
def test_each_check_accepts_what_it_allows(policy: EnclavePolicy, evidence: Evidence) -> None:
    policy.appraise(evidence)


# ----------------------------------------------------------------------------------------------------------
# Defaults.


def test_default_policy_accepts_good_evidence() -> None:
    EnclavePolicy().appraise(GOOD)


def test_default_rejects_debug() -> None:
    assert rejects(EnclavePolicy(), replace(GOOD, debug=True)).field == "debug"


def test_default_rejects_simulated() -> None:
    assert rejects(EnclavePolicy(), replace(GOOD, simulated=True)).field == "simulated"


@pytest.mark.parametrize("status", [TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED])
def test_default_accepts_good_tcb_statuses(status: TcbStatus) -> None:
    EnclavePolicy().appraise(replace(GOOD, tcb_status=status))
    EnclavePolicy().appraise(replace(GOOD, tcb_status=status.value))


@pytest.mark.parametrize(
    "status",
    [
        TcbStatus.OUT_OF_DATE,
        TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED,
        TcbStatus.CONFIGURATION_NEEDED,
        TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
        TcbStatus.REVOKED,
    ],
)
def test_default_rejects_other_tcb_statuses(status: TcbStatus) -> None:
    assert rejects(EnclavePolicy(), replace(GOOD, tcb_status=status)).field == "tcb_status"
    assert rejects(EnclavePolicy(), replace(GOOD, tcb_status=status.value)).actual == status.value


def test_unknown_tcb_status_string_in_evidence_is_rejected() -> None:
    error = rejects(EnclavePolicy(), replace(GOOD, tcb_status="Fine"))
    assert (error.field, error.actual) == ("tcb_status", "Fine")


def test_default_accepted_statuses_constant() -> None:
    assert {s.value for s in DEFAULT_ACCEPTED_TCB_STATUSES} == {"UpToDate", "SWHardeningNeeded"}
    assert EnclavePolicy().accepted_tcb_statuses == DEFAULT_ACCEPTED_TCB_STATUSES


# ----------------------------------------------------------------------------------------------------------
# Identity details.


def test_mr_enclave_one_of() -> None:
    policy = EnclavePolicy(mr_enclave=[MRE_A.hex(), MRE_B])
    policy.appraise(replace(GOOD, mr_enclave=MRE_A))
    policy.appraise(replace(GOOD, mr_enclave=MRE_B))
    error = rejects(policy, replace(GOOD, mr_enclave=MRE_C))
    assert error.expected == (MRE_A.hex(), MRE_B.hex())
    assert error.actual == MRE_C.hex()


def test_measurement_of_wrong_length_in_evidence_is_rejected() -> None:
    assert (
        rejects(EnclavePolicy(mr_enclave=MRE_A), replace(GOOD, mr_enclave=MRE_A[:31])).field == "mr_enclave"
    )


def test_measurements_are_compared_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    EnclavePolicy(mr_enclave=[MRE_A, MRE_B], mr_signer=MRS_A, report_data_binds=KEY).appraise(GOOD)
    # Both candidates are compared, even though the first one matches.
    assert (MRE_A, MRE_A) in calls
    assert (MRE_B, MRE_A) in calls
    assert (MRS_A, MRS_A) in calls
    assert len(calls) == 4


@pytest.mark.parametrize(("svn", "accepted"), [(0, False), (4, False), (5, True), (6, True), (65535, True)])
def test_min_isv_svn_boundary(svn: int, accepted: bool) -> None:
    policy = EnclavePolicy(min_isv_svn=5)
    evidence = replace(GOOD, isv_svn=svn)
    if accepted:
        policy.appraise(evidence)
    else:
        assert rejects(policy, evidence).actual == svn


def test_min_isv_svn_zero_accepts_everything() -> None:
    EnclavePolicy(min_isv_svn=0).appraise(replace(GOOD, isv_svn=0))


def test_advisory_rejection_is_case_insensitive() -> None:
    policy = EnclavePolicy(rejected_advisory_ids=["intel-sa-00334"])
    assert policy.rejected_advisory_ids == ("INTEL-SA-00334",)
    assert rejects(policy, replace(GOOD, advisory_ids=("INTEL-SA-00334",))).field == "advisory_ids"
    assert rejects(policy, replace(GOOD, advisory_ids=("Intel-SA-00334",))).field == "advisory_ids"
    policy.appraise(replace(GOOD, advisory_ids=("INTEL-SA-00335",)))
    policy.appraise(replace(GOOD, advisory_ids=()))


# ----------------------------------------------------------------------------------------------------------
# The three report-data modes.


def test_exact_report_data_is_zero_padded() -> None:
    policy = EnclavePolicy(report_data=b"nonce")
    assert policy.report_data == b"nonce" + bytes(59)
    policy.appraise(replace(GOOD, report_data=b"nonce" + bytes(59)))
    error = rejects(policy, replace(GOOD, report_data=b"nonce" + bytes(58) + b"\x01"))
    assert error.expected == (b"nonce" + bytes(59)).hex()


def test_exact_report_data_empty_means_all_zero() -> None:
    policy = EnclavePolicy(report_data=b"")
    policy.appraise(replace(GOOD, report_data=bytes(64)))
    rejects(policy, GOOD)


def test_exact_report_data_rejects_short_evidence() -> None:
    # Evidence report data that is not 64 bytes is never equal to the padded expectation.
    rejects(EnclavePolicy(report_data=b"nonce"), replace(GOOD, report_data=b"nonce"))


def test_report_data_prefix() -> None:
    policy = EnclavePolicy(report_data_prefix=b"\xde\xad")
    policy.appraise(replace(GOOD, report_data=b"\xde\xad" + bytes(62)))
    policy.appraise(replace(GOOD, report_data=b"\xde\xad" + b"\xff" * 62))
    rejects(policy, replace(GOOD, report_data=b"\xde\xae" + bytes(62)))
    rejects(policy, replace(GOOD, report_data=b"\xde"))
    EnclavePolicy(report_data_prefix=GOOD_REPORT_DATA).appraise(GOOD)


def test_report_data_binds_checks_only_first_32_bytes() -> None:
    policy = EnclavePolicy(report_data_binds=KEY)
    digest = hashlib.sha256(KEY).digest()
    policy.appraise(replace(GOOD, report_data=digest + bytes(32)))
    policy.appraise(replace(GOOD, report_data=digest + b"\xff" * 32))
    flipped = bytes([digest[31] ^ 1])
    error = rejects(policy, replace(GOOD, report_data=digest[:31] + flipped + bytes(32)))
    assert error.expected == digest.hex()
    # The raw data, not its hash, must not sit in the report data.
    rejects(policy, replace(GOOD, report_data=KEY.ljust(64, b"\0")))


def test_binding_empty_data_is_sha256_of_nothing() -> None:
    policy = EnclavePolicy(report_data_binds=b"")
    policy.appraise(replace(GOOD, report_data=hashlib.sha256(b"").digest() + bytes(32)))


# ----------------------------------------------------------------------------------------------------------
# Check order.


def test_checks_run_in_documented_order() -> None:
    worst = Evidence(
        mr_enclave=MRE_C,
        mr_signer=MRS_B,
        isv_prod_id=9,
        isv_svn=0,
        debug=True,
        report_data=bytes(64),
        tcb_status=TcbStatus.OUT_OF_DATE,
        advisory_ids=("INTEL-SA-00334",),
        simulated=True,
        tcb_evaluation_data_number=15,
    )
    strict: dict[str, Any] = {
        "mr_enclave": MRE_A,
        "mr_signer": MRS_A,
        "isv_prod_id": 1,
        "min_isv_svn": 5,
        "rejected_advisory_ids": ["INTEL-SA-00334"],
        "min_tcb_evaluation_data_number": 16,
        "report_data_binds": KEY,
    }
    fixes: list[tuple[str, dict[str, Any]]] = [
        ("simulated", {"simulated": False}),
        ("debug", {"debug": False}),
        ("mr_enclave", {"mr_enclave": MRE_A}),
        ("mr_signer", {"mr_signer": MRS_A}),
        ("isv_prod_id", {"isv_prod_id": 1}),
        ("isv_svn", {"isv_svn": 5}),
        ("tcb_status", {"tcb_status": "SWHardeningNeeded"}),
        ("advisory_ids", {"advisory_ids": ()}),
        ("tcb_evaluation_data_number", {"tcb_evaluation_data_number": 16}),
        ("report_data", {"report_data": GOOD_REPORT_DATA}),
    ]
    policy = EnclavePolicy(**strict)
    evidence = worst
    for field, fix in fixes:
        assert rejects(policy, evidence).field == field
        evidence = replace(evidence, **fix)
    policy.appraise(evidence)


# ----------------------------------------------------------------------------------------------------------
# Construction validation.


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mr_enclave": "aa" * 31},
        {"mr_enclave": "aa" * 33},
        {"mr_enclave": "zz" * 32},
        {"mr_enclave": "0x" + "aa" * 31},
        {"mr_enclave": " " + "aa" * 32},
        {"mr_enclave": b"\xaa" * 31},
        {"mr_enclave": b"aa" * 32},
        {"mr_enclave": []},
        {"mr_enclave": [MRE_A, "nope"]},
        {"mr_enclave": 5},
        {"mr_enclave": [5]},
        {"mr_signer": b""},
        {"mr_signer": ()},
        {"isv_prod_id": -1},
        {"isv_prod_id": 65536},
        {"isv_prod_id": True},
        {"isv_prod_id": "1"},
        {"isv_prod_id": 1.0},
        {"min_isv_svn": -1},
        {"min_isv_svn": 65536},
        {"min_isv_svn": False},
        {"min_tcb_evaluation_data_number": -1},
        {"min_tcb_evaluation_data_number": 1 << 32},
        {"min_tcb_evaluation_data_number": True},
        {"min_tcb_evaluation_data_number": "17"},
        {"allow_debug": "false"},
        {"allow_debug": 0},
        {"allow_simulated": None},
        {"accepted_tcb_statuses": ["UpToDate", "Fine"]},
        {"accepted_tcb_statuses": ["up_to_date"]},
        {"accepted_tcb_statuses": "UP_TO_DATE"},
        {"accepted_tcb_statuses": []},
        {"accepted_tcb_statuses": None},
        {"accepted_tcb_statuses": [1]},
        {"accepted_tcb_statuses": ["Revoked"]},
        {"accepted_tcb_statuses": [TcbStatus.UP_TO_DATE, TcbStatus.REVOKED]},
        {"rejected_advisory_ids": [""]},
        {"rejected_advisory_ids": ["INTEL-SA-00334 "]},
        {"rejected_advisory_ids": [334]},
        {"rejected_advisory_ids": 334},
        {"report_data": bytes(65)},
        {"report_data": "00" * 64},
        {"report_data_prefix": b""},
        {"report_data_prefix": bytes(65)},
        {"report_data_prefix": "ab"},
        {"report_data_binds": "a key"},
        {"report_data": b"a", "report_data_prefix": b"a"},
        {"report_data": b"a", "report_data_binds": b"a"},
        {"report_data_prefix": b"a", "report_data_binds": b"a"},
    ],
)
def test_invalid_arguments_raise_usage_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        EnclavePolicy(**kwargs)


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        EnclavePolicy(MRE_A)  # type: ignore[call-arg]


def test_accepted_statuses_take_members_values_and_a_single_status() -> None:
    assert EnclavePolicy(accepted_tcb_statuses=TcbStatus.OUT_OF_DATE).accepted_tcb_statuses == {
        TcbStatus.OUT_OF_DATE
    }
    assert EnclavePolicy(accepted_tcb_statuses="OutOfDate").accepted_tcb_statuses == {TcbStatus.OUT_OF_DATE}
    assert EnclavePolicy(
        accepted_tcb_statuses=[TcbStatus.UP_TO_DATE, "ConfigurationNeeded"]
    ).accepted_tcb_statuses == {TcbStatus.UP_TO_DATE, TcbStatus.CONFIGURATION_NEEDED}


def test_policy_is_frozen_hashable_and_order_insensitive() -> None:
    first = EnclavePolicy(mr_enclave=[MRE_A, MRE_B], rejected_advisory_ids=["INTEL-SA-2", "INTEL-SA-1"])
    second = EnclavePolicy(
        mr_enclave=[MRE_B.hex(), MRE_A.hex()], rejected_advisory_ids=["INTEL-SA-1", "INTEL-SA-2"]
    )
    assert first == second
    assert hash(first) == hash(second)
    assert first != EnclavePolicy(mr_enclave=MRE_A)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.allow_debug = True  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------------------
# Mappings and descriptions.

FULL_MAPPING: dict[str, Any] = {
    "mr_enclave": [MRE_A.hex(), MRE_B.hex()],
    "mr_signer": [MRS_A.hex()],
    "isv_prod_id": 7,
    "min_isv_svn": 3,
    "allow_debug": True,
    "accepted_tcb_statuses": ["UpToDate", "SWHardeningNeeded", "ConfigurationNeeded"],
    "rejected_advisory_ids": ["INTEL-SA-00334", "INTEL-SA-00615"],
    "report_data_prefix": "cafe",
    "allow_simulated": True,
    "min_tcb_evaluation_data_number": 16,
}


def test_from_mapping_builds_the_same_policy_as_keywords() -> None:
    assert EnclavePolicy.from_mapping(FULL_MAPPING) == EnclavePolicy(
        mr_enclave=[MRE_A, MRE_B],
        mr_signer=MRS_A,
        isv_prod_id=7,
        min_isv_svn=3,
        allow_debug=True,
        accepted_tcb_statuses=[
            TcbStatus.UP_TO_DATE,
            TcbStatus.SW_HARDENING_NEEDED,
            TcbStatus.CONFIGURATION_NEEDED,
        ],
        rejected_advisory_ids=["INTEL-SA-00615", "INTEL-SA-00334"],
        report_data_prefix=b"\xca\xfe",
        allow_simulated=True,
        min_tcb_evaluation_data_number=16,
    )


def test_to_mapping_is_canonical_and_round_trips() -> None:
    policy = EnclavePolicy.from_mapping(FULL_MAPPING)
    assert policy.to_mapping() == FULL_MAPPING
    assert EnclavePolicy.from_mapping(policy.to_mapping()) == policy


@pytest.mark.parametrize(
    "policy",
    [
        EnclavePolicy(),
        EnclavePolicy(mr_signer=MRS_B, report_data=b"nonce"),
        EnclavePolicy(mr_enclave=MRE_C.hex(), report_data_binds=KEY, accepted_tcb_statuses=["OutOfDate"]),
    ],
)
def test_mapping_round_trip(policy: EnclavePolicy) -> None:
    mapping = policy.to_mapping()
    assert EnclavePolicy.from_mapping(mapping) == policy
    # Every value is plain data that TOML and JSON can hold.
    assert all(isinstance(v, str | int | bool | list) for v in mapping.values())
    assert None not in mapping.values()


def test_to_mapping_of_default_policy() -> None:
    assert EnclavePolicy().to_mapping() == {
        "allow_debug": False,
        "accepted_tcb_statuses": ["UpToDate", "SWHardeningNeeded"],
        "allow_simulated": False,
    }


def test_from_mapping_binds_and_exact_report_data() -> None:
    policy = EnclavePolicy.from_mapping({"report_data_binds": KEY.hex()})
    assert policy.report_data_binds == KEY
    policy.appraise(GOOD)
    exact = EnclavePolicy.from_mapping({"report_data": "abcd"})
    assert exact.report_data == b"\xab\xcd" + bytes(62)
    assert exact.to_mapping()["report_data"] == "abcd" + "00" * 62


@pytest.mark.parametrize(
    "mapping",
    [
        {"mrenclave": MRE_A.hex()},
        {"mr_enclave": MRE_A.hex(), "extra": 1},
        {"mr_enclave": "not hex"},
        {"report_data": "abc"},
        {"report_data": "zz"},
        {"report_data": b"\x00"},
        {"report_data_prefix": ""},
        {"report_data_binds": 5},
        {"allow_debug": "yes"},
        {"isv_prod_id": "7"},
        {"accepted_tcb_statuses": ["Revoked"]},
        {"accepted_tcb_statuses": None},
        {"report_data": "00", "report_data_binds": "00"},
    ],
)
def test_bad_mappings_raise_usage_error(mapping: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        EnclavePolicy.from_mapping(mapping)


@pytest.mark.parametrize("value", [None, [("mr_enclave", MRE_A.hex())], "mr_enclave"])
def test_from_mapping_rejects_non_mappings(value: Any) -> None:
    with pytest.raises(UsageError):
        EnclavePolicy.from_mapping(value)


def test_describe_lists_each_requirement() -> None:
    lines = EnclavePolicy(
        mr_enclave=[MRE_A, MRE_B],
        min_isv_svn=3,
        report_data_binds=KEY,
        rejected_advisory_ids=["INTEL-SA-00334"],
    ).describe()
    assert lines == [
        "simulated evidence: rejected",
        "debug enclaves: rejected",
        f"mr_enclave: one of {MRE_A.hex()}, {MRE_B.hex()}",
        "mr_signer: any",
        "isv_prod_id: any",
        "isv_svn: >= 3",
        "tcb_status: one of UpToDate, SWHardeningNeeded",
        "rejected advisories: INTEL-SA-00334",
        "tcb_evaluation_data_number: any",
        f"report_data: bytes 0..31 are the SHA-256 of the bound data ({hashlib.sha256(KEY).hexdigest()}),"
        " bytes 32..63 unchecked",
    ]
    assert (
        EnclavePolicy(allow_debug=True, report_data_prefix=b"\x01").describe()[1] == "debug enclaves: allowed"
    )
    assert EnclavePolicy(report_data_prefix=b"\x01").describe()[-1] == "report_data: starts with 01"
    assert EnclavePolicy().describe()[-1] == "report_data: any"
    assert "tcb_evaluation_data_number: >= 16" in EnclavePolicy(min_tcb_evaluation_data_number=16).describe()


@pytest.mark.parametrize(("number", "accepted"), [(15, False), (16, True), (17, True)])
def test_min_tcb_evaluation_data_number_boundary(number: int, accepted: bool) -> None:
    # Intel raises the number at each TCB recovery: collateral from before recovery 16 is refused.
    policy = EnclavePolicy(min_tcb_evaluation_data_number=16)
    evidence = replace(GOOD, tcb_evaluation_data_number=number)
    if accepted:
        policy.appraise(evidence)
    else:
        error = rejects(policy, evidence)
        assert (error.field, error.expected, error.actual) == ("tcb_evaluation_data_number", ">= 16", number)
    # Without a minimum, any number passes.
    EnclavePolicy().appraise(evidence)


def test_repr_shows_the_mapping() -> None:
    text = repr(EnclavePolicy(mr_enclave=MRE_A))
    assert text.startswith("EnclavePolicy(")
    assert MRE_A.hex() in text


# ----------------------------------------------------------------------------------------------------------
# Composition.

ACCEPT = EnclavePolicy(mr_enclave=MRE_A)
REJECT_ENCLAVE = EnclavePolicy(mr_enclave=MRE_B)
REJECT_SIGNER = EnclavePolicy(mr_signer=MRS_B)


def test_all_of_accepts_when_every_child_accepts() -> None:
    AllOf(ACCEPT, EnclavePolicy(mr_signer=MRS_A)).appraise(GOOD)


def test_all_of_raises_the_first_failure() -> None:
    error = rejects(AllOf(ACCEPT, REJECT_SIGNER, REJECT_ENCLAVE), GOOD)
    assert error.field == "mr_signer"
    assert error.expected == MRS_B.hex()


@pytest.mark.parametrize("composite", [AllOf(), AnyOf()])
def test_empty_composites_fail(composite: Policy) -> None:
    error = rejects(composite, GOOD)
    assert error.field == "policies"
    assert "empty" in str(error)


def test_empty_composite_fails_even_for_unsafe_callers() -> None:
    rejects(AnyOf(AllOf()), GOOD)
    rejects(AllOf(AnyOf()), GOOD)


def test_any_of_accepts_when_one_child_accepts() -> None:
    AnyOf(REJECT_ENCLAVE, ACCEPT).appraise(GOOD)
    AnyOf(ACCEPT, REJECT_ENCLAVE).appraise(GOOD)


def _field(error: BaseException) -> str:
    if not isinstance(error, PolicyError):
        raise TypeError(f"not a PolicyError: {error!r}")
    return error.field


def test_any_of_lists_every_failure() -> None:
    error = rejects(AnyOf(REJECT_ENCLAVE, REJECT_SIGNER), GOOD)
    assert MRE_B.hex() in str(error)
    assert MRS_B.hex() in str(error)
    assert error.field == ""
    assert error.expected == (MRE_B.hex(), MRS_B.hex())
    assert error.actual == (MRE_A.hex(), MRS_A.hex())
    assert isinstance(error.__cause__, ExceptionGroup)
    assert [_field(e) for e in error.__cause__.exceptions] == ["mr_enclave", "mr_signer"]


def test_any_of_keeps_a_common_field() -> None:
    error = rejects(AnyOf(REJECT_ENCLAVE, EnclavePolicy(mr_enclave=MRE_C)), GOOD)
    assert error.field == "mr_enclave"
    assert error.expected == (MRE_B.hex(), MRE_C.hex())


def test_nesting() -> None:
    # (enclave A or enclave B) and signer A.
    policy = AllOf(
        AnyOf(EnclavePolicy(mr_enclave=MRE_A), EnclavePolicy(mr_enclave=MRE_B)),
        EnclavePolicy(mr_signer=MRS_A),
    )
    policy.appraise(GOOD)
    policy.appraise(replace(GOOD, mr_enclave=MRE_B))
    assert rejects(policy, replace(GOOD, mr_enclave=MRE_C)).field == "mr_enclave"
    assert rejects(policy, replace(GOOD, mr_signer=MRS_B)).field == "mr_signer"
    # AnyOf over AllOfs: both branches fail, each for its own reason.
    either = AnyOf(AllOf(ACCEPT, REJECT_SIGNER), AllOf(REJECT_ENCLAVE))
    error = rejects(either, GOOD)
    assert isinstance(error.__cause__, ExceptionGroup)
    assert [_field(e) for e in error.__cause__.exceptions] == ["mr_signer", "mr_enclave"]


def test_any_of_does_not_swallow_other_errors() -> None:
    class Broken(Policy):
        def appraise(self, evidence: AppraisableEvidence) -> None:
            raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        AnyOf(Broken(), ACCEPT).appraise(GOOD)


@pytest.mark.parametrize("kind", [AllOf, AnyOf])
def test_composites_take_only_policies(kind: type[AllOf] | type[AnyOf]) -> None:
    with pytest.raises(UsageError):
        kind(ACCEPT, "mr_enclave")  # type: ignore[arg-type]


def test_composites_are_frozen_and_comparable() -> None:
    assert AllOf(ACCEPT, REJECT_SIGNER) == AllOf(ACCEPT, REJECT_SIGNER)
    assert AllOf(ACCEPT) != AnyOf(ACCEPT)  # type: ignore[comparison-overlap]
    assert hash(AnyOf(ACCEPT)) == hash(AnyOf(ACCEPT))
    with pytest.raises(dataclasses.FrozenInstanceError):
        AllOf(ACCEPT).policies = ()  # type: ignore[misc]


def test_composite_describe_indents_children() -> None:
    lines = AnyOf(UnsafeNoPolicy(), AllOf(EnclavePolicy())).describe()
    assert lines[0] == "any of:"
    assert lines[1] == "  - UNSAFE: no appraisal, any evidence is accepted"
    assert lines[2] == "  - all of:"
    assert lines[3] == "      - simulated evidence: rejected"
    assert lines[4] == "        debug enclaves: rejected"


# ----------------------------------------------------------------------------------------------------------
# UnsafeNoPolicy.


def test_unsafe_no_policy_accepts_anything_and_warns_every_time(caplog: pytest.LogCaptureFixture) -> None:
    policy = UnsafeNoPolicy()
    worst = Evidence(debug=True, simulated=True, tcb_status=TcbStatus.REVOKED, advisory_ids=("INTEL-SA-1",))
    with caplog.at_level(logging.WARNING, logger="enklave.attestation.policy"):
        for _ in range(3):
            policy.appraise(worst)
    records = [r for r in caplog.records if r.name == "enklave.attestation.policy"]
    assert len(records) == 3
    assert all(r.levelno == logging.WARNING and "UnsafeNoPolicy" in r.getMessage() for r in records)


def test_unsafe_no_policy_inside_composites_still_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="enklave.attestation.policy"):
        AnyOf(REJECT_ENCLAVE, UnsafeNoPolicy()).appraise(GOOD)
    assert len(caplog.records) == 1


# ----------------------------------------------------------------------------------------------------------
# The module's surface.


def test_all_lists_documented_public_names() -> None:
    assert sorted(policy_module.__all__) == sorted(
        [
            "AllOf",
            "AnyOf",
            "AppraisableEvidence",
            "DEFAULT_ACCEPTED_TCB_STATUSES",
            "EnclavePolicy",
            "Policy",
            "UnsafeNoPolicy",
        ]
    )
    for name in policy_module.__all__:
        obj = getattr(policy_module, name)
        if isinstance(obj, type):
            assert obj.__doc__, name
            for attribute in ("appraise", "describe", "from_mapping", "to_mapping"):
                if attribute in vars(obj):
                    assert getattr(obj, attribute).__doc__, f"{name}.{attribute}"


def test_policy_is_abstract() -> None:
    with pytest.raises(TypeError):
        Policy()  # type: ignore[abstract]


def test_verified_quote_has_every_protocol_member() -> None:
    from enklave.attestation import verified

    members = ["mr_enclave", "mr_signer", "isv_prod_id", "isv_svn", "debug", "report_data", "tcb_status",
               "advisory_ids", "simulated"]  # fmt: skip
    for member in members:
        assert hasattr(verified.VerifiedQuote, member), member


# ----------------------------------------------------------------------------------------------------------
# Property: appraise raises iff some individual check fails, and names the first one.

_MRE_POOL = [MRE_A, MRE_B, MRE_C]
_MRS_POOL = [MRS_A, MRS_B]
_KEYS = [b"key one", b"key two"]
_TAILS = [bytes(32), b"\x01" * 32]
_REPORT_DATA_POOL = [hashlib.sha256(k).digest() + t for k in _KEYS for t in _TAILS] + [
    b"\xab\xcd" + bytes(62)
]
_ADVISORIES = ["INTEL-SA-00001", "INTEL-SA-00002", "INTEL-SA-00003"]
_STATUS_VALUES = [
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
]


@st.composite
def evidences(draw: st.DrawFn) -> Evidence:
    status = draw(st.sampled_from(_STATUS_VALUES))
    return Evidence(
        mr_enclave=draw(st.sampled_from(_MRE_POOL)),
        mr_signer=draw(st.sampled_from(_MRS_POOL)),
        isv_prod_id=draw(st.integers(0, 2)),
        isv_svn=draw(st.integers(0, 4)),
        debug=draw(st.booleans()),
        report_data=draw(st.sampled_from(_REPORT_DATA_POOL)),
        tcb_status=TcbStatus(status) if draw(st.booleans()) else status,
        advisory_ids=tuple(draw(st.lists(st.sampled_from(_ADVISORIES), max_size=2, unique=True))),
        simulated=draw(st.booleans()),
        tcb_evaluation_data_number=draw(st.integers(14, 18)),
    )


def _encode(value: bytes, as_hex: bool) -> str | bytes:
    return value.hex() if as_hex else value


@st.composite
def policy_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["mr_enclave"] = [
            _encode(v, draw(st.booleans()))
            for v in draw(st.lists(st.sampled_from(_MRE_POOL), min_size=1, max_size=3))
        ]
    if draw(st.booleans()):
        spec["mr_signer"] = [
            _encode(v, draw(st.booleans()))
            for v in draw(st.lists(st.sampled_from(_MRS_POOL), min_size=1, max_size=2))
        ]
    if draw(st.booleans()):
        spec["isv_prod_id"] = draw(st.integers(0, 2))
    if draw(st.booleans()):
        spec["min_isv_svn"] = draw(st.integers(0, 5))
    spec["allow_debug"] = draw(st.booleans())
    spec["allow_simulated"] = draw(st.booleans())
    if draw(st.booleans()):
        spec["accepted_tcb_statuses"] = draw(
            st.lists(st.sampled_from(_STATUS_VALUES[:-1]), min_size=1, max_size=6)
        )
    if draw(st.booleans()):
        spec["rejected_advisory_ids"] = draw(st.lists(st.sampled_from(_ADVISORIES), max_size=3))
    if draw(st.booleans()):
        spec["min_tcb_evaluation_data_number"] = draw(st.integers(14, 18))
    mode = draw(st.sampled_from(["none", "exact", "prefix", "binds"]))
    if mode == "exact":
        data = draw(st.sampled_from(_REPORT_DATA_POOL))
        spec["report_data"] = data.rstrip(b"\0") if draw(st.booleans()) else data
    elif mode == "prefix":
        spec["report_data_prefix"] = draw(st.sampled_from(_REPORT_DATA_POOL))[: draw(st.integers(1, 64))]
    elif mode == "binds":
        spec["report_data_binds"] = draw(st.sampled_from(_KEYS))
    return spec


def _raw(value: str | bytes) -> bytes:
    return bytes.fromhex(value) if isinstance(value, str) else value


def expected_failure(evidence: Evidence, spec: dict[str, Any]) -> str | None:
    """The first check that fails, computed from the definitions without the code under test."""
    status = evidence.tcb_status.value if isinstance(evidence.tcb_status, TcbStatus) else evidence.tcb_status
    accepted = set(spec.get("accepted_tcb_statuses", ["UpToDate", "SWHardeningNeeded"]))
    rejected_ids = set(spec.get("rejected_advisory_ids", []))
    checks: list[tuple[str, bool]] = [
        ("simulated", evidence.simulated and not spec["allow_simulated"]),
        ("debug", evidence.debug and not spec["allow_debug"]),
        (
            "mr_enclave",
            "mr_enclave" in spec and evidence.mr_enclave not in [_raw(v) for v in spec["mr_enclave"]],
        ),
        ("mr_signer", "mr_signer" in spec and evidence.mr_signer not in [_raw(v) for v in spec["mr_signer"]]),
        ("isv_prod_id", "isv_prod_id" in spec and evidence.isv_prod_id != spec["isv_prod_id"]),
        ("isv_svn", "min_isv_svn" in spec and evidence.isv_svn < spec["min_isv_svn"]),
        ("tcb_status", status not in accepted),
        ("advisory_ids", any(a in rejected_ids for a in evidence.advisory_ids)),
        (
            "tcb_evaluation_data_number",
            evidence.tcb_evaluation_data_number < spec.get("min_tcb_evaluation_data_number", 0),
        ),
    ]
    if "report_data" in spec:
        padded = spec["report_data"] + bytes(64 - len(spec["report_data"]))
        checks.append(("report_data", evidence.report_data != padded))
    elif "report_data_prefix" in spec:
        prefix = spec["report_data_prefix"]
        checks.append(("report_data", evidence.report_data[: len(prefix)] != prefix))
    elif "report_data_binds" in spec:
        digest = hashlib.sha256(spec["report_data_binds"]).digest()
        checks.append(("report_data", evidence.report_data[:32] != digest))
    for name, failed in checks:
        if failed:
            return name
    return None


@settings(max_examples=500)
@given(evidence=evidences(), spec=policy_specs())
def test_appraise_raises_iff_some_check_fails(evidence: Evidence, spec: dict[str, Any]) -> None:
    policy = EnclavePolicy(**spec)
    failure = expected_failure(evidence, spec)
    if failure is None:
        policy.appraise(evidence)
    else:
        with pytest.raises(PolicyError) as info:
            policy.appraise(evidence)
        assert info.value.field == failure
    # The mapping form appraises identically.
    assert EnclavePolicy.from_mapping(policy.to_mapping()) == policy


@settings(max_examples=200)
@given(evidence=evidences(), specs=st.lists(policy_specs(), max_size=4))
def test_composites_match_their_definitions(evidence: Evidence, specs: list[dict[str, Any]]) -> None:
    policies = [EnclavePolicy(**spec) for spec in specs]
    failures = [expected_failure(evidence, spec) for spec in specs]
    all_pass = bool(specs) and all(f is None for f in failures)
    any_pass = any(f is None for f in failures)
    if all_pass:
        AllOf(*policies).appraise(evidence)
    else:
        error = rejects(AllOf(*policies), evidence)
        first = next((f for f in failures if f is not None), "policies")
        assert error.field == first
    if any_pass:
        AnyOf(*policies).appraise(evidence)
    else:
        rejects(AnyOf(*policies), evidence)
