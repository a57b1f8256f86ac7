"""The client's messages, without I/O: the inner Open Inference Protocol requests it encapsulates, the outer
host routes it calls, and the mapping of error answers onto enklave's exception tree.

Inner requests (inside OHTTP, answered by the enclave): ``GET /v2/models``, ``GET /v2/models/{name}
[/versions/{v}]``, ``POST /v2/models/{name}[/versions/{v}]/infer`` (with ``authorization: Bearer <api key>``
when the client has one) and ``PUT /v2/models/{name}/versions/{v}/key`` (the 32-byte model key, with
``authorization: Bearer <owner token>``). Outer routes (answered by the untrusted host): ``/v1/attestation``,
``/v1/gateway`` and the owner's ``/v1/models/{name}/versions/{v}``.

Error answers: 401 and 403 raise :class:`~enklave.errors.UsageError` (a refused credential), 400, 413 and 422
:class:`~enklave.errors.BoundaryError` (the service rejected what the client sent), 404 and 409
:class:`~enklave.errors.UsageError` (no such model or version, or it exists already), any other 4xx
:class:`~enklave.errors.BadDataError`, 5xx :class:`~enklave.errors.TransportError` (the service failed).
Messages quote the service's message, made printable and truncated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from enklave._json import strict_loads
from enklave.attestation._transport import printable
from enklave.channels.ohttp_attested import BhttpRequest, BhttpResponse
from enklave.errors import BadDataError, BoundaryError, EnklaveError, TransportError, UsageError
from enklave.inference.model_format import is_valid_name, is_valid_version
from enklave.inference.protocol import (
    HEADER_LENGTH,
    InferInput,
    InferRequest,
    Limits,
    decode_response,
    encode_request,
    parse_header_length,
)

__all__ = [
    "ATTESTATION_PATH",
    "GATEWAY_PATH",
    "KEY_SIZE",
    "MAX_JSON_ANSWER",
    "answer_error",
    "check_model_name",
    "check_version",
    "infer_request",
    "inner_get",
    "key_request",
    "model_path",
    "read_infer",
    "read_inner_json",
    "read_outer_json",
    "upload_path",
]

ATTESTATION_PATH: Final = "/v1/attestation"
GATEWAY_PATH: Final = "/v1/gateway"
KEY_SIZE: Final = 32
"""Bytes of a model key (AES-256)."""
MAX_JSON_ANSWER: Final = 4 << 20
"""Largest JSON answer read from the host or the enclave (model lists, metadata, upload answers)."""

_ERRORS_BY_STATUS: Final[dict[int, type[EnklaveError]]] = {
    400: BoundaryError,
    401: UsageError,
    403: UsageError,
    404: UsageError,
    409: UsageError,
    413: BoundaryError,
    422: BoundaryError,
}


def check_model_name(name: object) -> str:
    """``name`` if it is a model name (1 to 64 of ``A-Za-z0-9_.-``, starting with a letter or digit), else
    :class:`UsageError`; the check keeps names from reshaping the request paths they go into."""
    if not isinstance(name, str) or not is_valid_name(name):
        raise UsageError(
            "a model name is 1 to 64 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit"
        )
    return name


def check_version(version: object) -> str:
    """``version`` (a positive integer, or its decimal text) as text, else :class:`UsageError`."""
    text = str(version) if isinstance(version, int) and not isinstance(version, bool) else version
    if not isinstance(text, str) or not is_valid_version(text):
        raise UsageError("a model version is a positive integer")
    return text


def model_path(name: str, version: str | int | None = None) -> str:
    """``/v2/models/{name}`` or ``/v2/models/{name}/versions/{version}``, checked."""
    path = f"/v2/models/{check_model_name(name)}"
    return path if version is None else f"{path}/versions/{check_version(version)}"


def upload_path(name: str, version: str | int) -> str:
    """The host's owner route for one model version, checked."""
    return f"/v1/models/{check_model_name(name)}/versions/{check_version(version)}"


def _bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    return () if token is None else (("authorization", f"Bearer {token}"),)


def inner_get(path: str, *, api_key: str | None) -> BhttpRequest:
    """An inner ``GET`` of ``path`` (which the caller built with :func:`model_path` or is ``/v2/models``)."""
    return BhttpRequest("GET", path=path, headers=(("accept", "application/json"), *_bearer(api_key)))


