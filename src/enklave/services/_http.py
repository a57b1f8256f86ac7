"""The HTTP side both services share (Starlette): JSON answers and errors, bounded bodies, handlers, lifespan.

Errors are JSON ``{"error": {"code", "message"}}``. Request bodies are read up to a limit (413 beyond it). A
catch-all handler logs an unexpected exception and answers 500: that is a bug, never the answer to bad input.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from enklave.errors import TransportError
from enklave.services._response import ServiceResponse, storage_failure

__all__ = [
    "call_service",
    "error_response",
    "json_response",
    "read_body",
    "serve_in_thread",
    "service_app",
    "version_error",
]

log = logging.getLogger(__name__)


class _Lifecycle(Protocol):
    def start(self) -> None: ...

    def close(self) -> None: ...


def json_response(answer: ServiceResponse) -> JSONResponse:
    """``answer`` as a JSON response with its status."""
    return JSONResponse(answer.body, status_code=answer.status)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """An error answer (``message`` goes to the client: no secrets)."""
    return json_response(ServiceResponse.error(status, code, message))


async def call_service(function: Callable[..., ServiceResponse], *args: Any, **kwargs: Any) -> JSONResponse:
    """Run a blocking service operation in the thread pool; a storage failure becomes a 503."""
    try:
        return json_response(await run_in_threadpool(function, *args, **kwargs))
    except TransportError as exc:
        return json_response(storage_failure(exc))


def version_error(request: Request, versions: Sequence[str]) -> JSONResponse | None:
    """A 400 answer when the ``api-version`` query parameter is not one of ``versions``, else ``None``."""
    if request.query_params.get("api-version") in versions:
        return None
    wanted = versions[0] if len(versions) == 1 else f"one of {', '.join(versions)}"
    return error_response(400, "InvalidApiVersion", f"the api-version query parameter must be {wanted}")


async def read_body(request: Request, limit: int) -> bytes | JSONResponse:
    """The request body, or a 413 answer when it (or its declared length) is larger than ``limit`` bytes."""
    too_large = error_response(413, "RequestTooLarge", f"the request body is larger than {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, "NotFound", "no such resource")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return error_response(405, "MethodNotAllowed", "the method is not allowed on this resource")


async def _crashed(request: Request, exc: Exception) -> Response:
    # Only a bug gets here: bad input is answered with a 4xx by the handlers.
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "InternalError", "internal error")


def service_app(routes: Sequence[BaseRoute], service: _Lifecycle, *, manage_lifecycle: bool) -> Starlette:
    """The app serving ``routes`` with the JSON 404/405/500 handlers; with ``manage_lifecycle`` the app starts
    ``service`` at startup and closes it at shutdown (otherwise the caller does)."""

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
        routes=list(routes),
        exception_handlers={404: _not_found, 405: _not_allowed, Exception: _crashed},
        lifespan=lifespan,
    )


@contextmanager
def serve_in_thread(
    app: Starlette, sock: socket.socket, *, name: str, timeout: float, **options: Any
) -> Iterator[None]:
    """Serve ``app`` with uvicorn (lifespan off; ``options`` go to its Config, e.g. TLS files) on the bound ``sock``
    in a background thread until the block ends.

    Waits up to ``timeout`` seconds for the server to start, and as long for its thread to end on exit. Raises
    :class:`TransportError` ("the ``name``'s HTTP server did not start") when it does not start in time.
    """
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise TransportError(f"the {name}'s HTTP server did not start")
            time.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        thread.join(timeout)
