"""Parse MAA policy text into a :class:`~enklave.services.attestation.policy.ast.Policy`.

The grammar (``maa_policy.lark``, shipped with the package) is parsed with lark's LALR parser. Parsing happens
in two steps:

1. Lark turns the text into a concrete tree, or raises; its error (with line and column) becomes an
   :class:`~enklave.errors.InvalidPolicy` whose message names the unexpected token and what was expected.
2. A tree walk builds the frozen syntax tree and checks what the grammar leaves open: the version is 1.0, 1.1
   or 1.2; ``configurationrules`` needs 1.1, ``![...]`` and functions need 1.2; action verbs exist and are
   allowed in their section; arguments have the right shape; every ``name.property`` and ``claim=name``
   refers to a condition earlier in the same rule; ordering operators compare integers.

Every failure raises :class:`~enklave.errors.InvalidPolicy` with the line and column of the offending token.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import cast

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from enklave.errors import InvalidPolicy
from enklave.services.attestation.policy.ast import (
    Action,
    ActionVerb,
    ClaimProperty,
    ClaimRef,
    Condition,
    Expression,
    FunctionCall,
    Literal,
    Operator,
    Policy,
    PropertyCondition,
    Rule,
)

__all__ = ["FUNCTIONS", "MAX_FUNCTION_NESTING", "MAX_POLICY_CHARS", "SUPPORTED_VERSIONS", "parse_policy"]

SUPPORTED_VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2")
"""The policy language versions enklave parses."""

MAX_POLICY_CHARS = 256 * 1024
"""The longest policy text accepted, in characters; longer texts raise InvalidPolicy before parsing."""

MAX_FUNCTION_NESTING = 32
"""How deeply function calls may nest in one expression; deeper nesting raises InvalidPolicy, so that evaluation
never runs out of stack."""

FUNCTIONS: dict[str, int] = {
    "JmesPath": 2,
    "JsonToClaimValue": 1,
    "IsSubsetOf": 2,
    "AppendString": 2,
    "NegateBool": 1,
    "ContainsOnlyValue": 2,
}
"""The functions of policy version 1.2, by canonical name, with the number of arguments each takes."""

_FUNCTIONS_BY_LOWER = {name.lower(): name for name in FUNCTIONS}
_PROPERTIES: dict[str, ClaimProperty] = {"type": "type", "value": "value", "issuer": "issuer"}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "/": "/"}

# Which verbs each section allows, as the claim rule grammar documents them; issueproperty() is also the only
# verb of configurationrules (policy versions 1.1 and 1.2).
_SECTION_VERBS = {
    "configurationrules": frozenset({ActionVerb.ISSUE_PROPERTY}),
    "authorizationrules": frozenset({ActionVerb.PERMIT, ActionVerb.DENY, ActionVerb.ADD}),
    "issuancerules": frozenset({ActionVerb.ADD, ActionVerb.ISSUE, ActionVerb.ISSUE_PROPERTY}),
}
_SECTION_OF_TREE = {
    "config_section": "configurationrules",
    "auth_section": "authorizationrules",
    "issuance_section": "issuancerules",
}

# How each terminal of the grammar reads in an error message.
_TERMINAL_NAMES = {
    "VERSION_KW": "'version'",
    "CONFIG_KW": "'configurationrules'",
    "AUTH_KW": "'authorizationrules'",
    "ISSUANCE_KW": "'issuancerules'",
    "BOOLEAN": "a boolean",
    "VERSION_NUMBER": "a version number",
    "INTEGER": "an integer",
    "STRING": "a string",
    "IDENT": "a name",
    "ARROW": "'=>'",
    "EQEQ": "'=='",
    "NOTEQ": "'!='",
    "LESSEQ": "'<='",
    "MOREEQ": "'>='",
    "LESS": "'<'",
    "MORE": "'>'",
    "EQUAL": "'='",
    "AND": "'&&'",
    "BANG": "'!'",
    "COLON": "':'",
    "SEMICOLON": "';'",
    "COMMA": "','",
    "DOT": "'.'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LPAR": "'('",
    "RPAR": "')'",
    "$END": "the end of the policy",
}


@functools.cache
def _lark() -> Lark:
    grammar = importlib.resources.files(__package__).joinpath("maa_policy.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse_policy(text: str | bytes) -> Policy:
    """Parse an MAA policy text (versions 1.0 to 1.2) into a :class:`Policy`.

    Raises :class:`~enklave.errors.InvalidPolicy` (with ``line`` and ``column`` when the problem has a place)
    when the text is not UTF-8, longer than :data:`MAX_POLICY_CHARS`, does not follow the grammar, or uses a
    construct its declared version or section does not allow. Never raises anything else for any input.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidPolicy("policy text is not UTF-8") from exc
    if len(text) > MAX_POLICY_CHARS:
        raise InvalidPolicy(f"policy text is longer than {MAX_POLICY_CHARS} characters")
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text) from exc
    except RecursionError as exc:
        raise InvalidPolicy("policy text is nested too deeply") from exc
    except LarkError as exc:
        raise InvalidPolicy("policy text does not parse") from exc
    try:
        return _Builder(text).build(tree)
    except RecursionError as exc:
        raise InvalidPolicy("policy text is nested too deeply") from exc


