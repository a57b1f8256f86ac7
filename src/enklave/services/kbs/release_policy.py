"""Key release policies in Azure Key Vault's secure key release (SKR) grammar.

A release policy says which attestation tokens may have a key released to them. Its JSON form, as Azure Key
Vault documents it ("secure key release policy grammar")::

    {"version": "1.0.0",
     "anyOf": [{"authority": "<token issuer>",
                "allOf": [{"claim": "x-ms-sgx-mrsigner", "equals": "..."},
                          {"anyOf": [{"claim": "x-ms-sgx-svn", "greaterOrEquals": 2}, ...]}]}]}

The policy is an any-of over authorities; each authority carries exactly one ``allOf`` or ``anyOf`` array of
conditions; a condition is a claim condition (``claim`` plus exactly one operator: ``equals``, ``notEquals``,
``less``, ``lessOrEquals``, ``greater``, ``greaterOrEquals``, ``exists``) or a nested ``allOf``/``anyOf``.
Claim names use dot notation to walk into nested JSON objects (``x-ms-runtime.keys`` style); arrays are not
addressable, as documented.

Semantics chosen where the documentation is silent (docs/kbs-release-policy.md explains each):

* A claim that is absent fails every operator except ``exists: false``.
* No coercion: ``"1"`` never equals ``1``, and ``true`` never equals ``1``. A claim whose JSON type differs
  from the policy value fails ``equals`` *and* ``notEquals``, so a type confusion can only refuse.
* Integers and floats compare as numbers; ordering operators take numbers only (the policy is rejected when
  an ordering operator carries a string or a boolean).
* String comparison is exact and case-sensitive.
* ``authority`` matches the token issuer exactly, ignoring one trailing ``/`` on either side (Azure's own
  samples write the MAA endpoint with a trailing slash while MAA's ``iss`` has none).

Parsing raises :class:`~enklave.errors.InvalidPolicy` naming the JSON path of the problem; evaluation raises
:class:`~enklave.errors.PolicyError` and never returns a bool.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from enklave._json import strict_loads
from enklave.errors import InvalidPolicy, PolicyError, UsageError
from enklave.services.kbs._release_policy_conditions import (
    AllOf,
    AnyOf,
    ClaimCondition,
    ClaimValue,
    Condition,
    Operator,
    condition_failure,
)

__all__ = [
    "SUPPORTED_VERSIONS",
    "AllOf",
    "AnyOf",
    "AuthorityRule",
    "ClaimCondition",
    "ClaimValue",
    "Condition",
    "Operator",
    "PolicyLimits",
    "ReleasePolicy",
]

#: The policy versions this module accepts. "1.0.0" is the only version the grammar documents.
SUPPORTED_VERSIONS: Final = frozenset({"1.0.0"})

_OPERATORS: Final[tuple[Operator, ...]] = (
    "equals",
    "notEquals",
    "less",
    "lessOrEquals",
    "greater",
    "greaterOrEquals",
    "exists",
)
_ORDERING: Final = frozenset({"less", "lessOrEquals", "greater", "greaterOrEquals"})
_INT64_MAX: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class PolicyLimits:
    """Bounds on the size of a policy, so that a hostile policy cannot exhaust memory or the stack.

    ``max_bytes`` bounds the JSON text, ``max_depth`` the nesting of ``allOf``/``anyOf`` below an authority,
    ``max_conditions`` the number of condition objects in total, ``max_authorities`` the authority list, and
    ``max_string`` every string (authority, claim name, string value).
    """

    max_bytes: int = 64 * 1024
    max_depth: int = 8
    max_conditions: int = 256
    max_authorities: int = 16
    max_string: int = 1024


@dataclass(frozen=True, slots=True)
class AuthorityRule:
    """``{"authority": issuer, "allOf"|"anyOf": [...]}``: conditions on tokens from one issuer."""

    authority: str
    condition: AllOf | AnyOf


@dataclass(frozen=True, slots=True)
class ReleasePolicy:
    """A parsed, validated key release policy.

    Build it with :meth:`from_json` (which validates everything); :meth:`to_json` gives canonical JSON that
    parses back to an equal policy. :meth:`evaluate` raises :class:`PolicyError` unless release is allowed.
    """

    version: str
    authorities: tuple[AuthorityRule, ...]

    # -- parsing ---------------------------------------------------------------------------------------

    @classmethod
    def from_json(
        cls, source: str | bytes | Mapping[str, Any], *, limits: PolicyLimits | None = None
    ) -> ReleasePolicy:
        """Parse and validate a policy from JSON text (str or UTF-8 bytes) or an already-decoded mapping.

        Raises :class:`InvalidPolicy` (one line, naming the JSON path) for malformed JSON, duplicate keys,
        unknown or missing keys, wrong types, empty ``allOf``/``anyOf``, an unsupported version, non-finite
        or out-of-range numbers, and anything beyond ``limits``.
        """
        limits = limits or PolicyLimits()
        if isinstance(source, str | bytes):
            document = _decode(source, limits)
        elif isinstance(source, Mapping):
            document = source
        else:
            raise InvalidPolicy(f"$: a policy is JSON text or a mapping, not {type(source).__name__}")
        return _Parser(limits).policy(document)

    def to_mapping(self) -> dict[str, Any]:
        """The policy as plain JSON-compatible data, keys in canonical order."""
        return {"version": self.version, "anyOf": [_rule_to_mapping(rule) for rule in self.authorities]}

    def to_json(self) -> str:
        """Canonical compact JSON; ``ReleasePolicy.from_json(p.to_json()) == p`` always holds."""
        return json.dumps(self.to_mapping(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    # -- evaluation ------------------------------------------------------------------------------------

    def evaluate(self, authority: str, claims: Mapping[str, Any]) -> None:
        """Allow release (return ``None``) only if some rule for ``authority`` has all its conditions hold.

        ``authority`` is the ``iss`` of a token whose signature the caller has already verified against that
        authority's pinned keys; ``claims`` are that token's claims. Raises :class:`PolicyError` naming the
        first failing claim path (``field``), the policy's value (``expected``) and the claim's value
        (``actual``); when no rule names the authority, ``field`` is ``"authority"``. Raises
        :class:`UsageError` when ``authority`` is not a string or ``claims`` is not a mapping.
        """
        if not isinstance(authority, str) or not isinstance(claims, Mapping):
            raise UsageError("evaluate takes the issuer as a string and the claims as a mapping")
        # 1. Select the rules whose authority is this token's issuer. The policy is an any-of over them.
        selected = [
            (index, rule)
            for index, rule in enumerate(self.authorities)
            if _same_authority(rule.authority, authority)
        ]
        if not selected:
            raise PolicyError(
                "the token's issuer is not an authority of this release policy",
                field="authority",
                expected=[rule.authority for rule in self.authorities],
                actual=authority,
            )
        # 2. Release if any selected rule holds; otherwise report the first selected rule's first failure.
        failures: list[PolicyError] = []
        for index, rule in selected:
            failure = condition_failure(rule.condition, claims, f"$.anyOf[{index}]")
            if failure is None:
                return
            failures.append(failure)
        raise failures[0]


# -- JSON decoding and parsing -----------------------------------------------------------------------------


def _decode(source: str | bytes, limits: PolicyLimits) -> Any:
    """Decode JSON strictly: size-bounded, UTF-8, no duplicate keys, no NaN or Infinity."""
    size = len(source.encode("utf-8")) if isinstance(source, str) else len(source)
    if size > limits.max_bytes:
        raise InvalidPolicy(f"$: policy is {size} bytes, more than the limit of {limits.max_bytes}")
    try:
        text = source.decode("utf-8") if isinstance(source, bytes) else source
        return strict_loads(text)
    except InvalidPolicy:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # The JSON error names line and column but never echoes the text, so it can go in the message.
        raise InvalidPolicy(f"$: policy is not valid JSON: {exc}") from exc


class _Parser:
    """Validates decoded JSON against the grammar, counting conditions against the limits."""

    def __init__(self, limits: PolicyLimits) -> None:
        self._limits = limits
        self._count = 0

    def policy(self, document: Any) -> ReleasePolicy:
        mapping = self._object(document, "$", required={"version", "anyOf"}, optional=set())
        version = self._string(mapping["version"], "$.version")
        if version not in SUPPORTED_VERSIONS:
            raise InvalidPolicy(f"$.version: unsupported version {version!r} (supported: 1.0.0)")
        items = self._array(mapping["anyOf"], "$.anyOf")
        if len(items) > self._limits.max_authorities:
            raise InvalidPolicy(f"$.anyOf: more than {self._limits.max_authorities} authorities")
        rules = tuple(self._rule(item, f"$.anyOf[{index}]") for index, item in enumerate(items))
        return ReleasePolicy(version=version, authorities=rules)

    def _rule(self, value: Any, path: str) -> AuthorityRule:
        mapping = self._object(value, path, required={"authority"}, optional={"allOf", "anyOf"})
        authority = self._string(mapping["authority"], f"{path}.authority")
        if not authority.strip() or authority.strip() != authority:
            raise InvalidPolicy(f"{path}.authority: must be a non-empty issuer without surrounding spaces")
        combinator = self._combinator(mapping, path, depth=1)
        if combinator is None:
            raise InvalidPolicy(f"{path}: an authority needs exactly one of allOf or anyOf")
        return AuthorityRule(authority=authority, condition=combinator)

    def _combinator(self, mapping: Mapping[str, Any], path: str, depth: int) -> AllOf | AnyOf | None:
        present = [key for key in ("allOf", "anyOf") if key in mapping]
        if not present:
            return None
        if len(present) == 2:
            raise InvalidPolicy(f"{path}: allOf and anyOf are not allowed together")
        key = present[0]
        if depth > self._limits.max_depth:
            raise InvalidPolicy(f"{path}.{key}: nested deeper than {self._limits.max_depth} levels")
        items = self._array(mapping[key], f"{path}.{key}")
        conditions = tuple(
            self._condition(item, f"{path}.{key}[{index}]", depth) for index, item in enumerate(items)
        )
        return AllOf(conditions) if key == "allOf" else AnyOf(conditions)

    def _condition(self, value: Any, path: str, depth: int) -> Condition:
        self._count += 1
        if self._count > self._limits.max_conditions:
            raise InvalidPolicy(f"{path}: more than {self._limits.max_conditions} conditions in the policy")
        if not isinstance(value, Mapping):
            raise InvalidPolicy(f"{path}: a condition must be a JSON object, not {_json_type(value)}")
        if "claim" not in value:
            mapping = self._object(value, path, required=set(), optional={"allOf", "anyOf"})
            combinator = self._combinator(mapping, path, depth + 1)
            if combinator is None:
                raise InvalidPolicy(f"{path}: a condition needs claim, allOf or anyOf")
            return combinator
        mapping = self._object(value, path, required={"claim"}, optional=set(_OPERATORS))
        claim = self._string(mapping["claim"], f"{path}.claim")
        if not claim or any(not part for part in claim.split(".")):
            raise InvalidPolicy(f"{path}.claim: {claim!r} is not a claim name (empty dotted segment)")
        operators = [name for name in _OPERATORS if name in mapping]
        if len(operators) != 1:
            raise InvalidPolicy(
                f"{path}: a claim condition needs exactly one operator, found {len(operators)}"
            )
        operator = operators[0]
        operand = self._operand(mapping[operator], operator, f"{path}.{operator}")
        return ClaimCondition(claim=claim, operator=operator, value=operand)

    def _operand(self, value: Any, operator: Operator, path: str) -> ClaimValue:
        if operator == "exists":
            if not isinstance(value, bool):
                raise InvalidPolicy(f"{path}: exists takes true or false, not {_json_type(value)}")
            return value
        if isinstance(value, str):
            if operator in _ORDERING:
                raise InvalidPolicy(f"{path}: {operator} compares numbers only, not a string")
            return self._string(value, path)
        if isinstance(value, bool):
            if operator in _ORDERING:
                raise InvalidPolicy(f"{path}: {operator} compares numbers only, not a boolean")
            return value
        if isinstance(value, int):
            if abs(value) > _INT64_MAX:
                raise InvalidPolicy(f"{path}: integer out of the signed 64-bit range")
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidPolicy(f"{path}: number must be finite")
            return value
        raise InvalidPolicy(f"{path}: value must be a string, number or boolean, not {_json_type(value)}")

    def _object(self, value: Any, path: str, *, required: set[str], optional: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise InvalidPolicy(f"{path}: expected a JSON object, not {_json_type(value)}")
        for key in value:
            if not isinstance(key, str):
                raise InvalidPolicy(f"{path}: object keys must be strings")
            if key not in required and key not in optional:
                raise InvalidPolicy(f"{path}: unknown key {key[:64]!r}")
        for key in sorted(required):
            if key not in value:
                raise InvalidPolicy(f"{path}: missing key {key!r}")
        return value

    def _array(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise InvalidPolicy(f"{path}: expected a JSON array, not {_json_type(value)}")
        if not value:
            # An empty any-of would refuse everything and an empty all-of would allow everything: neither
            # is what an author means, so both are errors.
            raise InvalidPolicy(f"{path}: must not be empty")
        return value

    def _string(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise InvalidPolicy(f"{path}: expected a string, not {_json_type(value)}")
        if len(value) > self._limits.max_string:
            raise InvalidPolicy(f"{path}: string longer than {self._limits.max_string} characters")
        return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


# -- serialisation -----------------------------------------------------------------------------------------


def _rule_to_mapping(rule: AuthorityRule) -> dict[str, Any]:
    result: dict[str, Any] = {"authority": rule.authority}
    result.update(_condition_to_mapping(rule.condition))
    return result


def _condition_to_mapping(condition: Condition) -> dict[str, Any]:
    if isinstance(condition, ClaimCondition):
        return {"claim": condition.claim, condition.operator: condition.value}
    key = "allOf" if isinstance(condition, AllOf) else "anyOf"
    return {key: [_condition_to_mapping(item) for item in condition.conditions]}


# -- evaluation --------------------------------------------------------------------------------------------


def _same_authority(policy_authority: str, issuer: str) -> bool:
    # Exact comparison except for one trailing slash: MAA's iss has none, Azure's samples often add one.
    return policy_authority.removesuffix("/") == issuer.removesuffix("/") and bool(issuer)
