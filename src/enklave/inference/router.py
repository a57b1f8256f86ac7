"""The inference API inside the encryption: Open Inference Protocol (KServe v2) requests, answered in the enclave.

:class:`Router` is the handler of the enclave's Oblivious HTTP gateway: every request reaches it as a Binary HTTP
request that only the enclave could decrypt, and its answer goes back encrypted to the client that sent it, so
neither the tensors nor the status of a request (a 4xx included) is visible to the host. Routes:

=========================================================  ===================================================
``GET /v2/health/live``, ``GET /v2/health/ready``          200 ``{"live": true}`` / ``{"ready": true}``
``GET /v2``                                                server metadata (name, version, extensions)
``GET /v2/models``                                         ``{"models": [{"name", "version", "sha256", ...}]}``
``GET /v2/models/{name}[/versions/{v}]``                   v2 model metadata, ``parameters.sha256``
``GET /v2/models/{name}[/versions/{v}]/ready``             200 ``{"name", "ready": true}``, or 404
``POST /v2/models/{name}[/versions/{v}]/infer``            v2 inference, JSON or binary tensor data
``PUT /v2/models/{name}/versions/{v}/key``                 the owner's 32-byte model key (owner token)
=========================================================  ===================================================

A model without ``/versions/{v}`` means its latest version. When an API key is configured, every ``/v2/models``
route needs ``authorization: Bearer <api key>`` (the owner token is accepted too); the key route always needs the
owner token itself. The token reaches the enclave only inside the encryption: the host knows only the credential
derived from it for its own routes (:mod:`enklave.inference.credentials`), which is refused here like any other
wrong token. Tokens are compared by SHA-256 digest in constant time. Errors are v2 error objects ``{"error":
message}``: 400 for malformed input, 401/403 for credentials, 404 for an unknown model or route, 405, 409 for a
key sent for a model that is loaded already, 413 over the size limits, 500 (without details) for a bug. Only
:class:`~enklave.errors.BoundaryError` messages, which never quote tensor values, reach the client.

This module imports nothing from the host side: it runs in the enclave.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from enklave import _b64url
from enklave._json import strict_loads
from enklave.channels.ohttp_attested import BhttpRequest, BhttpResponse
from enklave.errors import BoundaryError, UsageError, VerificationError
from enklave.inference.model_format import KEY_SIZE, NAME_PATTERN, VERSION_PATTERN
from enklave.inference.protocol import (
    HEADER_LENGTH,
    InferOutput,
    InferResponse,
    decode_request,
    encode_response,
    error_body,
    model_metadata,
    parse_header_length,
)
from enklave.inference.tensors import Limits

__all__ = ["SERVER_NAME", "KeyReceiver", "Router", "RouterSettings", "token_digest"]

SERVER_NAME: Final = "enklave-inference"
_SERVER_VERSION: Final = "1"
_JSON: Final = (("content-type", "application/json"),)
_MODEL = re.compile(
    rf"/v2/models/(?P<name>{NAME_PATTERN})(?:/versions/(?P<version>{VERSION_PATTERN}))?"
    r"(?P<action>/infer|/ready|/key)?"
)
_HEALTH: Final = {"/v2/health/live": "live", "/v2/health/ready": "ready"}


def token_digest(token: str) -> bytes:
    """SHA-256 of a bearer token's UTF-8 bytes: what the enclave keeps instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).digest()


class KeyReceiver(Protocol):
    """Where the owner's model keys go (the enclave's vault): ``set_owner_key`` keeps the key and loads the model
    if it waits; it returns the loaded model's info (or None) and raises :class:`VerificationError` when the key
    does not open the waiting model, :class:`BoundaryError` when the model takes its key from elsewhere, and
    :class:`UsageError` when the model is loaded with another key."""

    def set_owner_key(self, name: str, version: str, key: bytes) -> Any: ...