def _describe(names: set[str] | frozenset[str]) -> str:
    readable = sorted({_TERMINAL_NAMES.get(name, name) for name in names})
    if not readable:
        return ""
    if len(readable) > 8:
        readable = [*readable[:8], "..."]
    return "; expected " + (readable[0] if len(readable) == 1 else "one of " + ", ".join(readable))


def _end_position(text: str) -> tuple[int, int]:
    # Lark reports the end of input at the last token, or nowhere; point just past the last character instead.
    return text.count("\n") + 1, len(text) - (text.rfind("\n") + 1) + 1


def _syntax_error(exc: UnexpectedInput, text: str) -> InvalidPolicy:
    line, column = exc.line, exc.column
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        if token.type == "$END":
            line, column = _end_position(text)
            return InvalidPolicy(
                f"unexpected end of the policy{_describe(exc.expected)}", line=line, column=column
            )
        return InvalidPolicy(f"unexpected {str(token)!r}{_describe(exc.expected)}", line=line, column=column)
    if isinstance(exc, UnexpectedCharacters):
        position = exc.pos_in_stream if exc.pos_in_stream is not None else -1
        char = text[position] if 0 <= position < len(text) else ""
        return InvalidPolicy(
            f"unexpected character {char!r}{_describe(exc.allowed)}", line=line, column=column
        )
    if isinstance(exc, UnexpectedEOF):
        line, column = _end_position(text)
        return InvalidPolicy(
            f"unexpected end of the policy{_describe(set(exc.expected))}", line=line, column=column
        )
    return InvalidPolicy("policy text does not parse", line=line if line > 0 else None, column=column)


def _tokens(tree: Tree[Token], kind: str) -> list[Token]:
    return [child for child in tree.children if isinstance(child, Token) and child.type == kind]


def _subtrees(tree: Tree[Token]) -> list[Tree[Token]]:
    return [child for child in tree.children if isinstance(child, Tree)]


def _error(message: str, token: Token) -> InvalidPolicy:
    return InvalidPolicy(message, line=token.line, column=token.column)


