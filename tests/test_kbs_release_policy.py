"""Key release policies (Azure Key Vault SKR grammar): parsing, round trips and evaluation."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enklave.errors import InvalidPolicy, PolicyError, UsageError
from enklave.services.kbs.release_policy import (
    AllOf,
    AnyOf,
    AuthorityRule,
    ClaimCondition,
    Condition,
    PolicyLimits,
    ReleasePolicy,
)

MAA = "https://sharedeus.eus.attest.azure.net"


def _policy(*conditions: dict[str, Any], authority: str = MAA, combinator: str = "allOf") -> ReleasePolicy:
    return ReleasePolicy.from_json(
        {"version": "1.0.0", "anyOf": [{"authority": authority, combinator: list(conditions)}]}
    )


def _allowed(policy: ReleasePolicy, claims: dict[str, Any], authority: str = MAA) -> bool:
    try:
        result = policy.evaluate(authority, claims)
    except PolicyError:
        return False
    assert result is None  # A verifier raises; it never returns a value to ignore.
    return True


# -- operators -------------------------------------------------------------------------------------------

OPERATOR_CASES = [
    # (operator, policy value, claim value, holds)
    ("equals", "abc", "abc", True),
    ("equals", "abc", "ABC", False),  # Case-sensitive.
    ("equals", 5, 5, True),
    ("equals", 5, 6, False),
    ("equals", 1, 1.0, True),  # JSON numbers compare as numbers.
    ("equals", 1, "1", False),  # No coercion between strings and numbers.
    ("equals", "1", 1, False),
    ("equals", True, True, True),
    ("equals", True, False, False),
    ("equals", True, 1, False),  # No coercion between booleans and numbers.
    ("equals", 1, True, False),
    ("equals", False, 0, False),
    ("equals", "x", None, False),
    ("equals", "x", {"a": "x"}, False),
    ("equals", "x", ["x"], False),
    ("notEquals", "abc", "abd", True),
    ("notEquals", "abc", "abc", False),
    ("notEquals", 3, 4, True),
    ("notEquals", 3, 3.0, False),
    ("notEquals", True, False, True),
    ("notEquals", True, True, False),
    ("notEquals", True, "false", False),  # Another JSON type is refused, never counted as "not equal".
    ("notEquals", 1, "2", False),
    ("notEquals", "a", None, False),
    ("less", 5, 4, True),
    ("less", 5, 5, False),
    ("less", 5, 6, False),
    ("less", 5, "4", False),
    ("lessOrEquals", 5, 5, True),
    ("lessOrEquals", 5, 4.5, True),
    ("lessOrEquals", 5, 6, False),
    ("lessOrEquals", 5, True, False),  # A boolean is not a number.
    ("greater", 5, 6, True),
    ("greater", 5, 5, False),
    ("greater", 5.5, 5, False),
    ("greater", 0, "1", False),
    ("greaterOrEquals", 2, 2, True),
    ("greaterOrEquals", 2, 3, True),
    ("greaterOrEquals", 2, 1, False),
    ("greaterOrEquals", 0, None, False),
    ("exists", True, "anything", True),
    ("exists", True, None, True),  # A null claim is present.
    ("exists", False, "anything", False),
]


@pytest.mark.parametrize(("operator", "expected", "actual", "holds"), OPERATOR_CASES)
def test_every_operator(operator: str, expected: Any, actual: Any, holds: bool) -> None:
    policy = _policy({"claim": "c", operator: expected})
    assert _allowed(policy, {"c": actual}) is holds


@pytest.mark.parametrize(
    ("operator", "value"),
    [
        ("equals", "x"),
        ("notEquals", "x"),
        ("less", 1),
        ("lessOrEquals", 1),
        ("greater", 1),
        ("greaterOrEquals", 1),
        ("exists", True),
    ],
)
def test_missing_claim_fails_every_operator_but_exists_false(operator: str, value: Any) -> None:
    policy = _policy({"claim": "absent", operator: value})
    with pytest.raises(PolicyError) as info:
        policy.evaluate(MAA, {"present": 1})
    assert info.value.field == "absent"
    assert info.value.actual is None
    assert "absent" in str(info.value)


def test_exists_false_holds_only_when_the_claim_is_absent() -> None:
    policy = _policy({"claim": "x-ms-sgx-is-debuggable", "exists": False})
    assert _allowed(policy, {})
    assert not _allowed(policy, {"x-ms-sgx-is-debuggable": False})


def test_policy_error_names_field_expected_and_actual() -> None:
    policy = _policy({"claim": "x-ms-sgx-svn", "greaterOrEquals": 3})
    with pytest.raises(PolicyError) as info:
        policy.evaluate(MAA, {"x-ms-sgx-svn": 2})
    assert info.value.field == "x-ms-sgx-svn"
    assert info.value.expected == {"greaterOrEquals": 3}
    assert info.value.actual == 2
    assert "$.anyOf[0].allOf[0]" in str(info.value)


# -- claim paths -------------------------------------------------------------------------------------------


def test_dotted_claim_walks_nested_objects() -> None:
    policy = _policy({"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"})
    assert _allowed(policy, {"x-ms-isolation-tee": {"x-ms-attestation-type": "sevsnpvm"}})
    assert not _allowed(policy, {"x-ms-isolation-tee": {"x-ms-attestation-type": "sgx"}})
    # A top-level claim whose name merely contains the dot is not what the path means.
    assert not _allowed(policy, {"x-ms-isolation-tee.x-ms-attestation-type": "sevsnpvm"})


@pytest.mark.parametrize(
    "claims",
    [
        {"a": [{"b": 1}]},  # Arrays are not addressable.
        {"a": "b"},  # A scalar on the way.
        {"a": None},
        {"a": {}},
        {},
    ],
)
def test_unresolvable_dotted_claim_is_absent(claims: dict[str, Any]) -> None:
    assert not _allowed(_policy({"claim": "a.b", "equals": 1}), claims)
    assert _allowed(_policy({"claim": "a.b", "exists": False}), claims)


def test_deep_dotted_claim() -> None:
    policy = _policy({"claim": "x-ms-runtime.keys-info.a.b", "equals": 7})
    assert _allowed(policy, {"x-ms-runtime": {"keys-info": {"a": {"b": 7}}}})


# -- composition and authorities ---------------------------------------------------------------------------


def test_all_of_needs_every_condition() -> None:
    policy = _policy({"claim": "a", "equals": 1}, {"claim": "b", "equals": 2})
    assert _allowed(policy, {"a": 1, "b": 2})
    assert not _allowed(policy, {"a": 1, "b": 3})
    assert not _allowed(policy, {"a": 0, "b": 2})


def test_any_of_needs_one_condition() -> None:
    policy = _policy({"claim": "a", "equals": 1}, {"claim": "b", "equals": 2}, combinator="anyOf")
    assert _allowed(policy, {"a": 1, "b": 0})
    assert _allowed(policy, {"a": 0, "b": 2})
    with pytest.raises(PolicyError) as info:
        policy.evaluate(MAA, {"a": 0, "b": 0})
    assert info.value.field == "a"  # The first alternative's failure is reported.
    assert "anyOf" in str(info.value)


def test_nested_any_of_inside_all_of_inside_any_of() -> None:
    # a == 1 && (b == 2 || (c == 3 && d exists))
    policy = _policy(
        {"claim": "a", "equals": 1},
        {
            "anyOf": [
                {"claim": "b", "equals": 2},
                {"allOf": [{"claim": "c", "equals": 3}, {"claim": "d", "exists": True}]},
            ]
        },
    )
    assert _allowed(policy, {"a": 1, "b": 2})
    assert _allowed(policy, {"a": 1, "c": 3, "d": None})
    assert not _allowed(policy, {"a": 1, "c": 3})
    assert not _allowed(policy, {"a": 2, "b": 2})
    with pytest.raises(PolicyError) as info:
        policy.evaluate(MAA, {"a": 1, "c": 3})
    assert info.value.field == "b"


def test_authority_mismatch_is_refused_even_when_claims_hold() -> None:
    policy = _policy({"claim": "a", "equals": 1})
    with pytest.raises(PolicyError) as info:
        policy.evaluate("https://evil.example", {"a": 1})
    assert info.value.field == "authority"
    assert info.value.actual == "https://evil.example"
    assert info.value.expected == [MAA]
    assert not _allowed(policy, {"a": 1}, authority="")
    assert not _allowed(policy, {"a": 1}, authority=MAA + ".evil")
    assert not _allowed(policy, {"a": 1}, authority=MAA.upper())


def test_evaluate_refuses_arguments_of_the_wrong_type() -> None:
    policy = _policy({"claim": "a", "equals": 1})
    with pytest.raises(UsageError):
        policy.evaluate(None, {"a": 1})  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        policy.evaluate(MAA, [("a", 1)])  # type: ignore[arg-type]


def test_authority_ignores_one_trailing_slash() -> None:
    policy = _policy({"claim": "a", "equals": 1}, authority=MAA + "/")
    assert _allowed(policy, {"a": 1}, authority=MAA)
    assert _allowed(_policy({"claim": "a", "equals": 1}), {"a": 1}, authority=MAA + "/")
    assert not _allowed(policy, {"a": 1}, authority=MAA + "//")


def test_several_authorities_each_with_their_own_conditions() -> None:
    policy = ReleasePolicy.from_json(
        {
            "version": "1.0.0",
            "anyOf": [
                {"authority": "https://one", "allOf": [{"claim": "a", "equals": 1}]},
                {"authority": "https://two", "allOf": [{"claim": "a", "equals": 2}]},
                {"authority": "https://one", "anyOf": [{"claim": "b", "equals": 3}]},
            ],
        }
    )
    assert _allowed(policy, {"a": 1}, authority="https://one")
    assert _allowed(policy, {"b": 3}, authority="https://one")
    assert not _allowed(policy, {"a": 2}, authority="https://one")  # That rule belongs to "two".
    assert _allowed(policy, {"a": 2}, authority="https://two")
    assert not _allowed(policy, {"b": 3}, authority="https://two")


def test_azure_confidential_vm_sample_policy() -> None:
    # The shape of Azure's confidential VM SKR sample: version 1.0.0, one MAA authority, nested claims.
    text = json.dumps(
        {
            "version": "1.0.0",
            "anyOf": [
                {
                    "authority": MAA + "/",
                    "allOf": [
                        {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
                        {
                            "claim": "x-ms-isolation-tee.x-ms-compliance-status",
                            "equals": "azure-compliant-cvm",
                        },
                    ],
                }
            ],
        },
        indent=4,
    )
    policy = ReleasePolicy.from_json(text)
    tee = {"x-ms-attestation-type": "sevsnpvm", "x-ms-compliance-status": "azure-compliant-cvm"}
    assert _allowed(policy, {"iss": MAA, "x-ms-isolation-tee": tee})
    assert not _allowed(policy, {"x-ms-isolation-tee": {**tee, "x-ms-compliance-status": "other"}})


# -- round trips -------------------------------------------------------------------------------------------


def test_to_json_is_canonical_and_round_trips() -> None:
    source = {
        "anyOf": [
            {
                "allOf": [
                    {"equals": "ab", "claim": "x"},
                    {"anyOf": [{"claim": "y", "greater": 1.5}, {"claim": "z", "exists": False}]},
                ],
                "authority": MAA,
            }
        ],
        "version": "1.0.0",
    }
    policy = ReleasePolicy.from_json(source)
    text = policy.to_json()
    assert text.startswith('{"version":"1.0.0","anyOf":[{"authority":')
    assert '{"claim":"x","equals":"ab"}' in text
    assert ReleasePolicy.from_json(text) == policy
    assert ReleasePolicy.from_json(text.encode()) == policy
    assert json.loads(text) == policy.to_mapping()
    assert isinstance(policy.authorities[0].condition, AllOf)
    assert policy.authorities[0].condition.conditions[0] == ClaimCondition("x", "equals", "ab")


# -- malformed policies ------------------------------------------------------------------------------------


def _doc(*conditions: Any, **rule: Any) -> dict[str, Any]:
    return {"version": "1.0.0", "anyOf": [{"authority": MAA, "allOf": list(conditions), **rule}]}


MALFORMED: list[tuple[Any, str]] = [
    ("not json", "$"),
    ("[]", "$"),
    (b"\xff\xfe", "$"),
    ('{"version": "1.0.0", "version": "1.0.0", "anyOf": []}', "duplicate"),
    ('{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"c","equals":NaN}]}]}', "NaN"),
    ('{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"c","less":Infinity}]}]}', "Infinity"),
    ({"anyOf": [{"authority": MAA, "allOf": [{"claim": "a", "equals": 1}]}]}, "$: missing key 'version'"),
    ({**_doc({"claim": "a", "equals": 1}), "version": "2.0.0"}, "$.version"),
    ({**_doc({"claim": "a", "equals": 1}), "version": 1}, "$.version"),
    ({"version": "1.0.0"}, "$: missing key 'anyOf'"),
    ({"version": "1.0.0", "anyOf": []}, "$.anyOf: must not be empty"),
    ({"version": "1.0.0", "anyOf": {}}, "$.anyOf"),
    ({**_doc({"claim": "a", "equals": 1}), "extra": 1}, "$: unknown key 'extra'"),
    ({"version": "1.0.0", "anyof": []}, "unknown key 'anyof'"),
    ({"version": "1.0.0", "anyOf": [{"allOf": [{"claim": "a", "equals": 1}]}]}, "$.anyOf[0]: missing"),
    ({"version": "1.0.0", "anyOf": [{"authority": 5, "allOf": []}]}, "$.anyOf[0].authority"),
    (
        {"version": "1.0.0", "anyOf": [{"authority": "", "allOf": [{"claim": "a", "exists": True}]}]},
        "authority",
    ),
    (
        {"version": "1.0.0", "anyOf": [{"authority": " a", "allOf": [{"claim": "a", "exists": True}]}]},
        "authority",
    ),
    ({"version": "1.0.0", "anyOf": [{"authority": MAA}]}, "exactly one of allOf or anyOf"),
    ({"version": "1.0.0", "anyOf": ["x"]}, "$.anyOf[0]"),
    (_doc(), "$.anyOf[0].allOf: must not be empty"),
    (_doc({"claim": "a", "equals": 1}, anyOf=[{"claim": "a", "equals": 1}]), "not allowed together"),
    (_doc({"claim": "a", "equals": 1}, note="x"), "unknown key 'note'"),
    (_doc("claim"), "$.anyOf[0].allOf[0]"),
    (_doc({"claim": "a"}), "exactly one operator"),
    (_doc({"claim": "a", "equals": 1, "notEquals": 2}), "exactly one operator"),
    (_doc({"claim": "a", "contains": 1}), "unknown key 'contains'"),
    (_doc({"claim": "a", "Equals": 1}), "unknown key 'Equals'"),
    (_doc({"claim": 1, "equals": 1}), "$.anyOf[0].allOf[0].claim"),
    (_doc({"claim": "", "equals": 1}), ".claim"),
    (_doc({"claim": "a..b", "equals": 1}), ".claim"),
    (_doc({"claim": "a.", "equals": 1}), ".claim"),
    (_doc({"claim": "a", "equals": None}), ".equals"),
    (_doc({"claim": "a", "equals": {"b": 1}}), ".equals"),
    (_doc({"claim": "a", "equals": [1]}), ".equals"),
    (_doc({"claim": "a", "greater": "5"}), "numbers only"),
    (_doc({"claim": "a", "less": True}), "numbers only"),
    (_doc({"claim": "a", "exists": "yes"}), ".exists"),
    (_doc({"claim": "a", "exists": 1}), ".exists"),
    (_doc({"claim": "a", "equals": 2**63}), "64-bit"),
    (_doc({"claim": "a", "equals": float("nan")}), "finite"),
    (_doc({"allOf": []}), "$.anyOf[0].allOf[0].allOf: must not be empty"),
    (_doc({"claim": "a", "equals": 1, "allOf": [{"claim": "a", "equals": 1}]}), "unknown key 'allOf'"),
    (_doc({"anyOf": [{"claim": "a", "equals": 1}], "x": 1}), "unknown key 'x'"),
    (_doc({}), "needs claim, allOf or anyOf"),
    (5, "$"),
]


@pytest.mark.parametrize(("source", "fragment"), MALFORMED)
def test_malformed_policies_are_rejected_naming_the_path(source: Any, fragment: str) -> None:
    with pytest.raises(InvalidPolicy) as info:
        ReleasePolicy.from_json(source)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def _nested(depth: int) -> dict[str, Any]:
    condition: dict[str, Any] = {"claim": "a", "equals": 1}
    for _ in range(depth):
        condition = {"allOf": [condition]}
    return condition


def test_limits_are_enforced() -> None:
    limits = PolicyLimits(max_depth=4, max_conditions=10, max_authorities=2, max_bytes=2000, max_string=40)
    ReleasePolicy.from_json(_doc(_nested(2)), limits=limits)
    with pytest.raises(InvalidPolicy, match="deeper than 4"):
        ReleasePolicy.from_json(_doc(_nested(4)), limits=limits)
    with pytest.raises(InvalidPolicy, match="more than 10 conditions"):
        ReleasePolicy.from_json(_doc(*[{"claim": "a", "equals": 1}] * 11), limits=limits)
    rule = {"authority": "a", "allOf": [{"claim": "a", "equals": 1}]}
    with pytest.raises(InvalidPolicy, match="more than 2 authorities"):
        ReleasePolicy.from_json({"version": "1.0.0", "anyOf": [rule] * 3}, limits=limits)
    with pytest.raises(InvalidPolicy, match="limit of 2000"):
        ReleasePolicy.from_json(json.dumps(_doc(*[{"claim": "a", "equals": 1}] * 100)), limits=limits)
    with pytest.raises(InvalidPolicy, match="longer than 40"):
        ReleasePolicy.from_json(_doc({"claim": "a" * 41, "equals": 1}), limits=limits)


def test_default_limits_stop_deep_nesting_without_recursion_errors() -> None:
    with pytest.raises(InvalidPolicy, match="deeper than"):
        ReleasePolicy.from_json(_doc(_nested(200)))
    deep_text = '{"version":"1.0.0","anyOf":' + "[" * 50_000 + "]" * 50_000 + "}"
    with pytest.raises(InvalidPolicy):
        ReleasePolicy.from_json(deep_text, limits=PolicyLimits(max_bytes=10**6))


# -- property: evaluate agrees with an independent oracle --------------------------------------------------

NAMES = ["a", "b", "n.x", "n.y", "n.x.z"]
SCALARS = st.sampled_from([0, 1, 2, 2.5, -1, "0", "1", "x", True, False])


@st.composite
def claim_sets(draw: st.DrawFn) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    for name in ("a", "b"):
        if draw(st.booleans()):
            claims[name] = draw(st.one_of(SCALARS, st.none()))
    shape = draw(st.sampled_from(["absent", "scalar", "object"]))
    if shape == "scalar":
        claims["n"] = draw(SCALARS)
    elif shape == "object":
        inner: dict[str, Any] = {}
        if draw(st.booleans()):
            inner["x"] = draw(st.one_of(SCALARS, st.fixed_dictionaries({"z": SCALARS})))
        if draw(st.booleans()):
            inner["y"] = draw(SCALARS)
        claims["n"] = inner
    return claims


@st.composite
def leaves(draw: st.DrawFn) -> ClaimCondition:
    name = draw(st.sampled_from(NAMES))
    operator = draw(
        st.sampled_from(
            ["equals", "notEquals", "less", "lessOrEquals", "greater", "greaterOrEquals", "exists"]
        )
    )
    if operator == "exists":
        value: Any = draw(st.booleans())
    elif operator in ("equals", "notEquals"):
        value = draw(SCALARS)
    else:
        value = draw(st.sampled_from([0, 1, 2, 1.5, -1]))
    return ClaimCondition(name, operator, value)


conditions = st.recursive(
    leaves(),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda items: AllOf(tuple(items))),
        st.lists(children, min_size=1, max_size=3).map(lambda items: AnyOf(tuple(items))),
    ),
    max_leaves=8,
)
combinators = st.lists(conditions, min_size=1, max_size=3).flatmap(
    lambda items: st.sampled_from([AllOf(tuple(items)), AnyOf(tuple(items))])
)
policies = st.lists(
    st.builds(AuthorityRule, st.sampled_from(["https://a", "https://b"]), combinators), min_size=1, max_size=3
).map(lambda rules: ReleasePolicy("1.0.0", tuple(rules)))


def _oracle_lookup(claims: dict[str, Any], name: str) -> tuple[bool, Any]:
    value: Any = claims
    for part in name.split("."):
        if type(value) is not dict or part not in value:
            return False, None
        value = value[part]
    return True, value


def _kind(value: Any) -> str:
    if type(value) is bool:
        return "bool"
    if type(value) in (int, float):
        return "number"
    if type(value) is str:
        return "string"
    return "other"


def _oracle_leaf(leaf: ClaimCondition, claims: dict[str, Any]) -> bool:
    present, actual = _oracle_lookup(claims, leaf.claim)
    if leaf.operator == "exists":
        return present == leaf.value
    if not present:
        return False
    if leaf.operator == "equals":
        return _kind(actual) == _kind(leaf.value) and actual == leaf.value
    if leaf.operator == "notEquals":
        return _kind(actual) == _kind(leaf.value) and actual != leaf.value
    if _kind(actual) != "number":
        return False
    table = {
        "less": actual < leaf.value,
        "lessOrEquals": actual <= leaf.value,
        "greater": actual > leaf.value,
        "greaterOrEquals": actual >= leaf.value,
    }
    return bool(table[leaf.operator])


def _oracle(condition: Condition, claims: dict[str, Any]) -> bool:
    if isinstance(condition, ClaimCondition):
        return _oracle_leaf(condition, claims)
    results = [_oracle(item, claims) for item in condition.conditions]
    return all(results) if isinstance(condition, AllOf) else any(results)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policies, claims=claim_sets(), issuer=st.sampled_from(["https://a", "https://b", "https://c"]))
def test_evaluate_agrees_with_the_oracle(policy: ReleasePolicy, claims: dict[str, Any], issuer: str) -> None:
    # The generated policy goes through the JSON text, so parsing is exercised as well.
    parsed = ReleasePolicy.from_json(policy.to_json())
    assert parsed == policy
    expected = any(
        rule.authority == issuer and _oracle(rule.condition, claims) for rule in policy.authorities
    )
    assert _allowed(parsed, claims, authority=issuer) is expected


KEYWORDS = st.sampled_from(["version", "anyOf", "allOf", "authority", "claim", "equals", "exists", "less"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5) | st.just("1.0.0"),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYWORDS, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(document=JSON_VALUES)
def test_arbitrary_json_only_raises_invalid_policy(document: Any) -> None:
    # Any outcome but a clean parse or InvalidPolicy (a KeyError, a TypeError, a RecursionError) fails here.
    with contextlib.suppress(InvalidPolicy):
        policy = ReleasePolicy.from_json(json.dumps(document))
        assert ReleasePolicy.from_json(policy.to_json()) == policy
