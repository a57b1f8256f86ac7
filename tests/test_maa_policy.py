"""The MAA policy language: parsing, version and section rules, evaluation semantics, the documented examples."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enklave.errors import InvalidPolicy, PolicyError, UsageError
from enklave.services.attestation.policy import (
    DEFAULT_SGX_POLICY,
    ISSUER_ATTESTATION_POLICY,
    MAX_FUNCTION_NESTING,
    ActionVerb,
    Claim,
    ClaimRef,
    FunctionCall,
    Literal,
    Operator,
    evaluate,
    parse_policy,
)

MRSIGNER = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"
MRENCLAVE = "a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091"


def sgx_claims(*, debuggable: bool = False, product_id: int = 4639, svn: int = 2) -> list[Claim]:
    return [
        Claim("x-ms-sgx-is-debuggable", debuggable),
        Claim("x-ms-sgx-mrsigner", MRSIGNER),
        Claim("x-ms-sgx-mrenclave", MRENCLAVE),
        Claim("x-ms-sgx-product-id", product_id),
        Claim("x-ms-sgx-svn", svn),
        Claim("x-ms-attestation-type", "sgx"),
    ]


def permit_and_issue(issuance: str, version: str = "1.0") -> str:
    return f"version={version}; authorizationrules {{ => permit(); }}; issuancerules {{ {issuance} }};"


# --- Parsing: every construct lands in the syntax tree. ---


def test_every_construct_parses_into_the_tree() -> None:
    policy = parse_policy(
        """version=1.2;
        configurationrules { => issueproperty(type="required_pcr_mask", value=0xFF); };
        authorizationrules {
            c1:[type=="a", value!=-3, issuer=="AttestationService"] && ![type=="b"] => deny();
            /* block comment */ => permit();
        };
        issuancerules {
            // line comment
            c:[type="x"] && d:[type=="y", value==c.value] => issue(claim=d);
            c:[type=="x"] => add(type=c.type, value=AppendString(c.value, "-suffix"));
            => issueproperty(type="omit_x5c", value=true);
        };"""
    )
    assert policy.version == "1.2"
    assert policy.configuration_rules[0].action.verb is ActionVerb.ISSUE_PROPERTY
    assert policy.configuration_rules[0].action.value_expr == Literal(255)
    deny = policy.authorization_rules[0]
    assert deny.action.verb is ActionVerb.DENY
    assert deny.conditions[0].binding == "c1"
    assert [t.operator for t in deny.conditions[0].tests] == [Operator.EQ, Operator.NE, Operator.EQ]
    assert deny.conditions[0].tests[1].operand == Literal(-3)
    assert deny.conditions[1].negated and deny.conditions[1].binding is None
    assert (deny.line, deny.column) == (4, 13)
    assert policy.authorization_rules[1].conditions == ()
    issue = policy.issuance_rules[0]
    assert issue.conditions[0].tests[0].operator is Operator.EQ  # A single '=' reads as '=='.
    operand = issue.conditions[1].tests[1].operand
    assert isinstance(operand, ClaimRef) and (operand.name, operand.property) == ("c", "value")
    assert issue.action.claim == "d"
    add = policy.issuance_rules[1].action
    assert isinstance(add.value_expr, FunctionCall) and add.value_expr.name == "AppendString"
    assert policy.issuance_rules[2].action.value_expr == Literal(True)


def test_keywords_are_case_insensitive_and_sections_optional() -> None:
    policy = parse_policy("Version= 1.0; AuthorizationRules { => Permit(); };")
    assert policy.issuance_rules == () and policy.configuration_rules == ()
    assert policy.authorization_rules[0].action.verb is ActionVerb.PERMIT


def test_string_escapes() -> None:
    policy = parse_policy(permit_and_issue(r'=> issue(type="j", value="{\"a\": \"b\\c\"}\n");'))
    assert policy.issuance_rules[0].action.value_expr == Literal('{"a": "b\\c"}\n')


def test_bytes_input_and_limits() -> None:
    assert parse_policy(permit_and_issue("").encode()).version == "1.0"
    with pytest.raises(InvalidPolicy, match="UTF-8"):
        parse_policy(b"version=1.0; \xff")
    with pytest.raises(InvalidPolicy, match="longer than"):
        parse_policy(permit_and_issue("") + " " * 300_000)


BROKEN = [
    # (policy text, line, column, a fragment of the message)
    ("version=1.0; authorizationrules{ => permit() };", 1, 46, "expected ';'"),
    ("version=1.0;\nauthorizationrules{\n  [type==\"a\" => permit();\n};", 3, 14, "expected one of"),
    ("version=1.3; authorizationrules{};", 1, 9, "unsupported policy version"),
    ("version=1.0;\nconfigurationrules{};\nauthorizationrules{};", 2, 1, "needs policy version 1.1"),
    ("version=1.1; authorizationrules{ ![type==\"a\"] => permit(); };", 1, 34, "needs policy version 1.2"),
    ("version=1.1; authorizationrules{ => permit(); }; issuancerules{ => issue(type=\"a\", value=NegateBool(true)); };",
     1, 90, "functions need policy version 1.2"),
    ("version=1.2; authorizationrules{ => permit(); }; issuancerules{ => issue(type=\"a\", value=Nope(1)); };",
     1, 90, "unknown function"),
    ("version=1.2; authorizationrules{ => permit(); }; issuancerules{ => issue(type=\"a\", value=NegateBool(1, 2)); };",
     1, 90, "takes 1 argument"),
    ("version=1.0;\nauthorizationrules{\n  c:[type==\"x\"] => issue(claim=c);\n};", 3, 20,
     "not allowed in authorizationrules"),
    ("version=1.0; authorizationrules{ => permit(); }; issuancerules{ => permit(); };", 1, 68,
     "not allowed in issuancerules"),
    ("version=1.1; configurationrules{ => add(type=\"a\", value=1); }; authorizationrules{};", 1, 37, "not allowed"),
    ("version=1.0; authorizationrules{ => allow(); };", 1, 37, "unknown action"),
    ("version=1.0; authorizationrules{ => permit(type=\"a\"); };", 1, 37, "takes no arguments"),
    ("version=1.0; authorizationrules{ => permit(); }; issuancerules{ => issue(type=\"a\"); };", 1, 68, "takes type="),
    ("version=1.0; authorizationrules{ => permit(); }; issuancerules{ => issue(type=\"a\", value=c.value); };",
     1, 90, "not bound"),
    ("version=1.0; authorizationrules{ => permit(); }; issuancerules{ c:[type==\"a\"] => issue(claim=d); };",
     1, 94, "not bound"),
    ("version=1.0; authorizationrules{ => permit(); }; issuancerules{ c:[type==\"a\"] => issue(claim=c.value); };",
     1, 88, "claim= takes the name"),
    ("version=1.0; authorizationrules{ => permit(); }; issuancerules{ => issue(type=1, value=1); };", 1, 74, "string"),
    ("version=1.0; authorizationrules{ => permit(); }; issuancerules{ => issue(type=\"a\", type=\"b\"); };",
     1, 84, "given twice"),
    ("version=1.0; authorizationrules{ => permit(); }; issuancerules{ => issue(kind=\"a\", value=1); };",
     1, 74, "unknown argument"),
    ("version=1.0; authorizationrules{ [colour==\"a\"] => permit(); };", 1, 35, "unknown claim property"),
    ("version=1.0; authorizationrules{ [type==\"a\", value<\"b\"] => permit(); };", 1, 51, "integers only"),
    ("version=1.0; authorizationrules{ [type>1] => permit(); };", 1, 39, "compares integer values"),
    ("version=1.0; authorizationrules{ c:[type==\"a\"] && c:[type==\"b\"] => permit(); };", 1, 51, "already bound"),
    ("version=1.0; authorizationrules{ [type==\"a\", value==99999999999999999999] => permit(); };",
     1, 53, "64 bits"),
    ("version=1.0; authorizationrules{ [type==\"a\", value==b] => permit(); };", 1, 54, "expected"),
    ("version=1.0; authorizationrules{ => permit(); }; issuancerules{ => issue(type=\"a\", value=\"x); };",
     1, 90, "unexpected character"),
    ("version=1.0; authorizationrules{ => permit(); }", 1, 48, "end of the policy"),
    ("", 1, 1, "expected 'version'"),
    ("version=1.0; issuancerules{};", 1, 14, "'authorizationrules'"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "column", "fragment"), BROKEN)
def test_errors_point_at_line_and_column(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(InvalidPolicy) as info:
        parse_policy(text)
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert fragment in str(info.value)
    assert f"(line {line}, column {column})" in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_garbage_raises_only_invalid_policy(text: str) -> None:
    with contextlib.suppress(InvalidPolicy):
        parse_policy(text)


_FRAGMENTS = ["version", "=", "1.0", "1.2", ";", "authorizationrules", "issuancerules", "configurationrules",
              "{", "}", "[", "]", "(", ")", "c", ":", "type", "value", "==", "!=", "<", "=>", "&&", "!", ",",
              '"x"', "1", "true", "permit", "issue", "add", "c.value", "claim", "AppendString", "."]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=40))
def test_near_miss_token_soup_raises_only_invalid_policy(parts: list[str]) -> None:
    try:
        policy = parse_policy(" ".join(parts))
    except InvalidPolicy:
        return
    assert policy.version in ("1.0", "1.1", "1.2")


@pytest.mark.parametrize("depth", [MAX_FUNCTION_NESTING + 1, 3000])
def test_deep_nesting_is_refused_not_crashing(depth: int) -> None:
    nested = "NegateBool(" * depth + "true" + ")" * depth
    with pytest.raises(InvalidPolicy, match="nest"):
        parse_policy(permit_and_issue(f'=> issue(type="a", value={nested});', version="1.2"))


def test_nesting_up_to_the_limit_evaluates() -> None:
    nested = "NegateBool(" * MAX_FUNCTION_NESTING + "true" + ")" * MAX_FUNCTION_NESTING
    policy = permit_and_issue(f'=> issue(type="a", value={nested});', version="1.2")
    assert evaluate(policy, []).issued_claims() == {"a": MAX_FUNCTION_NESTING % 2 == 0}


# --- Evaluation: operators. ---

OPERATOR_CASES = [
    # (claim value, operator, literal, expected match)
    (5, "==", "5", True), (5, "==", "6", False), (5, "!=", "6", True), (5, "!=", "5", False),
    (5, "<", "6", True), (5, "<", "5", False), (5, "<=", "5", True), (5, "<=", "4", False),
    (5, ">", "4", True), (5, ">", "5", False), (5, ">=", "5", True), (5, ">=", "6", False),
    (-2, "<", "0", True), (-2, ">=", "-1", False),
    ("abc", "==", '"abc"', True), ("abc", "==", '"ABC"', False), ("abc", "!=", '"abd"', True),
    ("abc", "!=", '"abc"', False),
    (True, "==", "true", True), (True, "==", "false", False), (False, "!=", "true", True),
    (False, "!=", "false", False),
    # Values of different types are never equal, and orderings only apply to integers.
    ("5", "==", "5", False), (1, "==", "true", False), (True, "==", "1", False), ("5", "!=", "5", True),
    ("5", ">=", "0", False), (True, ">", "0", False),
]  # fmt: skip


@pytest.mark.parametrize(("value", "op", "literal", "expected"), OPERATOR_CASES)
def test_operator(value: str | int | bool, op: str, literal: str, expected: bool) -> None:
    policy = f'version=1.0; authorizationrules {{ [type=="v", value{op}{literal}] => permit(); }};'
    if expected:
        evaluate(policy, [Claim("v", value)])
    else:
        with pytest.raises(PolicyError):
            evaluate(policy, [Claim("v", value)])


def test_type_and_issuer_conditions() -> None:
    policy = 'version=1.0; authorizationrules { [type=="v", issuer=="CustomClaim"] => permit(); };'
    evaluate(policy, [Claim("v", 1, "CustomClaim")])
    with pytest.raises(PolicyError):
        evaluate(policy, [Claim("v", 1)])  # Issued by AttestationService, not CustomClaim.
    with pytest.raises(PolicyError):
        evaluate(policy, [Claim("w", 1, "CustomClaim")])


def test_all_tests_of_a_condition_must_hold_on_one_claim() -> None:
    policy = 'version=1.0; authorizationrules { [type=="v", value==2] => permit(); };'
    # A claim of type v and another claim with value 2 do not make one claim that satisfies both tests.
    with pytest.raises(PolicyError):
        evaluate(policy, [Claim("v", 1), Claim("w", 2)])
    evaluate(policy, [Claim("v", 1), Claim("v", 2)])


# --- Evaluation: authorization. ---


DENY_DEBUG = '[type=="x-ms-sgx-is-debuggable", value==true] => deny();'


def test_permit_deny_and_default_deny() -> None:
    denying = "version=1.0; authorizationrules { " + DENY_DEBUG + " => permit(); };"
    evaluate(denying, sgx_claims(debuggable=False))
    with pytest.raises(PolicyError) as info:
        evaluate(denying, sgx_claims(debuggable=True))
    assert info.value.field == "authorizationrules" and "line 1, column 35" in str(info.value)
    with pytest.raises(PolicyError, match="no authorization rule permitted"):
        evaluate("version=1.0; authorizationrules { };", sgx_claims())
    with pytest.raises(PolicyError, match="denied"):
        evaluate("version=1.0; authorizationrules { => deny(); };", sgx_claims())


def test_first_deciding_authorization_rule_wins() -> None:
    # Rules apply in order: a permit() before a deny() decides, and the deny() never runs.
    evaluate("version=1.0; authorizationrules { => permit(); => deny(); };", [])
    with pytest.raises(PolicyError):
        evaluate("version=1.0; authorizationrules { => deny(); => permit(); };", [])


def test_negated_condition() -> None:
    policy = 'version=1.2; authorizationrules { ![type=="revoked"] => permit(); };'
    evaluate(policy, [Claim("fine", 1)])
    with pytest.raises(PolicyError):
        evaluate(policy, [Claim("revoked", True)])


def test_add_in_authorization_is_visible_later_but_not_issued() -> None:
    policy = """version=1.0;
        authorizationrules {
            [type=="x-ms-sgx-svn", value>=2] => add(type="svn-ok", value=true);
            [type=="svn-ok", value==true, issuer=="AttestationPolicy"] => permit();
        };
        issuancerules { c:[type=="svn-ok"] => issue(type="checked", value=c.value); };"""
    result = evaluate(policy, sgx_claims(svn=2))
    assert result.issued_claims() == {"checked": True}
    assert Claim("svn-ok", True, ISSUER_ATTESTATION_POLICY) in result.claims
    with pytest.raises(PolicyError):
        evaluate(policy, sgx_claims(svn=1))


# --- Evaluation: issuance. ---


def test_issue_add_and_issueproperty() -> None:
    policy = permit_and_issue(
        """c:[type=="x-ms-sgx-mrsigner"] => add(type="signer", value=c.value);
           c:[type=="signer"] => issue(type="who", value=c.value);
           [type=="who"] => issueproperty(type="report_validity_in_minutes", value=60);
           [type=="never"] => issue(type="ghost", value=1);"""
    )
    result = evaluate(policy, sgx_claims())
    assert result.issued_claims() == {"who": MRSIGNER}  # The added claim is visible later but not issued.
    assert result.property_values() == {"report_validity_in_minutes": 60}
    assert Claim("signer", MRSIGNER, ISSUER_ATTESTATION_POLICY) in result.claims
    assert Claim("report_validity_in_minutes", 60, ISSUER_ATTESTATION_POLICY) in result.claims
    assert all(claim.issuer == ISSUER_ATTESTATION_POLICY for claim in result.issued)


def test_later_rules_see_additions() -> None:
    policy = permit_and_issue('![type=="a"] => add(type="a", value=1); ![type=="a"] => issue(type="twice", value=1);',
                              version="1.2")  # fmt: skip
    result = evaluate(policy, [])
    assert result.issued == ()
    assert [c.type for c in result.claims] == ["a"]


def test_bindings_cover_every_matching_claim() -> None:
    claims = [Claim("tag", "a"), Claim("tag", "b"), Claim("other", "b")]
    result = evaluate(permit_and_issue('c:[type=="tag"] => issue(claim=c);'), claims)
    assert result.issued_claims() == {"tag": ["a", "b"]}
    joined = permit_and_issue(
        'c:[type=="tag"] && d:[type=="other", value==c.value] => issue(type="both", value=d.value);'
    )
    assert evaluate(joined, claims).issued_claims() == {"both": "b"}
    mismatch = permit_and_issue('c:[type=="tag"] && d:[type=="other", value!=c.value] => issue(claim=d);')
    assert evaluate(mismatch, claims).issued == ()


def test_issue_from_the_docs_claim_rule_grammar() -> None:
    # The claim rule grammar document's two examples: a reference to F1 in a later condition, and claim=C2.
    policy = """version=1.0; authorizationrules { => permit(); };
        issuancerules {
            F1:[type=="OSName", issuer=="CustomClaim"]
                && [type=="OSName", issuer=="AttestationService", value==F1.value]
                => issueproperty(type="report_validity_in_minutes", value=1440);
            F1:[type=="OSName", issuer=="CustomClaim"]
                && C2:[type=="OSName", issuer=="AttestationService", value==F1.value]
                => issue(claim=C2);
        };"""
    agreeing = [Claim("OSName", "Windows", "CustomClaim"), Claim("OSName", "Windows")]
    result = evaluate(policy, agreeing)
    assert result.issued_claims() == {"OSName": "Windows"}
    assert result.property_values() == {"report_validity_in_minutes": 1440}
    disagreeing = [Claim("OSName", "Linux", "CustomClaim"), Claim("OSName", "Windows")]
    result = evaluate(policy, disagreeing)
    assert result.issued == () and result.properties == ()


# --- Evaluation: the functions of version 1.2. ---


@pytest.mark.parametrize(
    ("claims", "value", "expected"),
    [
        ([Claim("s1", "abc"), Claim("s2", "xyz")], "AppendString(c1.value, c2.value)", "abcxyz"),
        ([Claim("s1", True), Claim("s2", "x")], "NegateBool(c1.value)", False),
        ([Claim("s1", 100), Claim("s1", 100), Claim("s2", 0)], "ContainsOnlyValue(c1.value, 100)", True),
        ([Claim("s1", 100), Claim("s1", 101), Claim("s2", 0)], "ContainsOnlyValue(c1.value, 100)", False),
        ([Claim("s1", "abc"), Claim("s1", 100), Claim("s2", True), Claim("s2", "abc"), Claim("s2", 100)],
         "IsSubsetOf(c1.value, c2.value)", True),
        ([Claim("s1", "abc"), Claim("s1", 7), Claim("s2", "abc")], "IsSubsetOf(c1.value, c2.value)", False),
        ([Claim("s1", "100"), Claim("s2", "x")], "JsonToClaimValue(c1.value)", 100),
        ([Claim("s1", "true"), Claim("s2", "x")], "JsonToClaimValue(c1.value)", True),
        ([Claim("s1", '"abc"'), Claim("s2", "x")], "JsonToClaimValue(c1.value)", "abc"),
        ([Claim("s1", '[0, "abc", true, null]'), Claim("s2", "x")], "JsonToClaimValue(c1.value)", [0, "abc", True]),
    ],
)  # fmt: skip
def test_functions(claims: list[Claim], value: str, expected: object) -> None:
    policy = permit_and_issue(f'c1:[type=="s1"] && c2:[type=="s2"] => issue(type="r", value={value});', "1.2")
    assert evaluate(policy, claims).issued_claims() == {"r": expected}


def test_json_null_makes_no_claim() -> None:
    policy = permit_and_issue('c:[type=="j"] => issue(type="r", value=JsonToClaimValue(c.value));', "1.2")
    assert evaluate(policy, [Claim("j", "null")]).issued == ()


@pytest.mark.parametrize(
    ("claims", "value"),
    [
        ([Claim("j", "1.5")], "JsonToClaimValue(c.value)"),
        ([Claim("j", '{"a": 1}')], "JsonToClaimValue(c.value)"),
        ([Claim("j", "[[1]]")], "JsonToClaimValue(c.value)"),
        ([Claim("j", "not json")], "JsonToClaimValue(c.value)"),
        ([Claim("j", "NaN")], "JsonToClaimValue(c.value)"),
        ([Claim("j", 1)], "AppendString(c.value, \"x\")"),
        ([Claim("j", "a"), Claim("j", "b")], "AppendString(c.value, \"x\")"),
        ([Claim("j", "x")], "NegateBool(c.value)"),
        ([Claim("j", "{}")], "JmesPath(c.value, \"a\")"),
    ],
)  # fmt: skip
def test_function_errors_fail_the_evaluation(claims: list[Claim], value: str) -> None:
    policy = permit_and_issue(f'c:[type=="j"] => issue(type="r", value={value});', "1.2")
    with pytest.raises(PolicyError):
        evaluate(policy, claims)


def test_claim_type_must_be_one_string() -> None:
    policy = permit_and_issue('c:[type=="n"] => issue(type=c.value, value=1);')
    assert evaluate(policy, [Claim("n", "named")]).issued_claims() == {"named": 1}
    with pytest.raises(PolicyError):
        evaluate(policy, [Claim("n", 5)])


def test_claim_set_size_is_bounded() -> None:
    policy = permit_and_issue('c:[type=="j"] => add(type="r", value=JsonToClaimValue(c.value));', "1.2")
    with pytest.raises(PolicyError, match="beyond 10 claims"):
        evaluate(policy, [Claim("j", str(list(range(20))))], max_claims=10)


def test_claims_are_validated() -> None:
    with pytest.raises(UsageError):
        Claim("a", 1.5)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        Claim(1, "a")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        evaluate(permit_and_issue(""), [("a", 1)])  # type: ignore[list-item]


# --- The MAA documentation's policies. ---


def test_default_sgx_policy_issues_the_documented_claims() -> None:
    policy = parse_policy(DEFAULT_SGX_POLICY)
    assert policy.version == "1.1"
    result = evaluate(policy, sgx_claims(debuggable=True, product_id=7, svn=3))
    assert result.issued_claims() == {
        "is-debuggable": True,
        "sgx-mrsigner": MRSIGNER,
        "sgx-mrenclave": MRENCLAVE,
        "product-id": 7,
        "svn": 3,
        "tee": "sgx",
    }
    assert result.property_values() == {"x-ms-sgx-tcbidentifier": "azuredefault"}


def test_docs_sample_custom_sgx_policy() -> None:
    # The "sample custom policy for an SGX enclave", with its placeholders filled in.
    policy = f"""version= 1.0;
        authorizationrules
        {{
               [ type=="x-ms-sgx-is-debuggable", value==false ]
                && [ type=="x-ms-sgx-product-id", value==4639 ]
                && [ type=="x-ms-sgx-svn", value>= 0 ]
                && [ type=="x-ms-sgx-mrsigner", value=="{MRSIGNER}"]
            => permit();
        }};
        issuancerules {{
        c:[type=="x-ms-sgx-mrsigner"] => issue(type="my-signer", value=c.value);
        }};"""
    assert evaluate(policy, sgx_claims()).issued_claims() == {"my-signer": MRSIGNER}
    for claims in (sgx_claims(debuggable=True), sgx_claims(product_id=1), sgx_claims(svn=-1)):
        with pytest.raises(PolicyError):
            evaluate(policy, claims)


TPM_CLAIMS = ["aikValidated", "secureBootEnabled", "bootDebuggingDisabled", "notSafeMode"]


def test_docs_tpm_policy_version_1_1() -> None:
    policy = """version=1.1;
        configurationrules{
        => issueproperty(type = "required_pcr_mask", value = 15);
        => issueproperty(type = "require_valid_aik_cert", value = false);
        };
        authorizationrules {
            => permit();
        };
        issuancerules
        {
        [type=="aikValidated", value==true]&&
        [type=="secureBootEnabled", value==true] &&
        [type=="bootDebuggingDisabled", value==true] &&
        [type=="notSafeMode", value==true] => issue(type="PlatformAttested", value=true);

        [type=="aikValidated", value==false]&&
        [type=="secureBootEnabled", value==true] &&
        [type=="bootDebuggingDisabled", value==true] &&
        [type=="notSafeMode", value==true] => issue(type="PlatformAttested", value=false);
        };"""
    validated = evaluate(policy, [Claim(name, True) for name in TPM_CLAIMS])
    assert validated.issued_claims() == {"PlatformAttested": True}
    assert validated.property_values() == {"required_pcr_mask": 15, "require_valid_aik_cert": False}
    unvalidated = [Claim("aikValidated", False)] + [Claim(name, True) for name in TPM_CLAIMS[1:]]
    assert evaluate(policy, unvalidated).issued_claims() == {"PlatformAttested": False}
    assert evaluate(policy, [Claim(name, False) for name in TPM_CLAIMS]).issued == ()


def test_docs_author_sign_policy_steps() -> None:
    # "Drafting the policy file": a bare deny(), then a permit() on a claim, then an issued literal.
    with pytest.raises(PolicyError):
        evaluate("version=1.0;\nauthorizationrules\n{\n=>deny();\n};\n\nissuancerules\n{\n};", [])
    policy = """version=1.0;
        authorizationrules
        {
        [type=="secureBootEnabled", value==true, issuer=="AttestationService"]=>permit();
        };
        issuancerules
        {
        => issue(type="SecurityLevelValue", value=100);
        };"""
    result = evaluate(policy, [Claim("secureBootEnabled", True)])
    assert result.issued == (Claim("SecurityLevelValue", 100, ISSUER_ATTESTATION_POLICY),)
    with pytest.raises(PolicyError):
        evaluate(policy, [Claim("secureBootEnabled", True, "CustomClaim")])


def test_docs_not_operator_example() -> None:
    # Claim rule functions, "Not condition operator": add Claim3 only when it is absent.
    policy = permit_and_issue('![type=="Claim3"] => add(type="Claim3", value=300);', "1.2")
    result = evaluate(policy, [Claim("Claim1", 100), Claim("Claim2", 200)])
    assert Claim("Claim3", 300, ISSUER_ATTESTATION_POLICY) in result.claims
    again = evaluate(policy, [Claim("Claim3", 1)])
    assert [c.value for c in again.claims if c.type == "Claim3"] == [1]


def test_docs_json_array_example() -> None:
    policy = permit_and_issue(
        'c:[type=="JsonData"] => add(type="Result", value=JsonToClaimValue(c.value));', "1.2"
    )
    result = evaluate(policy, [Claim("JsonData", '[0, "abc", true]')])
    assert [c.value for c in result.claims if c.type == "Result"] == [0, "abc", True]
