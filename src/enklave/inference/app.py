"""The confidential inference service as an ASGI app (Starlette), and a way to run it in process.

Routes:

=============================================================  ==============================================
``GET /v1/attestation?nonce=B64URL``                           ``{"evidence", "collateral", "token"?}``: the
                                                               key configurations and a quote binding them and
                                                               the nonce (base64url CBOR), the collateral to
                                                               verify it, a token with an attestation service
``GET /.well-known/ohttp-gateway``                             the key configurations, ``application/ohttp-keys``
``POST /v1/gateway``                                           ``message/ohttp-req`` in, ``message/ohttp-res`` out
``PUT /v1/models/{name}/versions/{version}``                   owner: an encrypted model container (201, 202)
``GET /v1/models``                                             owner: the models, loaded or waiting for a key
``DELETE /v1/models/{name}/versions/{version}``                owner: delete a model
``GET /healthz``, ``GET /readyz``, ``GET /metrics``            liveness, readiness, Prometheus metrics
=============================================================  ==============================================

The owner routes need ``Authorization: Bearer <owner credential>``: the host credential derived from the owner
token (:mod:`enklave.inference.credentials`), never the token, which only the enclave gets. Errors are JSON
``{"error": {"code", "message"}}``: 400 for bad input (a nonce that is not base64url, a request that does not
decapsulate, a malformed container), 401 (with ``WWW-Authenticate: Bearer``) for a missing or wrong credential,
403 when no owner is configured, 404, 405, 409, 413 over the size limits (checked before the body is read
whole), 415 for another content type, 503 when the enclave is unavailable. Inference errors travel inside the
encryption.

:func:`serving` runs a service on a loopback port in a background thread (tests, demos, the quick start).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from enklave.channels.ohttp_attested import (
    OHTTP_KEYS_MEDIA_TYPE,
    OHTTP_REQUEST_MEDIA_TYPE,
    OHTTP_RESPONSE_MEDIA_TYPE,
)
from enklave.errors import EcallTimeout, EnclaveCrashedError, TransportError, UsageError
from enklave.inference._metrics import Metrics
from enklave.inference.model_format import MAX_HEADER_SIZE, NONCE_SIZE, TAG_SIZE
from enklave.inference.service import GATEWAY_OVERHEAD, InferenceConfig, InferenceService
from enklave.services._http import error_response, json_response, read_body, serve_in_thread, service_app
from enklave.services._response import ServiceResponse, storage_failure
from enklave.services.storage import Storage, open_storage

__all__ = ["Serving", "build_app", "create_app", "serving"]

# Magic, header length and header, nonce and tag: what a container adds to its model.
_CONTAINER_OVERHEAD: Final = 8 + 4 + MAX_HEADER_SIZE + NONCE_SIZE + TAG_SIZE
_START_TIMEOUT: Final = 120.0

log = logging.getLogger("enklave.inference")

Handler = Callable[[Request], Awaitable[Response]]


def _unavailable() -> JSONResponse:
    return error_response(503, "Unavailable", "the inference enclave is not available")


async def _call(function: Callable[..., ServiceResponse], *args: object) -> Response:
    """A blocking service operation on the thread pool; storage failures and a lost enclave become 503s."""
    try:
        return json_response(await run_in_threadpool(function, *args))
    except TransportError as exc:
        return json_response(storage_failure(exc))
    except (EcallTimeout, EnclaveCrashedError, UsageError):
        # UsageError: the service is not (or no longer) running.
        return _unavailable()


def _challenge(response: Response) -> Response:
    """``response``, with the ``WWW-Authenticate`` challenge a 401 carries (RFC 9110, section 15.5.2)."""
    if response.status_code == 401:
        response.headers["www-authenticate"] = 'Bearer realm="enklave-inference-owner"'
    return response


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def create_app(service: InferenceService, *, manage_lifecycle: bool = False) -> Starlette:
    """The ASGI app over a started ``service`` (or one the app starts and closes, with ``manage_lifecycle``)."""
    config = service.config
    metrics = Metrics(service.enclave_stats)
    gateway_limit = config.max_request_bytes + GATEWAY_OVERHEAD
    upload_limit = config.max_model_bytes + _CONTAINER_OVERHEAD

    async def attestation(request: Request) -> Response:
        return await _call(service.attestation, request.query_params.get("nonce"))

    async def keys(request: Request) -> Response:
        try:
            configs = await run_in_threadpool(service.key_configs)
        except (EcallTimeout, EnclaveCrashedError, UsageError):
            return _unavailable()
        return Response(configs, media_type=OHTTP_KEYS_MEDIA_TYPE)

    async def gateway(request: Request) -> Response:
        if _media_type(request) != OHTTP_REQUEST_MEDIA_TYPE:
            return error_response(
                415, "UnsupportedMediaType", f"the content type must be {OHTTP_REQUEST_MEDIA_TYPE}"
            )
        body = await read_body(request, gateway_limit)
        if isinstance(body, Response):
            return body
        try:
            answer = await service.agateway(body)
        except (EcallTimeout, EnclaveCrashedError, UsageError):
            return _unavailable()
        if isinstance(answer, ServiceResponse):
            return json_response(answer)
        return Response(answer, media_type=OHTTP_RESPONSE_MEDIA_TYPE, headers={"cache-control": "no-store"})

    async def model(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params["version"]
        authorization = request.headers.get("authorization")
        if request.method == "DELETE":
            return _challenge(await _call(service.delete_model, name, version, authorization))
        # The owner check comes before the body is read: nobody else may make the service read a large body.
        refused = service.check_owner(authorization)
        if refused is not None:
            return _challenge(json_response(refused))
        body = await read_body(request, upload_limit)
        if isinstance(body, Response):
            return body
        return await _call(service.upload_model, name, version, body, authorization)

    async def models(request: Request) -> Response:
        return _challenge(await _call(service.list_models, request.headers.get("authorization")))

    async def healthz(request: Request) -> Response:
        if not service.alive():
            return JSONResponse({"status": "enclave down"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not service.ready():
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics_route(request: Request) -> Response:
        text = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    def route(path: str, handler: Handler, methods: list[str]) -> Route:
        return Route(path, metrics.timed(path, handler), methods=methods)

    routes = [
        route("/v1/attestation", attestation, ["GET"]),
        route("/.well-known/ohttp-gateway", keys, ["GET"]),
        route("/v1/gateway", gateway, ["POST"]),
        route("/v1/models", models, ["GET"]),
        route("/v1/models/{name}/versions/{version}", model, ["PUT", "DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
    ]

    return service_app(routes, service, manage_lifecycle=manage_lifecycle)


def build_app(config: InferenceConfig, storage: Storage | None = None) -> Starlette:
    """An app that starts an :class:`InferenceService` for ``config`` at startup and closes it at shutdown (serve
    it with lifespan on). ``storage`` defaults to SQLite in ``config.data_dir`` (closed by the caller when given)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = (
        storage
        if storage is not None
        else open_storage(f"sqlite:///{(config.data_dir / 'state.db').resolve()}")
    )
    return create_app(InferenceService(config, store), manage_lifecycle=True)


@dataclass(frozen=True, slots=True)
class Serving:
    """A service running on loopback: its base ``url``, the started ``service`` and the ``app``."""

    url: str
    service: InferenceService
    app: Starlette


@contextmanager
def serving(
    config: InferenceConfig, *, storage: Storage | None = None, host: str = "127.0.0.1", port: int = 0
) -> Iterator[Serving]:
    """Start an inference service for ``config`` and serve it with uvicorn on ``host``:``port`` (0: a free port)
    in a background thread; yield a :class:`Serving`; stop both on exit. ``storage`` defaults to SQLite in the data
    directory (opened and closed here). Raises what :meth:`InferenceService.start` raises, and
    :class:`~enklave.errors.TransportError` when the server does not start."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    own = storage is None
    store = (
        storage
        if storage is not None
        else open_storage(f"sqlite:///{(config.data_dir / 'state.db').resolve()}")
    )
    service = InferenceService(config, store)
    try:
        service.start()
        app = create_app(service)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((host, port))
            with serve_in_thread(app, sock, name="inference service", timeout=_START_TIMEOUT):
                yield Serving(f"http://{host}:{sock.getsockname()[1]}", service, app)
        finally:
            sock.close()
    finally:
        service.close()
        if own:
            store.close()