class _Builder:
    """Walks lark's tree once, building the syntax tree and checking what the grammar leaves open."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._version = (1, 0)
        self._depth = 0

    def build(self, tree: Tree[Token]) -> Policy:
        version_decl, *sections = _subtrees(tree)
        version_token = _tokens(version_decl, "VERSION_NUMBER")[0]
        if str(version_token) not in SUPPORTED_VERSIONS:
            raise _error(
                f"unsupported policy version {str(version_token)!r}; expected 1.0, 1.1 or 1.2", version_token
            )
        major, minor = str(version_token).split(".")
        self._version = (int(major), int(minor))
        rules: dict[str, tuple[Rule, ...]] = dict.fromkeys(_SECTION_VERBS, ())
        for section in sections:
            name = _SECTION_OF_TREE[str(section.data)]
            if name == "configurationrules" and self._version < (1, 1):
                keyword = cast(Token, section.children[0])
                raise _error("the configurationrules section needs policy version 1.1 or later", keyword)
            rules[name] = tuple(self._rule(rule, name) for rule in _subtrees(section))
        return Policy(
            version=str(version_token),
            configuration_rules=rules["configurationrules"],
            authorization_rules=rules["authorizationrules"],
            issuance_rules=rules["issuancerules"],
            text=self._text,
        )

    def _rule(self, tree: Tree[Token], section: str) -> Rule:
        bound: set[str] = set()
        conditions: list[Condition] = []
        action: Action | None = None
        for child in _subtrees(tree):
            if child.data == "conditions":
                conditions.extend(self._condition(condition, bound) for condition in _subtrees(child))
            else:
                action = self._action(child, bound, section)
        arrow = _tokens(tree, "ARROW")[0]
        if action is None:  # The grammar requires an action; this only keeps the type checker honest.
            raise _error("a rule needs an action", arrow)
        first = conditions[0] if conditions else None
        line, column = (first.line, first.column) if first else (arrow.line or 0, arrow.column or 0)
        return Rule(conditions=tuple(conditions), action=action, line=line, column=column)

    def _condition(self, tree: Tree[Token], bound: set[str]) -> Condition:
        negated = tree.data == "negated_condition"
        first = cast(Token, tree.children[0])
        if negated and self._version < (1, 2):
            raise _error("the '!' condition operator needs policy version 1.2", first)
        names = _tokens(tree, "IDENT")
        prop_conds = next(child for child in _subtrees(tree) if child.data == "prop_conds")
        tests = tuple(self._test(test, bound) for test in _subtrees(prop_conds))
        binding = str(names[0]) if names else None
        if binding is not None:
            if binding in bound:
                raise _error(f"{binding!r} is already bound by an earlier condition of this rule", names[0])
            bound.add(binding)
        return Condition(
            binding=binding, negated=negated, tests=tests, line=first.line or 0, column=first.column or 0
        )

    def _property(self, token: Token) -> ClaimProperty:
        try:
            return _PROPERTIES[str(token).lower()]
        except KeyError:
            raise _error(
                f"unknown claim property {str(token)!r}; expected type, value or issuer", token
            ) from None

    def _test(self, tree: Tree[Token], bound: set[str]) -> PropertyCondition:
        name, op_tree, operand_tree = tree.children
        prop = self._property(cast(Token, name))
        op_token = cast(Token, cast(Tree[Token], op_tree).children[0])
        operator = Operator.EQ if op_token.type == "EQUAL" else Operator(str(op_token))
        operand = self._expr(cast(Tree[Token], operand_tree), bound)
        if operator.is_ordering:
            if prop != "value":
                raise _error(
                    f"{operator.value!r} compares integer values; the claim {prop} is a string", op_token
                )
            if isinstance(operand, Literal) and (isinstance(operand.value, bool | str)):
                raise _error(f"{operator.value!r} compares integers only", op_token)
        return PropertyCondition(property=prop, operator=operator, operand=operand)

    def _expr(self, tree: Tree[Token], bound: set[str]) -> Expression:
        kind = tree.data
        if kind == "string":
            return Literal(self._string(cast(Token, tree.children[0])))
        if kind == "integer":
            return Literal(self._integer(cast(Token, tree.children[0])))
        if kind == "boolean":
            return Literal(str(tree.children[0]).lower() == "true")
        if kind == "claim_ref":
            name, prop = _tokens(tree, "IDENT")
            if str(name) not in bound:
                raise _error(f"{str(name)!r} is not bound by an earlier condition of this rule", name)
            return ClaimRef(str(name), self._property(prop), line=name.line or 0, column=name.column or 0)
        if kind == "call":
            return self._call(tree, bound)
        if kind == "bare_name":
            token = cast(Token, tree.children[0])
            raise _error(f"a bare name ({str(token)!r}) is only allowed as claim=name", token)
        raise InvalidPolicy(f"unexpected expression {kind!r}")  # Unreachable: the grammar has no other kind.

    def _call(self, tree: Tree[Token], bound: set[str]) -> FunctionCall:
        name = _tokens(tree, "IDENT")[0]
        if self._version < (1, 2):
            raise _error("functions need policy version 1.2", name)
        canonical = _FUNCTIONS_BY_LOWER.get(str(name).lower())
        if canonical is None:
            raise _error(f"unknown function {str(name)!r}; expected one of {', '.join(FUNCTIONS)}", name)
        if self._depth >= MAX_FUNCTION_NESTING:
            raise _error(f"function calls nest deeper than {MAX_FUNCTION_NESTING} levels", name)
        self._depth += 1
        try:
            args = tuple(self._expr(arg, bound) for arg in _subtrees(tree))
        finally:
            self._depth -= 1
        if len(args) != FUNCTIONS[canonical]:
            raise _error(f"{canonical} takes {FUNCTIONS[canonical]} argument(s), not {len(args)}", name)
        return FunctionCall(canonical, args, line=name.line or 0, column=name.column or 0)

    def _string(self, token: Token) -> str:
        body = str(token)[1:-1]
        out: list[str] = []
        chars = iter(body)
        for char in chars:
            if char == "\\":
                escaped = next(chars)  # The terminal guarantees that a backslash is followed by a character.
                # Unknown escapes keep their backslash, so that regular expressions and paths survive as written.
                out.append(_ESCAPES.get(escaped, "\\" + escaped))
            else:
                out.append(char)
        return "".join(out)

    def _integer(self, token: Token) -> int:
        text = str(token)
        negative = text.startswith("-")
        digits = text.lstrip("-")
        value = int(digits, 16) if digits[:2].lower() == "0x" else int(digits, 10)
        value = -value if negative else value
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise _error(f"integer {text} does not fit in 64 bits", token)
        return value

    def _action(self, tree: Tree[Token], bound: set[str], section: str) -> Action:
        verb_token = _tokens(tree, "IDENT")[0]
        try:
            verb = ActionVerb(str(verb_token).lower())
        except ValueError:
            raise _error(
                f"unknown action {str(verb_token)!r}; expected permit, deny, add, issue or issueproperty",
                verb_token,
            ) from None
        if verb not in _SECTION_VERBS[section]:
            raise _error(f"{verb.value}() is not allowed in {section}", verb_token)
        args: dict[str, tuple[Token, Tree[Token]]] = {}
        for arg in _subtrees(tree):
            name = cast(Token, arg.children[0])
            key = str(name).lower()
            if key not in ("type", "value", "claim"):
                raise _error(f"unknown argument {str(name)!r}; expected type, value or claim", name)
            if key in args:
                raise _error(f"argument {key!r} is given twice", name)
            args[key] = (name, cast(Tree[Token], arg.children[2]))
        line, column = verb_token.line or 0, verb_token.column or 0
        if verb in (ActionVerb.PERMIT, ActionVerb.DENY):
            if args:
                raise _error(f"{verb.value}() takes no arguments", verb_token)
            return Action(verb, None, None, None, line=line, column=column)
        if "claim" in args:
            name, value = args["claim"]
            if len(args) != 1:
                raise _error(f"{verb.value}(claim=...) takes no other argument", verb_token)
            if value.data != "bare_name":
                raise _error("claim= takes the name of a condition, as in claim=c", name)
            ref = cast(Token, value.children[0])
            if str(ref) not in bound:
                raise _error(f"{str(ref)!r} is not bound by an earlier condition of this rule", ref)
            return Action(verb, str(ref), None, None, line=line, column=column)
        if set(args) != {"type", "value"}:
            raise _error(f"{verb.value}() takes type= and value=, or claim=", verb_token)
        type_expr = self._expr(args["type"][1], bound)
        if isinstance(type_expr, Literal) and not isinstance(type_expr.value, str):
            raise _error("a claim type must be a string", args["type"][0])
        value_expr = self._expr(args["value"][1], bound)
        return Action(verb, None, type_expr, value_expr, line=line, column=column)
