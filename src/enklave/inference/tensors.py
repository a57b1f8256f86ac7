"""Tensor data types of the Open Inference Protocol (KServe v2) and the two ways tensors travel: JSON and binary.

The thirteen v2 data types map to numpy dtypes (:data:`DATATYPES`); ``BYTES`` tensors are numpy object arrays
whose elements are :class:`bytes`. A tensor travels either as a JSON array of its elements in row-major order
(flat, or nested exactly as its shape) or as binary data: little-endian, row-major, no padding, ``BOOL`` as one
byte 0 or 1, and each ``BYTES`` element as a 4-byte little-endian length followed by that many bytes (the binary
tensor data extension).

Decoding is strict and bounded: every size is checked against a :class:`Budget` (built from :class:`Limits`)
before numpy allocates anything, element types must match the data type exactly (no ``1.0`` for ``INT32``, no
``1`` for ``BOOL``), integers must fit and floats must stay finite in the target type. Decoding raises only
:class:`~enklave.errors.BoundaryError`, whose messages name the tensor but never echo its values; encoding raises
:class:`~enklave.errors.UsageError` for arrays that no v2 data type can carry. This module does no I/O and imports
only numpy, so enclave code can use it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from enklave.errors import BoundaryError, UsageError

__all__ = [
    "DATATYPES",
    "MAX_RANK",
    "ORT_DATATYPES",
    "Array",
    "Budget",
    "Limits",
    "datatype_of",
    "element_count",
    "from_binary",
    "from_json_data",
    "parse_shape",
    "to_binary",
    "to_json_data",
]

Array = npt.NDArray[Any]
"""A numpy array of any dtype (the v2 data type follows from its dtype, see :func:`datatype_of`)."""

DATATYPES: Final[Mapping[str, np.dtype[Any]]] = MappingProxyType(
    {
        "BOOL": np.dtype(np.bool_),
        "UINT8": np.dtype(np.uint8),
        "UINT16": np.dtype(np.uint16),
        "UINT32": np.dtype(np.uint32),
        "UINT64": np.dtype(np.uint64),
        "INT8": np.dtype(np.int8),
        "INT16": np.dtype(np.int16),
        "INT32": np.dtype(np.int32),
        "INT64": np.dtype(np.int64),
        "FP16": np.dtype(np.float16),
        "FP32": np.dtype(np.float32),
        "FP64": np.dtype(np.float64),
        "BYTES": np.dtype(object),
    }
)
"""The v2 data type names and the numpy dtype of the arrays that decoding returns (``BYTES``: object of bytes)."""

ORT_DATATYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "tensor(bool)": "BOOL",
        "tensor(uint8)": "UINT8",
        "tensor(uint16)": "UINT16",
        "tensor(uint32)": "UINT32",
        "tensor(uint64)": "UINT64",
        "tensor(int8)": "INT8",
        "tensor(int16)": "INT16",
        "tensor(int32)": "INT32",
        "tensor(int64)": "INT64",
        "tensor(float16)": "FP16",
        "tensor(float)": "FP32",
        "tensor(double)": "FP64",
        "tensor(string)": "BYTES",
    }
)
"""ONNX Runtime's type strings (``NodeArg.type``) for the element types that have a v2 data type."""

MAX_RANK: Final = 32
"""The most dimensions a tensor may have (numpy's historical limit; no ONNX model needs more)."""

