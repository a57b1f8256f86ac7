"""The attestation service as an ASGI app (Starlette): Microsoft Azure Attestation's REST API, 2022-08-01.

Routes (every one but the metadata needs ``?api-version=2022-08-01``; a missing or other version is a 400):

* ``POST /attest/SgxEnclave``, ``POST /attest/OpenEnclave``: ``{"token": jwt}``.
* ``GET /.well-known/openid-configuration``, ``GET /certs``: issuer metadata and the JWKS.
* ``GET /policies/{type}``, ``PUT /policies/{type}``, ``POST /policies/{type}:reset``.

Errors are JSON ``{"error": {"code", "message"}}``. Request bodies are read up to a limit (413 beyond it).
A catch-all handler logs an unexpected exception and answers 500: that is a bug, never the answer to bad input.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from enklave.services._http import call_service, error_response, read_body, service_app, version_error
from enklave.services.attestation.request import MAX_REQUEST_SIZE
from enklave.services.attestation.service import API_VERSION, AttestationService

__all__ = ["create_app"]

# 2020-10-01 is what Microsoft's Python SDK (azure-security-attestation 1.0) speaks; for the operations served
# here its bodies and claims are those of 2022-08-01, which only adds the request nonce.
SUPPORTED_API_VERSIONS = (API_VERSION, "2020-10-01")


def create_app(service: AttestationService, *, manage_lifecycle: bool = False) -> Starlette:
    """The ASGI app over a started ``service`` (or one the app starts and closes, with ``manage_lifecycle``)."""

    async def attest(request: Request) -> Response:
        refused = version_error(request, SUPPORTED_API_VERSIONS)
        if refused is not None:
            return refused
        body = await read_body(request, MAX_REQUEST_SIZE)
        if isinstance(body, Response):
            return body
        return await call_service(service.attest, request.path_params["type"], body)

    async def metadata(request: Request) -> Response:
        return await call_service(service.openid_metadata)

    async def certs(request: Request) -> Response:
        return await call_service(service.certs)

    async def policy(request: Request) -> Response:
        refused = version_error(request, SUPPORTED_API_VERSIONS)
        if refused is not None:
            return refused
        target: str = request.path_params["type"]
        authorization = request.headers.get("authorization")
        if request.method == "GET":
            if target.endswith(":reset"):
                return error_response(405, "MethodNotAllowed", "reset a policy with POST")
            return await call_service(service.get_policy, target)
        body = await read_body(request, MAX_REQUEST_SIZE)
        if isinstance(body, Response):
            return body
        if request.method == "POST":
            if not target.endswith(":reset"):
                return error_response(405, "MethodNotAllowed", "POST is only for /policies/{type}:reset")
            return await call_service(service.reset_policy, target.removesuffix(":reset"), authorization)
        if target.endswith(":reset"):
            return error_response(405, "MethodNotAllowed", "reset a policy with POST")
        return await call_service(service.set_policy, target, body, authorization)

    routes = [
        Route("/attest/{type}", attest, methods=["POST"]),
        Route("/.well-known/openid-configuration", metadata, methods=["GET"]),
        Route("/certs", certs, methods=["GET"]),
        Route("/policies/{type}", policy, methods=["GET", "PUT", "POST"]),
    ]
    return service_app(routes, service, manage_lifecycle=manage_lifecycle)
