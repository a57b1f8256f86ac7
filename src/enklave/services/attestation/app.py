"""The attestation service as an ASGI app (Starlette): Microsoft Azure Attestation's REST API, 2022-08-01.

Routes (every one but the metadata needs ``?api-version=2022-08-01``; a missing or other version is a 400):

* ``POST /attest/SgxEnclave``, ``POST /attest/OpenEnclave``: ``{"token": jwt}``.
* ``GET /.well-known/openid-configuration``, ``GET /certs``: issuer metadata and the JWKS.
* ``GET /policies/{type}``, ``PUT /policies/{type}``, ``POST /policies/{type}:reset``.

Errors are JSON ``{"error": {"code", "message"}}``. Request bodies are read up to a limit (413 beyond it).
A catch-all handler logs an unexpected exception and answers 500: that is a bug, never the answer to bad input.
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

from enklave.errors import TransportError
from enklave.services.attestation.request import MAX_REQUEST_SIZE
from enklave.services.attestation.service import (
    API_VERSION,
    AttestationService,
    ServiceResponse,
    storage_failure,
)

__all__ = ["create_app"]

log = logging.getLogger(__name__)


class _TooLarge(Exception):
    pass


def _json(answer: ServiceResponse) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return _json(ServiceResponse.error(status, code, message))


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


# 2020-10-01 is what Microsoft's Python SDK (azure-security-attestation 1.0) speaks; for the operations served
# here its bodies and claims are those of 2022-08-01, which only adds the request nonce.
SUPPORTED_API_VERSIONS = (API_VERSION, "2020-10-01")


def _version_error(request: Request) -> JSONResponse | None:
    version = request.query_params.get("api-version")
    if version not in SUPPORTED_API_VERSIONS:
        return _error(
            400,
            "InvalidApiVersion",
            f"the api-version query parameter must be one of {', '.join(SUPPORTED_API_VERSIONS)}",
        )
    return None


def create_app(service: AttestationService, *, manage_lifecycle: bool = False) -> Starlette:
    """The ASGI app over a started ``service`` (or one the app starts and closes, with ``manage_lifecycle``)."""

    async def call(function: Callable[..., ServiceResponse], *args: Any) -> JSONResponse:
        try:
            return _json(await run_in_threadpool(function, *args))
        except TransportError as exc:
            return _json(storage_failure(exc))

    async def attest(request: Request) -> Response:
        refused = _version_error(request)
        if refused is not None:
            return refused
        try:
            body = await _body(request, MAX_REQUEST_SIZE)
        except _TooLarge:
            return _error(413, "RequestTooLarge", f"the request body is larger than {MAX_REQUEST_SIZE} bytes")
        return await call(service.attest, request.path_params["type"], body)

    async def metadata(request: Request) -> Response:
        return await call(service.openid_metadata)

    async def certs(request: Request) -> Response:
        return await call(service.certs)

    async def policy(request: Request) -> Response:
        refused = _version_error(request)
        if refused is not None:
            return refused
        target: str = request.path_params["type"]
        authorization = request.headers.get("authorization")
        if request.method == "GET":
            if target.endswith(":reset"):
                return _error(405, "MethodNotAllowed", "reset a policy with POST")
            return await call(service.get_policy, target)
        try:
            body = await _body(request, MAX_REQUEST_SIZE)
        except _TooLarge:
            return _error(413, "RequestTooLarge", f"the request body is larger than {MAX_REQUEST_SIZE} bytes")
        if request.method == "POST":
            if not target.endswith(":reset"):
                return _error(405, "MethodNotAllowed", "POST is only for /policies/{type}:reset")
            return await call(service.reset_policy, target.removesuffix(":reset"), authorization)
        if target.endswith(":reset"):
            return _error(405, "MethodNotAllowed", "reset a policy with POST")
        return await call(service.set_policy, target, body, authorization)

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
            Route("/attest/{type}", attest, methods=["POST"]),
            Route("/.well-known/openid-configuration", metadata, methods=["GET"]),
            Route("/certs", certs, methods=["GET"]),
            Route("/policies/{type}", policy, methods=["GET", "PUT", "POST"]),
        ],
        exception_handlers={404: not_found, 405: not_allowed, Exception: crashed},
        lifespan=lifespan,
    )