class RepositoryView(Protocol):
    """What the router reads of the model repository (``enklave.inference.repository.ModelRepository``)."""

    def find(self, name: str, version: str | None = None) -> tuple[Any, Any] | None: ...

    def list(self) -> builtins.list[Any]: ...

    def versions(self, name: str) -> builtins.list[str]: ...


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """The router's configuration: SHA-256 digests of the owner token (None: key uploads disabled) and of the
    API key (None: inference open), the tensor :class:`~enklave.inference.tensors.Limits` of one request, and the
    largest request body in bytes."""

    owner_token_sha256: bytes | None = None
    api_key_sha256: bytes | None = None
    limits: Limits = field(default_factory=Limits)
    max_request_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        for digest in (self.owner_token_sha256, self.api_key_sha256):
            if digest is not None and (not isinstance(digest, bytes) or len(digest) != 32):
                raise UsageError("token digests are 32-byte SHA-256 values")
        if type(self.max_request_bytes) is not int or self.max_request_bytes <= 0:
            raise UsageError("max_request_bytes must be a positive integer")


class _Answer(Exception):
    """An early answer: raised by checks, turned into a v2 error response."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(status: int, document: Mapping[str, Any]) -> BhttpResponse:
    body = json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return BhttpResponse(status, _JSON, body)


def _error(status: int, message: str) -> BhttpResponse:
    return BhttpResponse(status, _JSON, error_body(message))


def _spec(value: Any) -> tuple[str, str, list[int]]:
    # A runner's TensorSpec, or any (name, datatype, shape) triple.
    name, datatype, shape = value
    return str(name), str(datatype), [int(dim) for dim in shape]


def _summary(info: Any) -> dict[str, Any]:
    return {
        "name": info.name,
        "version": info.version,
        "sha256": info.sha256,
        "size": info.size,
        "ready": True,
    }


class Router:
    """The Binary HTTP handler of the inference enclave (see the module docstring); thread-safe.

    ``repository`` serves the loaded models, ``keys`` receives the owner's model keys (None: the key route
    answers 404), ``ready`` says whether the service is ready (the readiness route). Calling the router never
    raises: every failure becomes an error response, a bug a 500 without details.
    """

    def __init__(
        self,
        repository: RepositoryView,
        settings: RouterSettings,
        *,
        keys: KeyReceiver | None = None,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self._repository = repository
        self._settings = settings
        self._keys = keys
        self._ready = ready
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def stats(self) -> dict[str, int]:
        """Counts of answers by class (``"2xx"``, ``"4xx"``, ``"5xx"``) and inferences run: nothing about content."""
        with self._lock:
            return dict(self._counts)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1

    def __call__(self, request: BhttpRequest) -> BhttpResponse:
        """Answer one request."""
        try:
            response = self._route(request)
        except _Answer as answer:
            response = _error(answer.status, answer.message)
        except BoundaryError as exc:
            response = _error(400, str(exc))
        except Exception:
            # A bug: say nothing of it to the client (the message could quote a tensor or the model).
            response = _error(500, "internal error")
        self._count(f"{response.status // 100}xx")
        return response

    # -- routing ---------------------------------------------------------------------------------------------

    def _route(self, request: BhttpRequest) -> BhttpResponse:
        path = request.path.split("?", 1)[0]
        method = request.method
        if path in _HEALTH:
            self._method(method, "GET")
            if path == "/v2/health/ready" and not self._ready():
                return _json(503, {"ready": False})
            return _json(200, {_HEALTH[path]: True})
        if path == "/v2":
            self._method(method, "GET")
            return _json(
                200,
                {"name": SERVER_NAME, "version": _SERVER_VERSION, "extensions": ["binary_tensor_data"]},
            )
        if path == "/v2/models":
            self._method(method, "GET")
            self._authorize(request, owner_only=False)
            models = [_summary(info) for info in self._repository.list()]
            return _json(200, {"models": models})
        match = _MODEL.fullmatch(path)
        if match is None:
            raise _Answer(404, "no such resource")
        name, version, action = match["name"], match["version"], match["action"]
        if action == "/key":
            self._method(method, "PUT")
            if version is None:
                raise _Answer(404, "a model key is set for one version: /v2/models/{name}/versions/{v}/key")
            return self._set_key(request, name, version)
        self._authorize(request, owner_only=False)
        if action == "/infer":
            self._method(method, "POST")
            return self._infer(request, name, version)
        self._method(method, "GET")
        info, runner = self._model(name, version)
        if action == "/ready":
            return _json(200, {"name": info.name, "version": info.version, "ready": True})
        versions = sorted((entry.version for entry in self._repository.list() if entry.name == name), key=int)
        document = model_metadata(
            info.name,
            versions,
            [_spec(spec) for spec in runner.inputs],
            [_spec(spec) for spec in runner.outputs],
            {"sha256": info.sha256, "version": info.version},
        )
        return _json(200, document)

    @staticmethod
    def _method(method: str, allowed: str) -> None:
        if method != allowed:
            raise _Answer(405, f"use {allowed} on this resource")

    def _authorize(self, request: BhttpRequest, *, owner_only: bool) -> None:
        settings = self._settings
        wanted = [settings.owner_token_sha256]
        if not owner_only:
            if settings.api_key_sha256 is None:
                return
            wanted.append(settings.api_key_sha256)
        elif settings.owner_token_sha256 is None:
            raise _Answer(403, "model keys cannot be set: no owner token is configured")
        presented = _bearer(request.header("authorization"))
        if presented is None:
            raise _Answer(401, "this resource needs an authorization: Bearer <token> header")
        digest = token_digest(presented)
        # Every configured digest is compared, so the time taken does not say which one matched.
        matched = False
        for expected in wanted:
            if expected is not None and hmac.compare_digest(digest, expected):
                matched = True
        if not matched:
            raise _Answer(403, "the bearer token is not valid for this resource")

    def _model(self, name: str, version: str | None) -> tuple[Any, Any]:
        found = self._repository.find(name, version)
        if found is None:
            wanted = name if version is None else f"{name} version {version}"
            raise _Answer(404, f"no model {wanted} is loaded")
        return found

    # -- inference and keys ----------------------------------------------------------------------------------

    def _infer(self, request: BhttpRequest, name: str, version: str | None) -> BhttpResponse:
        settings = self._settings
        if len(request.content) > settings.max_request_bytes:
            raise _Answer(413, f"the request body is larger than {settings.max_request_bytes} bytes")
        header_length = parse_header_length(request.header(HEADER_LENGTH))
        decoded = decode_request(
            request.content, request.header("content-type"), header_length, settings.limits
        )
        info, runner = self._model(name, version)
        results = runner.run(decoded.arrays(), None if decoded.outputs is None else list(decoded.outputs))
        self._count("inferences")
        response = InferResponse(
            model_name=info.name,
            model_version=info.version,
            outputs=tuple(InferOutput(output, array) for output, array in results.items()),
            id=decoded.id,
        )
        body, headers = encode_response(response, decoded.binary_outputs)
        return BhttpResponse(200, tuple(headers.items()), body)

    def _set_key(self, request: BhttpRequest, name: str, version: str) -> BhttpResponse:
        if self._keys is None:
            raise _Answer(404, "model keys are not accepted here")
        self._authorize(request, owner_only=True)
        key = _key_from_body(request)
        try:
            info = self._keys.set_owner_key(name, version, key)
        except VerificationError as exc:
            raise _Answer(400, "the key does not open the model waiting for it") from exc
        except UsageError as exc:
            raise _Answer(409, str(exc)) from exc
        if info is None:
            return _json(
                202, {"name": name, "version": version, "status": "key stored, waiting for the model"}
            )
        return _json(200, {**_summary(info), "status": "loaded"})


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


def _key_from_body(request: BhttpRequest) -> bytes:
    """The key: 32 raw bytes (``application/octet-stream``) or JSON ``{"key": base64url}``."""
    body = request.content
    media = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
    if media == "application/json":
        try:
            document = strict_loads(bytes(body).decode("utf-8"))
            key = _b64url.decode(document["key"]) if isinstance(document, dict) else b""
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            raise _Answer(400, 'the key must be JSON {"key": <unpadded base64url of 32 bytes>}') from exc
    else:
        key = bytes(body)
    if len(key) != KEY_SIZE:
        raise _Answer(400, f"a model key is {KEY_SIZE} bytes")
    return key
