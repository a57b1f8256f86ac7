"""The inference message models of :mod:`enklave.inference.protocol` (private; import them from there).

Every model validates when it is built and raises :class:`~enklave.errors.UsageError` for a caller's mistake.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from enklave.errors import UsageError
from enklave.inference.tensors import Array, datatype_of

__all__ = [
    "MAX_NAME",
    "MAX_PARAMETERS",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "ParameterValue",
    "check_name",
    "check_parameters",
]

ParameterValue = str | int | float | bool
"""A v2 parameter value: a string, a number or a boolean."""

MAX_NAME = 1024
"""The longest tensor or model name, in characters."""
MAX_PARAMETERS = 64
"""The most parameters one object may carry."""


def check_name(name: object, what: str) -> str:
    """Return ``name`` if it is a string of 1 to :data:`MAX_NAME` characters; raises :class:`UsageError`."""
    if type(name) is not str or not 0 < len(name) <= MAX_NAME:
        raise UsageError(f"{what} name must be a string of 1 to {MAX_NAME} characters")
    return name


def _check_tensor(name: object, array: object) -> None:
    check_name(name, "a tensor")
    if not isinstance(array, np.ndarray):
        raise UsageError("a tensor's array must be a numpy array")
    datatype_of(array)


def check_parameters(parameters: Mapping[str, ParameterValue], what: str) -> Mapping[str, ParameterValue]:
    """A read-only copy of valid v2 parameters; raises :class:`UsageError` for invalid ones."""
    if len(parameters) > MAX_PARAMETERS:
        raise UsageError(f"{what}: more than {MAX_PARAMETERS} parameters")
    for key, value in parameters.items():
        if type(key) is not str or type(value) not in (str, int, float, bool):
            raise UsageError(f"{what}: parameters map strings to strings, numbers or booleans")
        if type(value) is float and not math.isfinite(value):
            raise UsageError(f"{what}: parameter {key[:64]!r} is not a finite number")
    return MappingProxyType(dict(parameters))


@dataclass(frozen=True, slots=True, eq=False)
class _Tensor:
    """A named tensor. Its v2 data type follows from the array's dtype (:func:`datatype_of`).

    Construction raises :class:`UsageError` for an empty or overlong name, or an array no v2 data type carries.
    Equality is identity (arrays have no single truth value).
    """

    name: str
    array: Array

    def __post_init__(self) -> None:
        _check_tensor(self.name, self.array)

    @property
    def datatype(self) -> str:
        """The v2 data type name, e.g. ``"FP32"``."""
        return datatype_of(self.array)

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape."""
        return tuple(self.array.shape)


@dataclass(frozen=True, slots=True, eq=False)
class InferInput(_Tensor):
    """A named input tensor of a request (see :class:`_Tensor` for the rules)."""


@dataclass(frozen=True, slots=True, eq=False)
class InferOutput(_Tensor):
    """A named output tensor of a response (see :class:`_Tensor` for the rules)."""


@dataclass(frozen=True, slots=True, eq=False)
class InferRequest:
    """An inference request: input tensors, the outputs wanted (None: all), an optional id and parameters.

    ``binary_outputs`` says which outputs the response should carry as binary data: a bool for all or none, or
    the set of names (only with ``outputs`` given; a bool is then turned into that set, so decoding an encoded
    request gives back an equal one). ``parameters`` never holds ``binary_data_output``, which
    ``binary_outputs`` expresses. Construction raises :class:`UsageError` for duplicated names, a binary
    output that is not requested, or invalid parameters.
    """

    inputs: tuple[InferInput, ...]
    outputs: tuple[str, ...] | None = None
    id: str | None = None
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)
    binary_outputs: AbstractSet[str] | bool = False

    def __post_init__(self) -> None:
        inputs = tuple(self.inputs)
        if not all(isinstance(item, InferInput) for item in inputs):
            raise UsageError("inputs must be InferInput objects")
        if len({item.name for item in inputs}) != len(inputs):
            raise UsageError("two inputs have the same name")
        object.__setattr__(self, "inputs", inputs)
        if self.id is not None and type(self.id) is not str:
            raise UsageError("a request id must be a string")
        parameters = check_parameters(self.parameters, "request")
        if "binary_data_output" in parameters:
            raise UsageError("say binary_data_output with binary_outputs, not in parameters")
        object.__setattr__(self, "parameters", parameters)
        binary: AbstractSet[str] | bool = self.binary_outputs
        if isinstance(binary, bool | np.bool_):
            binary = bool(binary)
        if self.outputs is None:
            if not isinstance(binary, bool):
                if binary:
                    raise UsageError("binary_outputs may name outputs only when outputs are requested")
                binary = False
            object.__setattr__(self, "binary_outputs", binary)
            return
        outputs = tuple(check_name(name, "an output") for name in self.outputs)
        if len(set(outputs)) != len(outputs):
            raise UsageError("an output is requested twice")
        object.__setattr__(self, "outputs", outputs)
        if isinstance(binary, bool):
            binary = frozenset(outputs) if binary else frozenset()
        elif not set(binary) <= set(outputs):
            raise UsageError("binary_outputs names an output that is not requested")
        object.__setattr__(self, "binary_outputs", frozenset(binary))

    def arrays(self) -> dict[str, Array]:
        """The inputs as ``{name: array}``."""
        return {item.name: item.array for item in self.inputs}


@dataclass(frozen=True, slots=True, eq=False)
class InferResponse:
    """An inference response: the model name and version, the output tensors, the request's id, parameters.

    Construction raises :class:`UsageError` for duplicated output names or invalid parameters.
    """

    model_name: str
    model_version: str | None
    outputs: tuple[InferOutput, ...]
    id: str | None = None
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if type(self.model_name) is not str:
            raise UsageError("model_name must be a string")
        if self.model_version is not None and type(self.model_version) is not str:
            raise UsageError("model_version must be a string")
        if self.id is not None and type(self.id) is not str:
            raise UsageError("a response id must be a string")
        outputs = tuple(self.outputs)
        if not all(isinstance(item, InferOutput) for item in outputs):
            raise UsageError("outputs must be InferOutput objects")
        if len({item.name for item in outputs}) != len(outputs):
            raise UsageError("two outputs have the same name")
        object.__setattr__(self, "outputs", outputs)
        object.__setattr__(self, "parameters", check_parameters(self.parameters, "response"))

    def arrays(self) -> dict[str, Array]:
        """The outputs as ``{name: array}``."""
        return {item.name: item.array for item in self.outputs}
