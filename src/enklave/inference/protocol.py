"""The Open Inference Protocol (KServe v2 / Triton) inference messages: models and a strict, bounded codec.

Requests and responses are JSON (``application/json``) or, with the binary tensor data extension, a JSON header
followed by the binary data of the tensors whose ``parameters`` give a ``binary_data_size``, in the order they
appear (``application/octet-stream``, with the header's length in ``Inference-Header-Content-Length``).
Clients ask for binary outputs per output (``"binary_data": true``) or for all of them (``"binary_data_output":
true`` in the request parameters); :attr:`InferRequest.binary_outputs` holds the result.

Decoding (:func:`decode_request`, :func:`decode_response`) follows these steps, numbered in the code:

1. the content type, when given, is JSON or octet-stream; the header length fits the body;
2. the JSON text is within :attr:`Limits.max_json_bytes`, UTF-8, strict (no duplicated keys, NaN or Infinity);
3. every object has only the members the protocol defines, of the right JSON types;
4. each tensor's name is unique, its data type known, its shape made of integers in range; its size is charged
   against the :class:`Limits` before it is allocated;
5. its data is the JSON ``data`` array or exactly ``binary_data_size`` bytes of the binary part (never both),
   matching shape and data type; the binary part is consumed exactly, with no byte left over.

Decoding raises only :class:`~enklave.errors.BoundaryError`, with messages that name a tensor but never echo its
values. Building models and encoding raise :class:`~enklave.errors.UsageError` for caller mistakes. A tensor that
JSON cannot carry exactly (NaN or infinities, BYTES that are not UTF-8) travels as binary data even when JSON was
asked for. This module does no I/O; enclave code can import it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final

from enklave._json import strict_loads
from enklave.errors import BoundaryError, UsageError
from enklave.inference._protocol_messages import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    ParameterValue,
    check_name,
    check_parameters,
)
from enklave.inference._protocol_wire import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    label,
    members,
    open_message,
    read_name,
    read_parameters,
    read_string,
    tensor_list,
    tensors,
)
from enklave.inference.tensors import DATATYPES, Array, Budget, Limits, datatype_of, to_binary, to_json_data

__all__ = [
    "BINARY_CONTENT_TYPE",
    "HEADER_LENGTH",
    "JSON_CONTENT_TYPE",
    "PLATFORM",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "Limits",
    "ParameterValue",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "error_body",
    "error_message",
    "model_metadata",
    "parse_header_length",
]

PLATFORM: Final = "onnx_onnxv1"
"""The v2 platform name of an ONNX model run by ONNX Runtime."""

_MAX_HEADER_DIGITS = 20
_REQUEST_KEYS: Final = frozenset({"id", "parameters", "inputs", "outputs", "model_name", "model_version"})
_RESPONSE_KEYS: Final = frozenset({"model_name", "model_version", "id", "parameters", "outputs"})
_OUTPUT_KEYS: Final = frozenset({"name", "parameters"})


# -- decoding ------------------------------------------------------------------------------------------------


def decode_request(
    body: bytes, content_type: str | None, header_length: int | None, limits: Limits | None = None
) -> InferRequest:
    """Decode an inference request body (JSON, or JSON header + binary tensor data).

    ``header_length`` is the parsed ``Inference-Header-Content-Length`` (:func:`parse_header_length`), None when
    absent. ``model_name`` and ``model_version`` members are accepted and ignored (the URL names the model).
    Raises :class:`BoundaryError` for anything malformed or over ``limits`` (default :class:`Limits`).
    """
    limits = limits or Limits()
    document, tail = open_message(body, content_type, header_length, limits)
    members(document, _REQUEST_KEYS, "the request")
    request_id = read_string(document["id"], "the request id") if "id" in document else None
    parameters = dict(read_parameters(document.get("parameters", {}), "the request"))
    everything = parameters.pop("binary_data_output", False)
    if type(everything) is not bool:
        raise BoundaryError("the request: binary_data_output must be a boolean")
    if "inputs" not in document:
        raise BoundaryError("the request has no inputs")
    budget = Budget(limits)
    inputs = tensors(tensor_list(document["inputs"], "inputs", limits), "input", tail, budget)
    tail.finish()
    outputs: tuple[str, ...] | None = None
    binary: set[str] | bool = everything
    if "outputs" in document:
        names: list[str] = []
        binary = set()
        for item in tensor_list(document["outputs"], "outputs", limits):
            name = read_name(item.get("name"), "a requested output's name")
            what = label("requested output", name)
            members(item, _OUTPUT_KEYS, what)
            wanted = read_parameters(item.get("parameters", {}), what)
            members(wanted, frozenset({"binary_data"}), f"{what} parameters")
            flag = wanted.get("binary_data", everything)
            if type(flag) is not bool:
                raise BoundaryError(f"{what}: binary_data must be a boolean")
            if name in names:
                raise BoundaryError(f"{what} appears twice")
            names.append(name)
            if flag:
                binary.add(name)
        outputs = tuple(names)
    return InferRequest(
        inputs=tuple(InferInput(name, array) for name, array in inputs),
        outputs=outputs,
        id=request_id,
        parameters=parameters,
        binary_outputs=binary,
    )


def decode_response(
    body: bytes, content_type: str | None, header_length: int | None, limits: Limits | None = None
) -> InferResponse:
    """Decode an inference response body; the same rules as :func:`decode_request`.

    ``model_name`` and ``outputs`` are required, as v2 says. Raises :class:`BoundaryError`.
    """
    limits = limits or Limits()
    document, tail = open_message(body, content_type, header_length, limits)
    members(document, _RESPONSE_KEYS, "the response")
    model_name = read_string(document.get("model_name"), "the response's model_name")
    model_version = None
    if "model_version" in document:
        model_version = read_string(document["model_version"], "the response's model_version")
    response_id = read_string(document["id"], "the response id") if "id" in document else None
    parameters = read_parameters(document.get("parameters", {}), "the response")
    if "outputs" not in document:
        raise BoundaryError("the response has no outputs")
    items = tensor_list(document["outputs"], "outputs", limits)
    outputs = tensors(items, "output", tail, Budget(limits))
    tail.finish()
    return InferResponse(
        model_name=model_name,
        model_version=model_version,
        outputs=tuple(InferOutput(name, array) for name, array in outputs),
        id=response_id,
        parameters=parameters,
    )


def parse_header_length(value: str | None) -> int | None:
    """Parse an ``Inference-Header-Content-Length`` value: None when absent, else a decimal integer.

    Raises :class:`BoundaryError` for anything but 1 to 20 ASCII digits.
    """
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > _MAX_HEADER_DIGITS or not (text.isascii() and text.isdigit()):
        raise BoundaryError(f"{HEADER_LENGTH} must be a decimal integer")
    return int(text)


# -- encoding ------------------------------------------------------------------------------------------------


def _tensor_json(name: str, array: Array, binary: bool, parts: list[bytes]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype_of(array)}
    data = None if binary else to_json_data(array)
    if data is None:
        chunk = to_binary(array)
        entry["parameters"] = {"binary_data_size": len(chunk)}
        parts.append(chunk)
    else:
        entry["data"] = data
    return entry


def _finish(document: dict[str, Any], parts: list[bytes], binary: bool) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(document, separators=(",", ":"), allow_nan=False).encode("ascii")
    if not binary:
        return header, {"content-type": JSON_CONTENT_TYPE}
    headers = {"content-type": BINARY_CONTENT_TYPE, HEADER_LENGTH: str(len(header))}
    return b"".join([header, *parts]), headers


def encode_request(request: InferRequest, binary: bool = True) -> tuple[bytes, dict[str, str]]:
    """Encode a request: the body and its headers (``content-type``, and the header length when binary).

    With ``binary`` every input travels as binary data; without it inputs are JSON unless JSON cannot carry
    them exactly. Raises :class:`UsageError` for tensors that cannot be encoded.
    """
    parts: list[bytes] = []
    document: dict[str, Any] = {}
    if request.id is not None:
        document["id"] = request.id
    parameters: dict[str, ParameterValue] = dict(request.parameters)
    if request.outputs is None and request.binary_outputs is True:
        parameters["binary_data_output"] = True
    if parameters:
        document["parameters"] = parameters
    document["inputs"] = [_tensor_json(item.name, item.array, binary, parts) for item in request.inputs]
    if request.outputs is not None:
        # With outputs named, __post_init__ has turned binary_outputs into a set.
        wanted = frozenset() if isinstance(request.binary_outputs, bool) else request.binary_outputs
        document["outputs"] = [
            {"name": name, "parameters": {"binary_data": True}} if name in wanted else {"name": name}
            for name in request.outputs
        ]
    return _finish(document, parts, binary or bool(parts))


def encode_response(
    response: InferResponse, binary_outputs: AbstractSet[str] | bool = False
) -> tuple[bytes, dict[str, str]]:
    """Encode a response: the body and its headers; ``binary_outputs`` as :attr:`InferRequest.binary_outputs`.

    Outputs that JSON cannot carry exactly travel as binary data whatever ``binary_outputs`` says. Raises
    :class:`UsageError` for tensors that cannot be encoded.
    """
    parts: list[bytes] = []
    document: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version is not None:
        document["model_version"] = response.model_version
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = dict(response.parameters)
    document["outputs"] = [
        _tensor_json(
            item.name,
            item.array,
            binary_outputs if isinstance(binary_outputs, bool) else item.name in binary_outputs,
            parts,
        )
        for item in response.outputs
    ]
    return _finish(document, parts, bool(parts))


# -- metadata and errors -------------------------------------------------------------------------------------


def _metadata_tensors(specs: Sequence[tuple[str, str, Sequence[int]]], what: str) -> list[dict[str, Any]]:
    result = []
    for name, datatype, shape in specs:
        check_name(name, what)
        if datatype not in DATATYPES:
            raise UsageError(f"{what} {name[:64]!r}: unknown datatype {datatype[:32]!r}")
        dims = list(shape)
        if not all(type(dim) is int and dim >= -1 for dim in dims):
            raise UsageError(f"{what} {name[:64]!r}: dimensions must be integers, -1 for variable")
        result.append({"name": name, "datatype": datatype, "shape": dims})
    return result


def model_metadata(
    name: str,
    versions: Sequence[str],
    inputs: Sequence[tuple[str, str, Sequence[int]]],
    outputs: Sequence[tuple[str, str, Sequence[int]]],
    parameters: Mapping[str, ParameterValue] | None = None,
) -> dict[str, Any]:
    """The v2 model metadata object (``$metadata_model_response``), ready for ``json.dumps``.

    ``inputs`` and ``outputs`` are ``(name, datatype, shape)`` with -1 for variable dimensions; ``platform`` is
    :data:`PLATFORM`; ``parameters`` (e.g. ``{"sha256": ...}``) is included when given. Raises
    :class:`UsageError` for an unknown datatype or an invalid dimension.
    """
    document: dict[str, Any] = {
        "name": check_name(name, "a model"),
        "versions": [str(version) for version in versions],
        "platform": PLATFORM,
        "inputs": _metadata_tensors(inputs, "input"),
        "outputs": _metadata_tensors(outputs, "output"),
    }
    if parameters:
        document["parameters"] = dict(check_parameters(parameters, "model metadata"))
    return document


def error_body(message: str) -> bytes:
    """The v2 error object ``{"error": message}`` as UTF-8 JSON bytes."""
    return json.dumps({"error": str(message)}, separators=(",", ":")).encode("ascii")


def error_message(body: bytes) -> str | None:
    """The message of a v2 error object, or None when ``body`` is not one (never raises)."""
    try:
        document = strict_loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if type(document) is dict and type(document.get("error")) is str:
        message: str = document["error"]
        return message
    return None