def infer_request(
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    version: str | int | None,
    outputs: Sequence[str] | None,
    binary: bool,
    api_key: str | None,
) -> BhttpRequest:
    """The inner ``POST .../infer`` for ``inputs`` (name -> array), JSON or with the binary tensor extension.

    Raises :class:`UsageError` for a bad name, version, input or output list, and what the protocol's encoder
    raises for an array it cannot carry.
    """
    if not isinstance(inputs, Mapping) or not inputs:
        raise UsageError("inputs must be a non-empty mapping of input names to numpy arrays")
    items: list[InferInput] = []
    for name, array in inputs.items():
        if not isinstance(name, str) or not name:
            raise UsageError("input names must be non-empty strings")
        if not isinstance(array, np.ndarray):
            raise UsageError(f"input {name!r} must be a numpy array, not {type(array).__name__}")
        items.append(InferInput(name, array))
    wanted: tuple[str, ...] | None = None
    if outputs is not None:
        if isinstance(outputs, str) or not all(isinstance(item, str) and item for item in outputs):
            raise UsageError("outputs must be a sequence of output names")
        wanted = tuple(outputs)
    # Binary outputs too, when binary inputs: exact values, and no JSON number parsing in either direction.
    request = InferRequest(inputs=tuple(items), outputs=wanted, binary_outputs=binary)
    body, headers = encode_request(request, binary=binary)
    fields = tuple((key.lower(), value) for key, value in headers.items())
    return BhttpRequest(
        "POST", path=f"{model_path(model, version)}/infer", headers=(*fields, *_bearer(api_key)), content=body
    )


def key_request(name: str, version: str | int, key: bytes, owner_token: str) -> BhttpRequest:
    """The inner ``PUT .../key`` that hands the enclave the owner's model key (inside the encapsulation)."""
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise UsageError(f"a model key is {KEY_SIZE} bytes")
    return BhttpRequest(
        "PUT",
        path=f"{model_path(name, version)}/key",
        headers=(("content-type", "application/octet-stream"), *_bearer(owner_token)),
        content=key,
    )


def _message(body: bytes) -> tuple[str, str]:
    """The (code, message) of an error body: ``{"error": "..."}`` (Open Inference Protocol) or
    ``{"error": {"code", "message"}}`` (enklave's services); empty strings when it is neither."""
    try:
        document = strict_loads(body[:MAX_JSON_ANSWER].decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return "", ""
    problem = document.get("error") if isinstance(document, dict) else None
    if isinstance(problem, str):
        return "", problem
    if isinstance(problem, dict):
        return str(problem.get("code", "")), str(problem.get("message", ""))
    return "", ""


def answer_error(status: int, body: bytes, what: str) -> EnklaveError:
    """The error to raise for an error answer with ``status`` to ``what`` (see the module docstring)."""
    code, message = _message(body)
    detail = printable(f"{code}: {message}" if code else message)[:300] or "no details"
    text = f"{what}: HTTP {status}: {detail}"
    if status >= 500:
        return TransportError(text)
    return _ERRORS_BY_STATUS.get(status, BadDataError)(text)


def _json(body: bytes, what: str) -> Any:
    if len(body) > MAX_JSON_ANSWER:
        raise BadDataError(f"{what}: the answer is larger than {MAX_JSON_ANSWER} bytes")
    try:
        return strict_loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadDataError(f"{what}: the answer is not JSON") from exc


def read_outer_json(status: int, body: bytes, what: str) -> dict[str, Any]:
    """A host answer as a JSON object, or the error its status means."""
    if status >= 400:
        raise answer_error(status, body, what)
    document = _json(body, what)
    if not isinstance(document, dict):
        raise BadDataError(f"{what}: the answer is not a JSON object")
    return document


def read_inner_json(response: BhttpResponse, what: str) -> Any:
    """An enclave answer's JSON document (object or list), or the error its status means."""
    if response.status >= 400:
        raise answer_error(response.status, response.content, what)
    return _json(response.content, what)


def read_infer(response: BhttpResponse, limits: Limits, what: str) -> dict[str, np.ndarray]:
    """The output tensors of an inference answer, by name; raises the error its status means, and
    :class:`~enklave.errors.BoundaryError` (the protocol decoder's error) for an answer that does not decode."""
    if response.status >= 400:
        raise answer_error(response.status, response.content, what)
    header_length = parse_header_length(response.header(HEADER_LENGTH))
    decoded = decode_response(response.content, response.header("content-type"), header_length, limits)
    return {output.name: output.array for output in decoded.outputs}