_MAX_DIM: Final = (
    1 << 63
) - 1  # v2: each dimension is representable as a signed (and unsigned) 64-bit integer.
_LENGTH = struct.Struct("<I")
_FLOAT_TYPES: Final = frozenset({"FP16", "FP32", "FP64"})
_INT_TYPES: Final = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"})
# Keyed by (kind, itemsize) so that aliases (np.intc, np.longlong) and either byte order find their type.
_DATATYPE_OF_DTYPE: Final = {
    (dtype.kind, dtype.itemsize): name for name, dtype in DATATYPES.items() if name != "BYTES"
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one decoded request or response may hold; every size is checked before memory is allocated for it.

    ``max_tensors`` bounds the input (or output) tensors and the requested outputs, ``max_elements`` and
    ``max_bytes`` the elements and decoded bytes of all tensors together, ``max_json_bytes`` the JSON text (the
    whole body, or the header before the binary tensor data). Construction raises :class:`UsageError` for a
    value that is not a positive integer.
    """

    max_tensors: int = 64
    max_elements: int = 1 << 26
    max_bytes: int = 256 << 20
    max_json_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        for name in ("max_tensors", "max_elements", "max_bytes", "max_json_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise UsageError(f"Limits.{name} must be a positive integer")


class Budget:
    """What is left of :class:`Limits` while one message is decoded (mutable; one per message).

    :meth:`charge` raises :class:`BoundaryError` as soon as a tensor would take the message over a limit, so
    callers charge a tensor's size before they allocate it.
    """

    __slots__ = ("elements", "limits", "nbytes")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.elements = 0
        self.nbytes = 0

    def charge(self, what: str, *, elements: int = 0, nbytes: int = 0) -> None:
        """Count ``elements`` and ``nbytes`` more; raises :class:`BoundaryError` when a limit would be exceeded."""
        if self.elements + elements > self.limits.max_elements:
            raise BoundaryError(
                f"{what}: the tensors hold more than {self.limits.max_elements} elements in all"
            )
        if self.nbytes + nbytes > self.limits.max_bytes:
            raise BoundaryError(f"{what}: the tensors hold more than {self.limits.max_bytes} bytes in all")
        self.elements += elements
        self.nbytes += nbytes


def datatype_of(array: Array) -> str:
    """The v2 data type of ``array``: from its dtype, ``BYTES`` for object, ``S`` and ``U`` arrays.

    Raises :class:`UsageError` for dtypes no v2 data type carries (complex, datetime, structured, ...).
    """
    dtype = array.dtype
    if dtype.kind in "OSU":
        return "BYTES"
    name = _DATATYPE_OF_DTYPE.get((dtype.kind, dtype.itemsize))
    if name is None or dtype.fields is not None or dtype.subdtype is not None:
        raise UsageError(f"numpy dtype {dtype} has no Open Inference Protocol data type")
    return name


def parse_shape(value: object, what: str, *, allow_variable: bool = False) -> tuple[int, ...]:
    """Check a shape from the wire: a JSON array of at most :data:`MAX_RANK` integers in ``[0, 2**63)``.

    With ``allow_variable``, -1 (a variable-size dimension, as model metadata uses) is accepted too. Raises
    :class:`BoundaryError` otherwise (floats, booleans, NaN and negative dimensions included).
    """
    if type(value) is not list:
        raise BoundaryError(f"{what}: the shape must be a JSON array of integers")
    if len(value) > MAX_RANK:
        raise BoundaryError(f"{what}: the shape has more than {MAX_RANK} dimensions")
    lowest = -1 if allow_variable else 0
    for dim in value:
        # type() rather than isinstance(): True is an int to Python but not a dimension.
        if type(dim) is not int:
            raise BoundaryError(f"{what}: every dimension must be an integer")
        if not lowest <= dim <= _MAX_DIM:
            raise BoundaryError(f"{what}: dimension {dim} is out of range")
    return tuple(value)


def element_count(shape: Sequence[int]) -> int:
    """The number of elements of a tensor of this (concrete) shape; 1 for a scalar."""
    count = 1
    for dim in shape:
        count *= dim
    return count


def from_json_data(data: object, datatype: str, shape: tuple[int, ...], what: str, budget: Budget) -> Array:
    """Decode a tensor's JSON ``data`` (flat, or nested exactly as ``shape``) into an array of that shape.

    ``datatype`` must be a key of :data:`DATATYPES` and ``shape`` a checked shape (:func:`parse_shape`). Element
    types must match: JSON booleans for ``BOOL``, integers that fit for the integer types, numbers that stay
    finite for the float types, strings (stored as their UTF-8 bytes) for ``BYTES``. Raises
    :class:`BoundaryError`; the size is charged to ``budget`` before anything is allocated.
    """
    count = element_count(shape)
    dtype = DATATYPES[datatype]
    budget.charge(what, elements=count, nbytes=0 if datatype == "BYTES" else count * dtype.itemsize)
    flat = _flatten(data, shape, count, what)
    kinds = set(map(type, flat))
    if datatype == "BYTES":
        return _json_bytes(flat, kinds, shape, what, budget)
    if datatype == "BOOL":
        if not kinds <= {bool}:
            raise BoundaryError(f"{what}: BOOL data must hold only true and false")
        return np.array(flat, dtype=np.bool_).reshape(shape)
    if datatype in _INT_TYPES:
        if not kinds <= {int}:
            raise BoundaryError(f"{what}: {datatype} data must hold only integers")
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise BoundaryError(f"{what}: a value does not fit in {datatype}")
        return np.array(flat, dtype=dtype).reshape(shape)
    if not kinds <= {int, float}:
        raise BoundaryError(f"{what}: {datatype} data must hold only numbers")
    try:
        wide = np.array(flat, dtype=np.float64)
    except OverflowError as exc:
        raise BoundaryError(f"{what}: a value does not fit in {datatype}") from exc
    # Overflow in the cast gives infinities, which the check below rejects; numpy's warning would only be noise.
    with np.errstate(over="ignore"):
        result = wide.astype(dtype)
    if not np.isfinite(result).all():
        raise BoundaryError(f"{what}: a value is not finite in {datatype}")
    return result.reshape(shape)


def _flatten(data: object, shape: tuple[int, ...], count: int, what: str) -> list[Any]:
    if type(data) is not list:
        raise BoundaryError(f"{what}: data must be a JSON array")
    # Nested data mirrors the shape level by level; anything else must be the flat row-major list.
    if len(shape) >= 2 and data and type(data[0]) is list:
        level: list[Any] = [data]
        for depth, dim in enumerate(shape):
            below: list[Any] = []
            for item in level:
                if type(item) is not list or len(item) != dim:
                    raise BoundaryError(f"{what}: nested data does not match the shape at depth {depth}")
                below.extend(item)
            level = below
        return level
    if len(data) != count:
        raise BoundaryError(f"{what}: {len(data)} values for a shape of {count} elements")
    return data


def _json_bytes(
    flat: list[Any], kinds: set[type], shape: tuple[int, ...], what: str, budget: Budget
) -> Array:
    if not kinds <= {str}:
        raise BoundaryError(f"{what}: BYTES data must hold only strings")
    try:
        encoded = [item.encode("utf-8") for item in flat]
    except UnicodeEncodeError as exc:
        raise BoundaryError(f"{what}: a BYTES string is not valid Unicode") from exc
    budget.charge(what, nbytes=sum(map(len, encoded)))
    return _object_array(encoded, shape)


def from_binary(data: memoryview, datatype: str, shape: tuple[int, ...], what: str, budget: Budget) -> Array:
    """Decode a tensor's binary data (exactly its ``binary_data_size`` bytes) into a new, writable array.

    Fixed-size types must have exactly ``elements x itemsize`` bytes, ``BOOL`` bytes must be 0 or 1, and
    ``BYTES`` data must hold exactly one length-prefixed element per element of the shape. Raises
    :class:`BoundaryError`; the size is charged to ``budget`` before anything is allocated.
    """
    count = element_count(shape)
    if datatype == "BYTES":
        budget.charge(what, elements=count)
        return _binary_bytes(data, count, shape, what, budget)
    dtype = DATATYPES[datatype]
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise BoundaryError(f"{what}: {len(data)} bytes of binary data for {expected} bytes of {datatype}")
    budget.charge(what, elements=count, nbytes=expected)
    if datatype == "BOOL":
        raw = np.frombuffer(data, dtype=np.uint8, count=count)
        if count and int(raw.max()) > 1:
            raise BoundaryError(f"{what}: a BOOL byte is neither 0 nor 1")
        return raw.astype(np.bool_).reshape(shape)
    # The wire is little-endian; astype() both converts to native order and copies out of the body's buffer.
    wire = np.frombuffer(data, dtype=dtype.newbyteorder("<"), count=count)
    return wire.astype(dtype, copy=True).reshape(shape)


def _binary_bytes(data: memoryview, count: int, shape: tuple[int, ...], what: str, budget: Budget) -> Array:
    # Every element takes at least its 4-byte length, so this bounds the loop before it starts.
    if count * _LENGTH.size > len(data):
        raise BoundaryError(f"{what}: binary data is too short for {count} BYTES elements")
    items: list[bytes] = []
    offset = 0
    for _ in range(count):
        if offset + _LENGTH.size > len(data):
            raise BoundaryError(f"{what}: binary BYTES data is truncated")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if length > len(data) - offset:
            raise BoundaryError(f"{what}: a BYTES element runs past the end of its binary data")
        budget.charge(what, nbytes=length)
        items.append(bytes(data[offset : offset + length]))
        offset += length
    if offset != len(data):
        raise BoundaryError(f"{what}: {len(data) - offset} bytes after the last BYTES element")
    return _object_array(items, shape)


def _object_array(items: list[bytes], shape: tuple[int, ...]) -> Array:
    # np.array(list_of_bytes) would make a fixed-width "S" array that drops trailing NUL bytes; fill an object
    # array instead so every element keeps its exact bytes.
    result = np.empty(len(items), dtype=object)
    result[:] = items
    return result.reshape(shape)


def _bytes_elements(array: Array) -> list[bytes]:
    flat = array.ravel().tolist()
    if array.dtype.kind == "S":
        return flat
    items: list[bytes] = []
    for item in flat:
        if isinstance(item, bytes):
            items.append(item)
        elif isinstance(item, str):
            items.append(item.encode("utf-8"))
        elif isinstance(item, bytearray):
            items.append(bytes(item))
        else:
            raise UsageError(f"a BYTES tensor element is a {type(item).__name__}, not bytes or str")
    return items


def to_json_data(array: Array) -> list[Any] | None:
    """The flat row-major JSON data of ``array``, or None when JSON cannot carry its values exactly.

    Float tensors with NaN or infinities (strict JSON has neither) and ``BYTES`` tensors whose elements are not
    all UTF-8 return None: send those as binary data. Raises :class:`UsageError` for an unsupported dtype or a
    ``BYTES`` element that is neither bytes nor str.
    """
    datatype = datatype_of(array)
    if datatype == "BYTES":
        try:
            return [item.decode("utf-8") for item in _bytes_elements(array)]
        except UnicodeDecodeError:
            return None
    if datatype in _FLOAT_TYPES and not np.isfinite(array).all():
        return None
    # tolist() gives Python ints and floats; a float32 or float16 value is exact as a double, so it round-trips.
    result: list[Any] = array.ravel().tolist()
    return result


def to_binary(array: Array) -> bytes:
    """The binary tensor data of ``array``: little-endian, row-major, no padding; length-prefixed ``BYTES``.

    Raises :class:`UsageError` for an unsupported dtype or a ``BYTES`` element that is neither bytes nor str
    or is 4 GiB or longer.
    """
    datatype = datatype_of(array)
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in _bytes_elements(array):
            if len(item) > 0xFFFFFFFF:
                raise UsageError("a BYTES element is 4 GiB or longer")
            parts.append(_LENGTH.pack(len(item)))
            parts.append(item)
        return b"".join(parts)
    wire = DATATYPES[datatype].newbyteorder("<") if datatype != "BOOL" else np.dtype(np.bool_)
    return np.ascontiguousarray(array, dtype=wire).tobytes()
