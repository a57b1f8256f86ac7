"""Evaluate a parsed MAA policy over a set of incoming claims.

The evaluation follows the claim rule grammar and policy version documents, step by step:

1. The incoming claims (issuer ``AttestationService`` for what the service derived from the evidence) form
   the claim set.
2. ``configurationrules`` run in order; ``issueproperty()`` adds a property claim (to the claim set and the
   property set).
3. ``authorizationrules`` run in order. ``add()`` adds a claim to the claim set. The first rule whose
   conditions hold and whose action is ``permit()`` or ``deny()`` decides; later authorization rules do not
   run. A ``deny()``, or no ``permit()`` at all, fails the evaluation with :class:`~enklave.errors.PolicyError`.
4. ``issuancerules`` run in order: ``issue()`` adds to the claim set and the outgoing set, ``add()`` to the
   claim set only, ``issueproperty()`` to the claim set and the property set. Claims added by a rule are
   visible to every later rule, but only issued claims reach the token.

Matching a rule: its conditions are checked left to right against the claim set as it was when the rule
started (its own action runs only after matching). A positive condition holds when at least one claim
satisfies all its property tests; its name (if any) is bound to *every* such claim, so ``c.value`` stands for
a set of values. A negated condition holds
when no claim satisfies its tests. Comparing a claim property with a set: ``==`` and the orderings hold when
they hold for some member, ``!=`` when the property differs from every member. Values of different types are
never equal (``"1"``, ``1`` and ``true`` are three different values) and the orderings compare integers only;
a comparison that does not apply is simply false.

A claim-producing action makes one claim per value of its ``value=`` set (an empty set, from
``JsonToClaimValue("null")``, makes none), or copies every claim bound by ``claim=name``. Claims made by the
policy have issuer ``AttestationPolicy``.

Evaluation is deterministic and uses no ``eval``; the 1.2 function ``JmesPath`` is recognised by the parser
but not implemented (it raises :class:`~enklave.errors.PolicyError` when a rule that uses it runs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from enklave._json import loads
from enklave.errors import InvalidPolicy, PolicyError, UsageError
from enklave.services.attestation.policy.ast import (
    ActionVerb,
    ClaimRef,
    ClaimValue,
    Condition,
    Expression,
    FunctionCall,
    Literal,
    Operator,
    Policy,
    PropertyCondition,
    Rule,
)
from enklave.services.attestation.policy.parser import parse_policy

__all__ = [
    "DEFAULT_MAX_CLAIMS",
    "ISSUER_ATTESTATION_POLICY",
    "ISSUER_ATTESTATION_SERVICE",
    "ISSUER_CUSTOM_CLAIM",
    "Claim",
    "PolicyResult",
    "evaluate",
]

ISSUER_ATTESTATION_SERVICE = "AttestationService"
"""Issuer of the claims the attestation service derives from verified evidence."""
ISSUER_ATTESTATION_POLICY = "AttestationPolicy"
"""Issuer of the claims a policy adds, issues or sets as properties."""
ISSUER_CUSTOM_CLAIM = "CustomClaim"
"""Issuer of claims the attester supplies itself."""

DEFAULT_MAX_CLAIMS = 10_000
"""The largest claim set an evaluation may grow to before it fails with PolicyError."""

_Bindings = dict[str, tuple["Claim", ...]]
_T = TypeVar("_T", str, bool)


@dataclass(frozen=True, slots=True)
class Claim:
    """One claim: a type, a string/integer/boolean value and the issuer that made it.

    Raises :class:`~enklave.errors.UsageError` when built with a non-string type or issuer or a value of
    another type (floats, ``None``, lists: a set of values is several claims of one type).
    """

    type: str
    value: ClaimValue
    issuer: str = ISSUER_ATTESTATION_SERVICE

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not isinstance(self.issuer, str):
            raise UsageError("a claim's type and issuer must be strings")
        if not isinstance(self.value, str | int | bool):
            raise UsageError(f"claim {self.type!r}: value must be a string, an integer or a boolean")


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """What a permitted evaluation produced.

    ``issued`` are the outgoing claims (for the token), ``properties`` the property claims (from
    ``issueproperty()``), ``claims`` the final claim set (incoming plus everything the policy added), each in
    the order made. Only :func:`evaluate` builds this object, and only when the policy permitted.
    """

    issued: tuple[Claim, ...]
    properties: tuple[Claim, ...]
    claims: tuple[Claim, ...]

    def issued_claims(self) -> dict[str, ClaimValue | list[ClaimValue]]:
        """The issued claims as token claims: one value per type, or a list when a type was issued more than
        once (in the order issued)."""
        return _as_mapping(self.issued)

    def property_values(self) -> dict[str, ClaimValue]:
        """The property claims by type; when a property was set more than once, the last value wins."""
        return {claim.type: claim.value for claim in self.properties}


def _as_mapping(claims: Iterable[Claim]) -> dict[str, ClaimValue | list[ClaimValue]]:
    grouped: dict[str, list[ClaimValue]] = {}
    for claim in claims:
        grouped.setdefault(claim.type, []).append(claim.value)
    return {name: values[0] if len(values) == 1 else values for name, values in grouped.items()}


def evaluate(
    policy: Policy | str, incoming_claims: Iterable[Claim], *, max_claims: int = DEFAULT_MAX_CLAIMS
) -> PolicyResult:
    """Evaluate ``policy`` (parsed, or text to parse) over ``incoming_claims`` and return what it issued.

    Raises :class:`~enklave.errors.PolicyError` when the authorization rules deny or never permit (``field``
    is ``"authorizationrules"``), when a function cannot be applied to its arguments, or when the claim set
    would exceed ``max_claims``; :class:`~enklave.errors.InvalidPolicy` when ``policy`` is text that does not
    parse; :class:`~enklave.errors.UsageError` when a claim is not a :class:`Claim`.
    """
    if isinstance(policy, str):
        policy = parse_policy(policy)
    claims = list(incoming_claims)
    for claim in claims:
        if not isinstance(claim, Claim):
            raise UsageError("incoming claims must be Claim objects")
    state = _State(claims, max_claims)
    state.check_size()

    # Step 2: configuration rules set properties before anything else runs.
    for rule in policy.configuration_rules:
        state.run(rule)

    # Step 3: the first permit() or deny() whose conditions hold decides; add() rules run as they are reached.
    decided = False
    for rule in policy.authorization_rules:
        bindings = state.match(rule)
        if bindings is None:
            continue
        if rule.action.verb is ActionVerb.DENY:
            raise PolicyError(
                f"the authorization rule at line {rule.line}, column {rule.column} denied the evidence",
                field="authorizationrules",
                expected="permit()",
                actual="deny()",
            )
        if rule.action.verb is ActionVerb.PERMIT:
            decided = True
            break
        state.act(rule, bindings)
    if not decided:
        raise PolicyError(
            "no authorization rule permitted the evidence",
            field="authorizationrules",
            expected="permit()",
            actual="no matching rule",
        )

    # Step 4: issuance rules shape the outgoing claims and properties.
    for rule in policy.issuance_rules:
        state.run(rule)
    return PolicyResult(
        issued=tuple(state.issued), properties=tuple(state.properties), claims=tuple(state.claims)
    )


class _State:
    """The claim set, outgoing set and property set of one evaluation."""

    def __init__(self, claims: list[Claim], max_claims: int) -> None:
        self.claims = claims
        self.issued: list[Claim] = []
        self.properties: list[Claim] = []
        self._max_claims = max_claims

    def check_size(self) -> None:
        if len(self.claims) > self._max_claims:
            raise PolicyError(
                f"the claim set grew beyond {self._max_claims} claims",
                field="claims",
                expected=self._max_claims,
                actual=len(self.claims),
            )

    def run(self, rule: Rule) -> None:
        bindings = self.match(rule)
        if bindings is not None:
            self.act(rule, bindings)

    def match(self, rule: Rule) -> _Bindings | None:
        # Matching completes before the action runs, so a rule never sees the claims its own action makes.
        bindings: _Bindings = {}
        for condition in rule.conditions:
            matched = tuple(claim for claim in self.claims if _satisfies(claim, condition, bindings))
            if condition.negated:
                if matched:
                    return None
            elif not matched:
                return None
            elif condition.binding is not None:
                bindings[condition.binding] = matched
        return bindings

    def act(self, rule: Rule, bindings: _Bindings) -> None:
        action = rule.action
        if action.claim is not None:
            made = [Claim(c.type, c.value, ISSUER_ATTESTATION_POLICY) for c in bindings[action.claim]]
        else:
            if action.type_expr is None or action.value_expr is None:
                raise InvalidPolicy(
                    "a claim action has neither claim= nor type= and value="
                )  # Parser-checked.
            claim_type = _single(_values(action.type_expr, bindings), str, "a claim type", action.line)
            values = _values(action.value_expr, bindings)
            made = [Claim(claim_type, value, ISSUER_ATTESTATION_POLICY) for value in values]
        self.claims.extend(made)
        self.check_size()
        if action.verb is ActionVerb.ISSUE:
            self.issued.extend(made)
        elif action.verb is ActionVerb.ISSUE_PROPERTY:
            self.properties.extend(made)


def _satisfies(claim: Claim, condition: Condition, bindings: _Bindings) -> bool:
    return all(_test(claim, test, bindings) for test in condition.tests)


def _equal(a: ClaimValue, b: ClaimValue) -> bool:
    # Types must match exactly: in Python True == 1, but a boolean claim is not an integer claim.
    return type(a) is type(b) and a == b


def _ordered(a: ClaimValue, b: ClaimValue, operator: Operator) -> bool:
    if type(a) is not int or type(b) is not int:
        return False
    if operator is Operator.LT:
        return a < b
    if operator is Operator.LE:
        return a <= b
    if operator is Operator.GT:
        return a > b
    return a >= b


def _test(claim: Claim, test: PropertyCondition, bindings: _Bindings) -> bool:
    actual: ClaimValue = getattr(claim, test.property)
    operands = _values(test.operand, bindings)
    if test.operator is Operator.EQ:
        return any(_equal(actual, operand) for operand in operands)
    if test.operator is Operator.NE:
        return not any(_equal(actual, operand) for operand in operands)
    return any(_ordered(actual, operand, test.operator) for operand in operands)


def _values(expr: Expression, bindings: _Bindings) -> list[ClaimValue]:
    if isinstance(expr, Literal):
        return [expr.value]
    if isinstance(expr, ClaimRef):
        return [getattr(claim, expr.property) for claim in bindings[expr.name]]
    return _call(expr, bindings)


def _single(values: list[ClaimValue], kind: type[_T], what: str, line: int) -> _T:
    if len(values) != 1 or type(values[0]) is not kind:
        raise PolicyError(
            f"the rule at line {line} needs {what} to be one {kind.__name__} value, not {len(values)} value(s)"
            + (f" of type {type(values[0]).__name__}" if len(values) == 1 else ""),
            field="policy",
            expected=kind.__name__,
            actual=[type(value).__name__ for value in values],
        )
    return values[0]


def _call(call: FunctionCall, bindings: _Bindings) -> list[ClaimValue]:
    args = [_values(arg, bindings) for arg in call.args]
    where = f"{call.name} (line {call.line}, column {call.column})"
    if call.name == "AppendString":
        return [_single(args[0], str, f"{where}'s first argument", call.line)
                + _single(args[1], str, f"{where}'s second argument", call.line)]  # fmt: skip
    if call.name == "NegateBool":
        return [not _single(args[0], bool, f"{where}'s argument", call.line)]
    if call.name == "ContainsOnlyValue":
        value = args[1]
        if len(value) != 1:
            raise PolicyError(f"{where} needs one value as its second argument", field="policy")
        return [bool(args[0]) and all(_equal(member, value[0]) for member in args[0])]
    if call.name == "IsSubsetOf":
        return [all(any(_equal(member, other) for other in args[1]) for member in args[0])]
    if call.name == "JsonToClaimValue":
        return _json_to_claim_values(_single(args[0], str, f"{where}'s argument", call.line), where)
    raise PolicyError(f"{where}: {call.name} is not supported by enklave's policy engine", field="policy")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _json_to_claim_values(text: str, where: str) -> list[ClaimValue]:
    try:
        data = loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise PolicyError(f"{where}: the argument is not valid JSON", field="policy") from exc
    items = data if isinstance(data, list) else [data]
    values: list[ClaimValue] = []
    for item in items:
        if item is None:
            continue  # JSON null is an empty value: it makes no claim.
        if isinstance(item, bool | int | str):
            values.append(item)
        else:
            kind = "a fraction" if isinstance(item, float) else "an object or a nested array"
            raise PolicyError(f"{where}: JSON {kind} has no claim value", field="policy")
    return values
