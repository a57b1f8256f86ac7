"""Decoding steps of :mod:`enklave.inference.protocol` (private): framing, strict JSON, members, tensors.

Everything here raises :class:`~enklave.errors.BoundaryError` only; the step numbers match the protocol
module's docstring.
"""

from __future__ import annotations

import math
from typing import Any, Final

from enklave._json import strict_loads
from enklave.errors import BoundaryError
from enklave.inference._protocol_messages import MAX_NAME, MAX_PARAMETERS
from enklave.inference.tensors import (
    DATATYPES,
    Array,
    Budget,
    Limits,
    from_binary,
    from_json_data,
    parse_shape,
)

__all__ = [
    "BINARY_CONTENT_TYPE",
    "HEADER_LENGTH",
    "JSON_CONTENT_TYPE",
    "Tail",
    "label",
    "members",
    "open_message",
    "read_name",
    "read_parameters",
    "read_string",
    "tensor_list",
    "tensors",
]

JSON_CONTENT_TYPE: Final = "application/json"
BINARY_CONTENT_TYPE: Final = "application/octet-stream"
HEADER_LENGTH: Final = "inference-header-content-length"
"""The header (lowercase, as Binary HTTP carries names) giving the JSON header's length in a binary message."""

_TENSOR_KEYS: Final = frozenset({"name", "shape", "datatype", "parameters", "data"})


class Tail:
    """The binary part of a message, handed out in order; it must be consumed exactly."""

    __slots__ = ("data", "offset", "present")

    def __init__(self, data: memoryview, present: bool) -> None:
        self.data = data
        self.offset = 0
        self.present = present

    def take(self, size: int, what: str) -> memoryview:
        """The next ``size`` bytes, for tensor ``what``; raises :class:`BoundaryError` past the end."""
        if not self.present:
            raise BoundaryError(f"{what}: binary data without an {HEADER_LENGTH} header")
        if size > len(self.data) - self.offset:
            raise BoundaryError(f"{what}: its binary data runs past the end of the body")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def finish(self) -> None:
        """Raise :class:`BoundaryError` if bytes are left that no tensor claimed."""
        if self.offset != len(self.data):
            raise BoundaryError(f"{len(self.data) - self.offset} bytes of binary data belong to no tensor")


def label(kind: str, name: str) -> str:
    """How messages name a tensor: its kind and its (shortened, escaped) name."""
    # repr() escapes control characters, so a hostile name cannot break a one-line message or a log line.
    return f"{kind} {name[:64]!r}"


def open_message(
    body: bytes, content_type: str | None, header_length: int | None, limits: Limits
) -> tuple[dict[str, Any], Tail]:
    """Steps 1 and 2: check the framing, parse the JSON part strictly; the JSON object and the binary part."""
    # Step 1: the framing.
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in (JSON_CONTENT_TYPE, BINARY_CONTENT_TYPE):
            raise BoundaryError(f"unsupported content type {media[:64]!r}")
    view = memoryview(body)
    if header_length is None:
        header, tail = view, Tail(view[len(view) :], present=False)
    else:
        if type(header_length) is not int or not 0 <= header_length <= len(view):
            raise BoundaryError(f"{HEADER_LENGTH} is larger than the body")
        header, tail = view[:header_length], Tail(view[header_length:], present=True)
    # Step 2: strict JSON, bounded before it is parsed.
    if len(header) > limits.max_json_bytes:
        raise BoundaryError(f"the JSON part is larger than {limits.max_json_bytes} bytes")
    try:
        document = strict_loads(str(header, "utf-8"))
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8, bad JSON, duplicated keys, NaN and overlong integers.
        raise BoundaryError(f"the JSON part does not parse: {_reason(exc)}") from exc
    if type(document) is not dict:
        raise BoundaryError("the JSON part must be an object")
    return document, tail


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    return str(exc).splitlines()[0][:200]


def members(document: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    """Step 3: raise :class:`BoundaryError` if ``document`` has a member outside ``allowed``."""
    # Step 3: only the members the protocol defines.
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise BoundaryError(f"{what}: unknown member {unknown[0][:64]!r}")


def read_string(value: object, what: str) -> str:
    """``value`` if it is a JSON string, else :class:`BoundaryError`."""
    if type(value) is not str:
        raise BoundaryError(f"{what} must be a string")
    return value


def read_name(value: object, what: str) -> str:
    """``value`` if it is a name of 1 to :data:`MAX_NAME` characters, else :class:`BoundaryError`."""
    if type(value) is not str or not 0 < len(value) <= MAX_NAME:
        raise BoundaryError(f"{what} must be a name of 1 to {MAX_NAME} characters")
    return value


def read_parameters(value: object, what: str) -> dict[str, Any]:
    """``value`` if it is a v2 parameters object (strings, finite numbers, booleans), else
    :class:`BoundaryError`."""
    if type(value) is not dict:
        raise BoundaryError(f"{what}: parameters must be a JSON object")
    if len(value) > MAX_PARAMETERS:
        raise BoundaryError(f"{what}: more than {MAX_PARAMETERS} parameters")
    for key, item in value.items():
        if type(item) not in (str, int, float, bool) or (type(item) is float and not math.isfinite(item)):
            raise BoundaryError(
                f"{what}: parameter {key[:64]!r} must be a string, a finite number or a boolean"
            )
    return value


def tensor_list(value: object, what: str, limits: Limits) -> list[dict[str, Any]]:
    """``value`` if it is a JSON array of at most ``max_tensors`` objects, else :class:`BoundaryError`."""
    if type(value) is not list:
        raise BoundaryError(f"{what} must be a JSON array")
    if len(value) > limits.max_tensors:
        raise BoundaryError(f"more than {limits.max_tensors} {what}")
    for item in value:
        if type(item) is not dict:
            raise BoundaryError(f"each of the {what} must be a JSON object")
    return value


def tensors(items: list[dict[str, Any]], kind: str, tail: Tail, budget: Budget) -> list[tuple[str, Array]]:
    """Steps 4 and 5: decode each tensor object (``kind`` is "input" or "output") to ``(name, array)``."""
    decoded: list[tuple[str, Array]] = []
    seen: set[str] = set()
    for item in items:
        # Step 4: name, data type and shape.
        name = read_name(item.get("name"), f"an {kind}'s name")
        what = label(kind, name)
        if name in seen:
            raise BoundaryError(f"{what} appears twice")
        seen.add(name)
        members(item, _TENSOR_KEYS, what)
        datatype = item.get("datatype")
        if type(datatype) is not str or datatype not in DATATYPES:
            raise BoundaryError(f"{what}: unknown datatype {str(datatype)[:32]!r}")
        shape = parse_shape(item.get("shape"), what)
        parameters = read_parameters(item.get("parameters", {}), what)
        members(parameters, frozenset({"binary_data_size"}), f"{what} parameters")
        # Step 5: the data, from the JSON or from the binary part.
        size = parameters.get("binary_data_size")
        if size is None:
            if "data" not in item:
                raise BoundaryError(f"{what}: neither data nor binary_data_size")
            array = from_json_data(item["data"], datatype, shape, what, budget)
        else:
            if type(size) is not int or size < 0:
                raise BoundaryError(f"{what}: binary_data_size must be a non-negative integer")
            if "data" in item:
                raise BoundaryError(f"{what}: both data and binary_data_size")
            array = from_binary(tail.take(size, what), datatype, shape, what, budget)
        decoded.append((name, array))
    return decoded
