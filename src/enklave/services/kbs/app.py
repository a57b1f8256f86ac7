"""The key broker service as an ASGI app (Starlette), in the shape of Azure Key Vault's REST API, 7.4.

Routes (every one needs ``?api-version=7.4``; a missing or other version is a 400):

* ``POST /keys/{name}/release``: secure key release, body ``{"target": token, "nonce"?}``, answer
  ``{"value": JWE}``; no admin token, the attestation token is the credential.
* ``POST /keys/{name}/create``, ``GET /keys``, ``GET /keys/{name}``, ``PATCH /keys/{name}``
  (``{"release_policy"}``), ``DELETE /keys/{name}``, ``GET /audit``: admin bearer token.

Errors are JSON ``{"error": {"code", "message"}}``. Request bodies are read up to a limit (413 beyond it). A
catch-all handler logs an unexpected exception and answers 500: that is a bug, never the answer to bad input.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from enklave.errors import BadDataError, TransportError
from enklave.services.attestation.service import ServiceResponse, storage_failure
from enklave.services.kbs.service import API_VERSION, KeyBrokerService

__all__ = ["create_app"]

log = logging.getLogger(__name__)
_MAX_BODY = 512 << 10


class _TooLarge(Exception):
    pass


def _json(answer: ServiceResponse) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return _json(ServiceResponse.error(status, code, message))


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > _MAX_BODY):
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _MAX_BODY:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: KeyBrokerService, *, manage_lifecycle: bool = False) -> Starlette:
    """The ASGI app over a started ``service`` (or one the app starts and closes, with ``manage_lifecycle``)."""

    async def call(function: Callable[..., ServiceResponse], *args: Any, **kwargs: Any) -> JSONResponse:
        try:
            return _json(await run_in_threadpool(function, *args, **kwargs))
        except TransportError as exc:
            return _json(storage_failure(exc))
        except BadDataError as exc:
            # Storage held a record that does not parse: the data is damaged, not the request.
            log.error("damaged state: %s", exc)
            return _error(500, "DamagedState", "the service's stored state is damaged")

    def version_error(request: Request) -> JSONResponse | None:
        if request.query_params.get("api-version") != API_VERSION:
            return _error(400, "InvalidApiVersion", f"the api-version query parameter must be {API_VERSION}")
        return None

    async def read(request: Request) -> bytes | JSONResponse:
        try:
            return await _body(request)
        except _TooLarge:
            return _error(413, "RequestTooLarge", f"the request body is larger than {_MAX_BODY} bytes")

    async def key_action(request: Request) -> Response:
        refused = version_error(request)
        if refused is not None:
            return refused
        name, action = request.path_params["name"], request.path_params["action"]
        body = await read(request)
        if isinstance(body, JSONResponse):
            return body
        if action == "release":
            return await call(service.release, name, body)
        if action == "create":
            return await call(service.create_key, name, body, request.headers.get("authorization"))
        return _error(404, "NotFound", "no such resource")

    async def key(request: Request) -> Response:
        refused = version_error(request)
        if refused is not None:
            return refused
        name, authorization = request.path_params["name"], request.headers.get("authorization")
        if request.method == "GET":
            return await call(service.get_key, name, authorization)
        if request.method == "DELETE":
            return await call(service.delete_key, name, authorization)
        body = await read(request)
        if isinstance(body, JSONResponse):
            return body
        return await call(service.set_release_policy, name, body, authorization)

    async def keys(request: Request) -> Response:
        refused = version_error(request)
        if refused is not None:
            return refused
        return await call(service.list_keys, request.headers.get("authorization"))

    async def audit(request: Request) -> Response:
        refused = version_error(request)
        if refused is not None:
            return refused
        after = request.query_params.get("after", "0")
        if not after.isdigit() or len(after) > 18:
            return _error(400, "BadParameter", "after must be a non-negative integer")
        return await call(service.audit_log, request.headers.get("authorization"), after=int(after))

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, "NotFound", "no such resource")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _error(405, "MethodNotAllowed", "the method is not allowed on this resource")

    async def crashed(request: Request, exc: Exception) -> Response:
        # Only a bug gets here: bad input is answered with a 4xx by the handlers.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "InternalError", "internal error")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_lifecycle:
            await run_in_threadpool(service.start)
        try:
            yield
        finally:
            if manage_lifecycle:
                await run_in_threadpool(service.close)

    return Starlette(
        routes=[
            Route("/keys", keys, methods=["GET"]),
            Route("/keys/{name}", key, methods=["GET", "PATCH", "DELETE"]),
            Route("/keys/{name}/{action}", key_action, methods=["POST"]),
            Route("/audit", audit, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_allowed, Exception: crashed},
        lifespan=lifespan,
    )
