"""The typed ecall/ocall interface: what may cross the boundary, and the checks applied to it.

Like an EDL file, the Python signatures of ``@ecall`` and ``@ocall`` functions are the whole contract. This
module turns an annotation into a :class:`TypeSpec` and checks decoded values against it. The checks run on the
receiving side of every frame, before the receiving code sees an argument: inside the enclave for ecall
arguments and ocall results (they come from the untrusted host), in the host for ocall arguments and ecall
results.

Supported types: ``bytes``, ``str``, ``int``, ``float``, ``bool``, ``None``, ``list[T]``, ``dict[str, T]``,
``T | None`` and ``Annotated[T, MaxSize(n)]`` to bound the length of bytes, strings, lists and dicts. Anything
else (``Any``, classes, missing annotations) is refused when the interface is declared, so an interface can
never accept something its author did not spell out.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from enklave.errors import BoundaryError, UsageError

__all__ = ["FunctionSpec", "MaxSize", "TypeSpec", "spec_of_function", "spec_of_type"]

# Integers cross the boundary as CBOR integers; beyond 64 bits they become bignum tags, which enklave refuses so
# a hostile peer cannot make the receiver allocate or compute with huge numbers.
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class MaxSize:
    """Bound on the length of a bytes, str, list or dict value: ``Annotated[bytes, MaxSize(1024)]``."""

    limit: int

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise UsageError(f"MaxSize must be non-negative, got {self.limit}")


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """One boundary type: a ``kind`` (bytes, str, int, float, bool, none, list, dict, optional), an optional
    length limit and, for containers, the element type."""

    kind: str
    limit: int | None = None
    item: TypeSpec | None = None

    def check(self, value: object, where: str) -> object:
        """Return ``value`` (ints widened to float where a float is declared) or raise BoundaryError."""
        kind = self.kind
        # The common cases first, with exact type checks: bool is an int subclass and must not pass as one.
        if kind in ("bytes", "str"):
            if type(value) is not (bytes if kind == "bytes" else str):
                raise _mismatch(where, self, value)
            self._check_len(len(value), where)
            return value
        if kind == "int":
            if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
                raise _mismatch(where, self, value)
            return value
        if kind == "float":
            if type(value) is int and _INT_MIN <= value <= _INT_MAX:
                return float(value)
            if type(value) is not float:
                raise _mismatch(where, self, value)
            return value
        if kind == "bool":
            if type(value) is not bool:
                raise _mismatch(where, self, value)
            return value
        if kind == "none":
            if value is not None:
                raise _mismatch(where, self, value)
            return None
        if kind == "optional":
            return None if value is None else self._item().check(value, where)
        if kind == "list":
            if type(value) is not list:
                raise _mismatch(where, self, value)
            self._check_len(len(value), where)
            item = self._item()
            return [item.check(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if kind == "dict":
            if type(value) is not dict:
                raise _mismatch(where, self, value)
            self._check_len(len(value), where)
            item = self._item()
            checked: dict[str, object] = {}
            for key, v in value.items():
                if type(key) is not str:
                    raise BoundaryError(f"{where}: dictionary keys must be strings")
                checked[key] = item.check(v, f"{where}[{key!r}]")
            return checked
        raise UsageError(f"unknown boundary type kind {kind!r}")  # pragma: no cover - specs are built below

    def describe(self) -> str:
        """A Python-like spelling of the type, e.g. ``list[bytes] (max 16)``."""
        if self.kind in ("list", "dict", "optional"):
            inner = self._item().describe()
            text = {"list": f"list[{inner}]", "dict": f"dict[str, {inner}]", "optional": f"{inner} | None"}
            base = text[self.kind]
        else:
            base = "None" if self.kind == "none" else self.kind
        return base if self.limit is None else f"{base} (max {self.limit})"

    def to_wire(self) -> dict[str, object]:
        """A plain mapping for the interface description the enclave sends the host at start-up."""
        wire: dict[str, object] = {"kind": self.kind}
        if self.limit is not None:
            wire["limit"] = self.limit
        if self.item is not None:
            wire["item"] = self.item.to_wire()
        return wire

    @classmethod
    def from_wire(cls, wire: object, depth: int = 0) -> TypeSpec:
        """Inverse of :meth:`to_wire`; raises BoundaryError on anything malformed."""
        if depth > 32 or not isinstance(wire, Mapping):
            raise BoundaryError("malformed type description in the enclave interface")
        kind, limit, item = wire.get("kind"), wire.get("limit"), wire.get("item")
        if kind not in _KINDS or (limit is not None and (type(limit) is not int or limit < 0)):
            raise BoundaryError("malformed type description in the enclave interface")
        if (kind in ("list", "dict", "optional")) != (item is not None):
            raise BoundaryError("malformed type description in the enclave interface")
        return cls(kind, limit, None if item is None else cls.from_wire(item, depth + 1))

    def _item(self) -> TypeSpec:
        if self.item is None:  # pragma: no cover - containers are always built with an item type
            raise UsageError(f"{self.kind} type without an element type")
        return self.item

    def _check_len(self, length: int, where: str) -> None:
        if self.limit is not None and length > self.limit:
            raise BoundaryError(f"{where}: length {length} exceeds the declared maximum {self.limit}")


_KINDS = frozenset({"bytes", "str", "int", "float", "bool", "none", "list", "dict", "optional"})


def _mismatch(where: str, spec: TypeSpec, value: object) -> BoundaryError:
    # The message names the type only, never the value: arguments may be secret.
    return BoundaryError(f"{where}: expected {spec.describe()}, got {type(value).__name__}")


_SCALARS: dict[object, str] = {bytes: "bytes", str: "str", int: "int", float: "float", bool: "bool",
                               None: "none", type(None): "none"}  # fmt: skip


def spec_of_type(annotation: object, where: str) -> TypeSpec:
    """Build the TypeSpec of a (resolved) annotation; raises UsageError for a type the boundary cannot carry."""
    if annotation in _SCALARS:
        return TypeSpec(_SCALARS[annotation])
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        inner = spec_of_type(args[0], where)
        limits = [a.limit for a in args[1:] if isinstance(a, MaxSize)]
        if not limits:
            return inner
        if inner.kind not in ("bytes", "str", "list", "dict"):
            raise UsageError(f"{where}: MaxSize applies to bytes, str, list and dict, not {inner.describe()}")
        return TypeSpec(inner.kind, min(limits), inner.item)
    if origin is list and len(args) == 1:
        return TypeSpec("list", None, spec_of_type(args[0], where))
    if origin is dict and len(args) == 2 and args[0] is str:
        return TypeSpec("dict", None, spec_of_type(args[1], where))
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return TypeSpec("optional", None, spec_of_type(rest[0], where))
    raise UsageError(
        f"{where}: type {annotation!r} cannot cross the enclave boundary; use bytes, str, int, float, bool, None,"
        " list[T], dict[str, T], T | None or Annotated[T, MaxSize(n)]"
    )


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """The declared signature of one ecall or ocall: positional parameters and a return type."""

    name: str
    params: tuple[tuple[str, TypeSpec], ...]
    returns: TypeSpec

    def check_args(self, args: object) -> list[object]:
        """Check a decoded argument list against the parameters; raises BoundaryError."""
        if type(args) is not list:
            raise BoundaryError(f"{self.name}: arguments must be a list")
        if len(args) != len(self.params):
            raise BoundaryError(f"{self.name}: expected {len(self.params)} arguments, got {len(args)}")
        return [
            spec.check(value, f"{self.name}({pname})")
            for (pname, spec), value in zip(self.params, args, strict=True)
        ]

    def check_result(self, value: object) -> object:
        """Check a decoded result against the return type; raises BoundaryError."""
        return self.returns.check(value, f"{self.name} result")

    def describe(self) -> str:
        """``name(a: bytes, b: int) -> str``."""
        params = ", ".join(f"{n}: {s.describe()}" for n, s in self.params)
        return f"{self.name}({params}) -> {self.returns.describe()}"

    def to_wire(self) -> dict[str, object]:
        """A plain mapping for the interface description."""
        return {"params": [[n, s.to_wire()] for n, s in self.params], "returns": self.returns.to_wire()}

    @classmethod
    def from_wire(cls, name: str, wire: object) -> FunctionSpec:
        """Inverse of :meth:`to_wire`; raises BoundaryError on anything malformed."""
        if not isinstance(wire, Mapping) or type(wire.get("params")) is not list:
            raise BoundaryError(f"malformed description of {name!r} in the enclave interface")
        params = []
        for entry in wire["params"]:
            if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not str:
                raise BoundaryError(f"malformed description of {name!r} in the enclave interface")
            params.append((entry[0], TypeSpec.from_wire(entry[1])))
        return cls(name, tuple(params), TypeSpec.from_wire(wire.get("returns")))


def spec_of_function(function: Callable[..., Any]) -> FunctionSpec:
    """Read the boundary signature of ``function``: every parameter positional and annotated, a return annotation.

    Raises UsageError (at declaration time, so a bad interface never loads) for anything else.
    """
    name = function.__name__
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except (NameError, TypeError) as exc:
        raise UsageError(f"{name}: cannot resolve the type annotations: {exc}") from exc
    params: list[tuple[str, TypeSpec]] = []
    for param in inspect.signature(function).parameters.values():
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            raise UsageError(
                f"{name}: parameter {param.name!r} must be positional (no *args, **kwargs, keyword-only)"
            )
        if param.name not in hints:
            raise UsageError(f"{name}: parameter {param.name!r} has no type annotation")
        params.append((param.name, spec_of_type(hints[param.name], f"{name}({param.name})")))
    if "return" not in hints:
        raise UsageError(f"{name}: the return type must be annotated (use -> None when there is none)")
    return FunctionSpec(name, tuple(params), spec_of_type(hints["return"], f"{name} result"))
