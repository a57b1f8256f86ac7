"""The syntax tree of an MAA attestation policy: frozen objects that the parser builds and the evaluator reads.

A :class:`Policy` is a version and up to three ordered lists of :class:`Rule`. A rule is an optional list of
:class:`Condition` joined by ``&&`` and one :class:`Action`. Values in conditions and actions are
:class:`Literal`, :class:`ClaimRef` (``c.value``) or :class:`FunctionCall` (policy version 1.2). Every node
that can be wrong at evaluation time carries the 1-based ``line`` and ``column`` where it was written, so that
a rule can be named in an error or a log line.

These objects are only built by :func:`enklave.services.attestation.policy.parse_policy`, which has already
checked everything the text alone can tell (version, verbs, sections, bound identifiers, argument shapes).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal as TypingLiteral

__all__ = [
    "Action",
    "ActionVerb",
    "ClaimProperty",
    "ClaimRef",
    "ClaimValue",
    "Condition",
    "Expression",
    "FunctionCall",
    "Literal",
    "Operator",
    "Policy",
    "PropertyCondition",
    "Rule",
]

ClaimValue = str | int | bool
"""The value of one claim: a string, an integer or a boolean (the policy language's three value types)."""

ClaimProperty = TypingLiteral["type", "value", "issuer"]
"""The properties of a claim that conditions test and references read."""


class Operator(Enum):
    """A comparison in a claim property condition.

    ``==`` and ``!=`` compare any two values of the same type; the orderings compare integers only. A single
    ``=`` in a condition is read as ``==``, as the MAA documentation's own examples write it.
    """

    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="

    @property
    def is_ordering(self) -> bool:
        """Whether this operator orders values (``<``, ``<=``, ``>``, ``>=``), which only integers support."""
        return self not in (Operator.EQ, Operator.NE)


class ActionVerb(Enum):
    """What a rule does when its conditions hold."""

    PERMIT = "permit"
    DENY = "deny"
    ADD = "add"
    ISSUE = "issue"
    ISSUE_PROPERTY = "issueproperty"


@dataclass(frozen=True, slots=True)
class Literal:
    """A literal string, integer or boolean written in the policy."""

    value: ClaimValue


@dataclass(frozen=True, slots=True)
class ClaimRef:
    """``name.property``: the claims that the condition bound to ``name`` matched, read through one property.

    A reference stands for a set of values, one per matching claim, in the order of the claim set.
    """

    name: str
    property: ClaimProperty
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """``Name(arg, ...)`` (policy version 1.2). ``name`` is the function's canonical spelling."""

    name: str
    args: tuple[Expression, ...]
    line: int
    column: int


Expression = Literal | ClaimRef | FunctionCall
"""A value written in a condition or an action."""


@dataclass(frozen=True, slots=True)
class PropertyCondition:
    """``property op operand`` inside ``[...]``: one test on one property of a candidate claim."""

    property: ClaimProperty
    operator: Operator
    operand: Expression


@dataclass(frozen=True, slots=True)
class Condition:
    """``name:[...]``, ``[...]`` or ``![...]``.

    A positive condition holds when at least one claim of the claim set satisfies every property condition,
    and binds ``name`` (when given) to all such claims. A negated condition (version 1.2) holds when no claim
    does; it binds nothing.
    """

    binding: str | None
    negated: bool
    tests: tuple[PropertyCondition, ...]
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Action:
    """``verb(...)``: ``permit()``, ``deny()``, or a claim-producing verb with its arguments.

    A claim-producing action either copies the claims bound to ``claim`` or builds claims of type
    ``type_expr`` with the values of ``value_expr``; exactly one of the two forms is set.
    """

    verb: ActionVerb
    claim: str | None
    type_expr: Expression | None
    value_expr: Expression | None
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Rule:
    """``conditions => action;``. An empty condition list always holds."""

    conditions: tuple[Condition, ...]
    action: Action
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy: its version and its three rule sections, each in the order written.

    ``text`` is the policy text that was parsed, kept so that the policy hash can be computed from it.
    """

    version: str
    configuration_rules: tuple[Rule, ...]
    authorization_rules: tuple[Rule, ...]
    issuance_rules: tuple[Rule, ...]
    text: str
