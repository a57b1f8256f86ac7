"""x-ms-policy-hash and the policy JWS: the documented formula, the documented unsigned JWS, malformed tokens."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enklave.errors import InvalidPolicy
from enklave.services.attestation.policy import (
    DEFAULT_SGX_POLICY,
    Claim,
    evaluate,
    parse_policy,
    policy_hash,
    policy_text_from_jws,
    policy_token_hash,
    unsigned_policy_jws,
)

# The "unsigned policy for an SGX enclave with PolicyFormat=JWT" from an earlier revision of MAA's policy examples
# page: the then-default policy, wrapped as {"alg":"none"} + {"AttestationPolicy": BASE64URL(text)}.
DOCS_UNSIGNED_JWS = (
    "eyJhbGciOiJub25lIn0.eyJBdHRlc3RhdGlvblBvbGljeSI6ICJkbVZ5YzJsdmJqMGdNUzR3TzJGMWRHaHZjbWw2WVhScGIyNXlkV3hs"
    "YzN0ak9sdDBlWEJsUFQwaUpHbHpMV1JsWW5WbloyRmliR1VpWFNBOVBpQndaWEp0YVhRb0tUdDlPMmx6YzNWaGJtTmxjblZzWlhON1l6c"
    "GJkSGx3WlQwOUlpUnBjeTFrWldKMVoyZGhZbXhsSWwwZ1BUNGdhWE56ZFdVb2RIbHdaVDBpYVhNdFpHVmlkV2RuWVdKc1pTSXNJSFpoYk"
    "hWbFBXTXVkbUZzZFdVcE8yTTZXM1I1Y0dVOVBTSWtjMmQ0TFcxeWMybG5ibVZ5SWwwZ1BUNGdhWE56ZFdVb2RIbHdaVDBpYzJkNExXMXl"
    "jMmxuYm1WeUlpd2dkbUZzZFdVOVl5NTJZV3gxWlNrN1l6cGJkSGx3WlQwOUlpUnpaM2d0YlhKbGJtTnNZWFpsSWwwZ1BUNGdhWE56ZFdV"
    "b2RIbHdaVDBpYzJkNExXMXlaVzVqYkdGMlpTSXNJSFpoYkhWbFBXTXVkbUZzZFdVcE8yTTZXM1I1Y0dVOVBTSWtjSEp2WkhWamRDMXBaQ"
    "0pkSUQwLUlHbHpjM1ZsS0hSNWNHVTlJbkJ5YjJSMVkzUXRhV1FpTENCMllXeDFaVDFqTG5aaGJIVmxLVHRqT2x0MGVYQmxQVDBpSkhOMm"
    "JpSmRJRDAtSUdsemMzVmxLSFI1Y0dVOUluTjJiaUlzSUhaaGJIVmxQV011ZG1Gc2RXVXBPMk02VzNSNWNHVTlQU0lrZEdWbElsMGdQVDR"
    "nYVhOemRXVW9kSGx3WlQwaWRHVmxJaXdnZG1Gc2RXVTlZeTUyWVd4MVpTazdmVHMifQ."
)
DOCS_UNSIGNED_TEXT = (
    'version= 1.0;authorizationrules{c:[type=="$is-debuggable"] => permit();};issuancerules{'
    'c:[type=="$is-debuggable"] => issue(type="is-debuggable", value=c.value);'
    'c:[type=="$sgx-mrsigner"] => issue(type="sgx-mrsigner", value=c.value);'
    'c:[type=="$sgx-mrenclave"] => issue(type="sgx-mrenclave", value=c.value);'
    'c:[type=="$product-id"] => issue(type="product-id", value=c.value);'
    'c:[type=="$svn"] => issue(type="svn", value=c.value);'
    'c:[type=="$tee"] => issue(type="tee", value=c.value);};'
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def documented_hash(text: str) -> str:
    # BASE64URL(SHA256(UTF8(BASE64URL(UTF8(policy text))))), as MAA's claim sets page defines x-ms-policy-hash.
    return b64url(hashlib.sha256(b64url(text.encode()).encode()).digest())


def test_the_documented_unsigned_jws_round_trips() -> None:
    assert policy_text_from_jws(DOCS_UNSIGNED_JWS) == DOCS_UNSIGNED_TEXT
    assert unsigned_policy_jws(DOCS_UNSIGNED_TEXT) == DOCS_UNSIGNED_JWS


def test_the_documented_unsigned_policy_parses_and_evaluates() -> None:
    claims = [
        Claim("$is-debuggable", False),
        Claim("$sgx-mrsigner", "aa"),
        Claim("$svn", 1),
        Claim("$tee", "sgx"),
    ]
    result = evaluate(parse_policy(policy_text_from_jws(DOCS_UNSIGNED_JWS)), claims)
    assert result.issued_claims() == {"is-debuggable": False, "sgx-mrsigner": "aa", "svn": 1, "tee": "sgx"}


@pytest.mark.parametrize(
    "text", [DEFAULT_SGX_POLICY, DOCS_UNSIGNED_TEXT, "version=1.0; authorizationrules{};", "é"]
)
def test_policy_hash_follows_the_documented_formula(text: str) -> None:
    assert policy_hash(text) == documented_hash(text)
    # The hash depends on the text only, not on its wrapping.
    assert policy_hash(unsigned_policy_jws(text)) == documented_hash(text)


def test_policy_hash_ignores_the_signature() -> None:
    header = b64url(json.dumps({"alg": "RS256", "x5c": ["MIIB"]}).encode())
    payload = b64url(json.dumps({"AttestationPolicy": b64url(DEFAULT_SGX_POLICY.encode())}).encode())
    signed = f"{header}.{payload}.{b64url(b'not checked here')}"
    assert policy_hash(signed) == policy_hash(DEFAULT_SGX_POLICY)
    assert policy_token_hash(signed) != policy_token_hash(unsigned_policy_jws(DEFAULT_SGX_POLICY))


def test_policy_hash_is_sensitive_to_every_character() -> None:
    assert policy_hash(DEFAULT_SGX_POLICY) != policy_hash(DEFAULT_SGX_POLICY.replace("\t", "    "))
    assert policy_hash(DEFAULT_SGX_POLICY) != policy_hash(DEFAULT_SGX_POLICY + "\n")


def test_policy_token_hash_is_the_sha256_of_the_jws_as_uploaded() -> None:
    # Microsoft's SDK tests compute the expected set-policy hash this way for an unsecured policy.
    jws = unsigned_policy_jws("version=1.0; authorizationrules{=> permit();}; issuancerules{};")
    assert jws.startswith("eyJhbGciOiJub25lIn0.eyJBdHRlc3RhdGlvblBvbGljeSI6ICJ") and jws.endswith(".")
    assert policy_token_hash(jws) == hashlib.sha256(jws.encode()).digest()
    with pytest.raises(InvalidPolicy):
        policy_token_hash("version=1.0;")


def _jws(header: object, payload: object) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}."


@pytest.mark.parametrize(
    "token",
    [
        "a.b",
        "a.b.c.d",
        "!!.e30.",
        f"{b64url(b'not json')}.{b64url(b'{}')}.",
        _jws([], {"AttestationPolicy": b64url(b"x")}),
        _jws({"alg": "none"}, ["AttestationPolicy"]),
        _jws({"alg": "none"}, {}),
        _jws({"alg": "none"}, {"AttestationPolicy": 5}),
        _jws({"alg": "none"}, {"AttestationPolicy": "version=1.0;"}),
        _jws({"alg": "none"}, {"AttestationPolicy": "a"}),
        _jws({"alg": "none"}, {"AttestationPolicy": b64url(b"\xff\xfe")}),
    ],
)
def test_malformed_policy_tokens_raise_invalid_policy(token: str) -> None:
    with pytest.raises(InvalidPolicy):
        policy_text_from_jws(token)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_round_trips_through_the_unsigned_jws(text: str) -> None:
    jws = unsigned_policy_jws(text)
    assert policy_text_from_jws(jws) == text
    assert policy_hash(jws) == documented_hash(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='abcXYZ019-_.=+/ {}"', max_size=80))
def test_garbage_tokens_raise_only_invalid_policy(token: str) -> None:
    with contextlib.suppress(InvalidPolicy):
        policy_text_from_jws(token)
