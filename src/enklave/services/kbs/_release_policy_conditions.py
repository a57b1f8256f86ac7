"""The condition tree of a release policy and its evaluation against a token's claims.

:class:`ClaimCondition`, :class:`AllOf` and :class:`AnyOf` are what
:meth:`~enklave.services.kbs.release_policy.ReleasePolicy.from_json` parses an authority's conditions into;
:func:`condition_failure` tells whether one tree holds for a token's claims. The grammar and the semantics
chosen where Azure's documentation is silent are described in :mod:`enklave.services.kbs.release_policy`, which
re-exports the public names of this module: import them from there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from enklave.errors import PolicyError

__all__ = ["AllOf", "AnyOf", "ClaimCondition", "ClaimValue", "Condition", "Operator", "condition_failure"]

Operator: TypeAlias = Literal[
    "equals", "notEquals", "less", "lessOrEquals", "greater", "greaterOrEquals", "exists"
]
ClaimValue: TypeAlias = str | int | float | bool


@dataclass(frozen=True, slots=True)
class ClaimCondition:
    """``{"claim": name, <operator>: value}``: one comparison against one (possibly nested) claim."""

    claim: str
    operator: Operator
    value: ClaimValue


@dataclass(frozen=True, slots=True)
class AllOf:
    """Holds when every condition holds; never empty (the parser refuses an empty array)."""

    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Holds when at least one condition holds; never empty (the parser refuses an empty array)."""

    conditions: tuple[Condition, ...]


Condition: TypeAlias = ClaimCondition | AllOf | AnyOf


class _Absent:
    """Marks a claim path that does not resolve; distinct from a JSON ``null`` claim."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Final = _Absent()


# -- evaluation --------------------------------------------------------------------------------------------


def condition_failure(condition: Condition, claims: Mapping[str, Any], path: str) -> PolicyError | None:
    """Return ``None`` when the condition holds, else the error describing the first failure."""
    if isinstance(condition, ClaimCondition):
        return _check_claim(condition, claims, path)
    key = "allOf" if isinstance(condition, AllOf) else "anyOf"
    failures: list[PolicyError] = []
    for index, item in enumerate(condition.conditions):
        failure = condition_failure(item, claims, f"{path}.{key}[{index}]")
        if isinstance(condition, AllOf) and failure is not None:
            return failure
        if isinstance(condition, AnyOf):
            if failure is None:
                return None
            failures.append(failure)
    if isinstance(condition, AllOf):
        return None
    first = failures[0]
    return PolicyError(
        f"no alternative of {path}.anyOf holds (first: {first})",
        field=first.field,
        expected=first.expected,
        actual=first.actual,
    )


def _check_claim(condition: ClaimCondition, claims: Mapping[str, Any], path: str) -> PolicyError | None:
    actual = _lookup(claims, condition.claim)
    if _holds(condition.operator, condition.value, actual):
        return None
    shown: object = None if isinstance(actual, _Absent) else actual
    state = "is absent" if isinstance(actual, _Absent) else "does not satisfy the condition"
    return PolicyError(
        f"release policy condition {path} failed: claim {condition.claim!r} {state} "
        f"({condition.operator} {condition.value!r})",
        field=condition.claim,
        expected={condition.operator: condition.value},
        actual=shown,
    )


def _lookup(claims: Mapping[str, Any], name: str) -> Any:
    """Walk dot-separated names into nested objects; arrays and scalars on the way make the claim absent."""
    current: Any = claims
    for part in name.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _ABSENT
        current = current[part]
    return current


def _holds(operator: Operator, expected: ClaimValue, actual: Any) -> bool:
    if operator == "exists":
        return (not isinstance(actual, _Absent)) is expected
    if isinstance(actual, _Absent):
        return False
    if operator in ("equals", "notEquals"):
        if not _same_kind(expected, actual):
            # A claim of another JSON type fails both equals and notEquals: no coercion may grant release.
            return False
        return (actual == expected) is (operator == "equals")
    if not _is_number(actual) or not _is_number(expected):
        return False
    if isinstance(actual, float) and not math.isfinite(actual):
        return False
    if operator == "less":
        return bool(actual < expected)
    if operator == "lessOrEquals":
        return bool(actual <= expected)
    if operator == "greater":
        return bool(actual > expected)
    return bool(actual >= expected)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same_kind(expected: ClaimValue, actual: Any) -> bool:
    if isinstance(expected, bool):
        return isinstance(actual, bool)
    if isinstance(expected, str):
        return isinstance(actual, str)
    return _is_number(actual) and not (isinstance(actual, float) and not math.isfinite(actual))
