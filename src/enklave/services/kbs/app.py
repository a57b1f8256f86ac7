"""The key broker service as an ASGI app (Starlette), in the shape of Azure Key Vault's REST API, 7.4.

Routes (every one needs ``?api-version=7.4``; a missing or other version is a 400):

* ``POST /keys/{name}/release``: secure key release, body ``{"target": token, "nonce"?}``, answer
  ``{"value": JWE, "quote": base64url}`` (the quote: the KBS enclave's evidence binding the release, see
  :mod:`.release_evidence`); no admin token, the attestation token is the credential.
* ``POST /keys/{name}/create``, ``GET /keys``, ``GET /keys/{name}``, ``PATCH /keys/{name}``
  (``{"release_policy"}``), ``DELETE /keys/{name}``, ``GET /audit``: admin bearer token.

Errors are JSON ``{"error": {"code", "message"}}``. Request bodies are read up to a limit (413 beyond it). A
catch-all handler logs an unexpected exception and answers 500: that is a bug, never the answer to bad input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from enklave.errors import BadDataError
from enklave.services._http import call_service, error_response, read_body, service_app, version_error
from enklave.services._response import ServiceResponse
from enklave.services.kbs.service import API_VERSION, KeyBrokerService

__all__ = ["create_app"]

log = logging.getLogger(__name__)
_MAX_BODY = 512 << 10
_VERSIONS = (API_VERSION,)


async def _call(function: Callable[..., ServiceResponse], *args: Any, **kwargs: Any) -> JSONResponse:
    try:
        return await call_service(function, *args, **kwargs)
    except BadDataError as exc:
        # Storage held a record that does not parse: the data is damaged, not the request.
        log.error("damaged state: %s", exc)
        return error_response(500, "DamagedState", "the service's stored state is damaged")


def create_app(service: KeyBrokerService, *, manage_lifecycle: bool = False) -> Starlette:
    """The ASGI app over a started ``service`` (or one the app starts and closes, with ``manage_lifecycle``)."""

    async def key_action(request: Request) -> Response:
        refused = version_error(request, _VERSIONS)
        if refused is not None:
            return refused
        name, action = request.path_params["name"], request.path_params["action"]
        body = await read_body(request, _MAX_BODY)
        if isinstance(body, Response):
            return body
        if action == "release":
            return await _call(service.release, name, body)
        if action == "create":
            return await _call(service.create_key, name, body, request.headers.get("authorization"))
        return error_response(404, "NotFound", "no such resource")

    async def key(request: Request) -> Response:
        refused = version_error(request, _VERSIONS)
        if refused is not None:
            return refused
        name, authorization = request.path_params["name"], request.headers.get("authorization")
        if request.method == "GET":
            return await _call(service.get_key, name, authorization)
        if request.method == "DELETE":
            return await _call(service.delete_key, name, authorization)
        body = await read_body(request, _MAX_BODY)
        if isinstance(body, Response):
            return body
        return await _call(service.set_release_policy, name, body, authorization)

    async def keys(request: Request) -> Response:
        refused = version_error(request, _VERSIONS)
        if refused is not None:
            return refused
        return await _call(service.list_keys, request.headers.get("authorization"))

    async def audit(request: Request) -> Response:
        refused = version_error(request, _VERSIONS)
        if refused is not None:
            return refused
        after = request.query_params.get("after", "0")
        if not after.isdigit() or len(after) > 18:
            return error_response(400, "BadParameter", "after must be a non-negative integer")
        return await _call(service.audit_log, request.headers.get("authorization"), after=int(after))

    routes = [
        Route("/keys", keys, methods=["GET"]),
        Route("/keys/{name}", key, methods=["GET", "PATCH", "DELETE"]),
        Route("/keys/{name}/{action}", key_action, methods=["POST"]),
        Route("/audit", audit, methods=["GET"]),
    ]
    return service_app(routes, service, manage_lifecycle=manage_lifecycle)
