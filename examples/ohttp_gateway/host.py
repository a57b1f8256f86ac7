"""The untrusted half of the Oblivious HTTP gateway: an HTTP server that only relays encapsulated bytes.

Run it with ``enklave run examples/ohttp_gateway`` (from the repository root) to serve on 127.0.0.1:8080, or
with ``enklave run examples/ohttp_gateway -- --demo`` to start a gateway and a relay on loopback ports, send
requests through the relay with ``client.py``, print what happened and exit.

Routes of the gateway (:func:`create_app`):

* ``GET /.well-known/ohttp-gateway``: the key configurations, ``application/ohttp-keys`` (RFC 9540).
* ``GET /.well-known/ohttp-gateway/evidence?nonce=B64URL``: the key configurations and a quote that binds them
  and the nonce (unpadded base64url, 1 to 64 bytes; without it, evidence made at start-up without a nonce),
  ``application/vnd.enklave.ohttp-key-evidence+cbor``.
* ``POST /gateway``: ``message/ohttp-req`` in, ``message/ohttp-res`` out (RFC 9458 §5).

Errors are JSON ``{"error": {"code", "message"}}``: 400 for a bad nonce or a request that does not decapsulate,
413 for a body over 1 MiB (checked before any ecall), 415 for another content type, 503 when the enclave is
gone. The host never holds a plaintext request or response, nor a private key: it cannot, they exist only in the
enclave process.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from enklave import host
from enklave.channels.ohttp_attested import (
    EVIDENCE_MEDIA_TYPE,
    MAX_NONCE_SIZE,
    OHTTP_KEYS_MEDIA_TYPE,
    OHTTP_REQUEST_MEDIA_TYPE,
    OHTTP_RESPONSE_MEDIA_TYPE,
    KeyConfigEvidence,
)
from enklave.errors import EcallError, EcallTimeout, EnclaveCrashedError, EnklaveError
from enklave.platform.mode import resolve_mode
from enklave.runtime.bundle import load_bundle

APP = Path(__file__).resolve().parent
BUNDLE = APP / "build" / "ohttp-gateway.enclave"
# The same limit as MAX_REQUEST_SIZE in enclave.py: refuse larger bodies before they cost an ecall.
MAX_REQUEST_SIZE = 1 << 20
EVIDENCE_PATH = "/.well-known/ohttp-gateway/evidence"
KEYS_PATH = "/.well-known/ohttp-gateway"
GATEWAY_PATH = "/gateway"


def error(status: int, code: str, message: str) -> JSONResponse:
    """A JSON error answer; ``message`` goes to the client."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes | JSONResponse:
    """The body, or a 413 answer as soon as it (or its declared length) is over ``limit`` bytes."""
    too_large = error(413, "RequestTooLarge", f"the request body is larger than {limit} bytes")
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


def b64url_decode(text: str) -> bytes:
    """Unpadded base64url (RFC 4648 §5); raises ValueError for anything else."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _not_found(request: Request, exc: Exception) -> Response:
    return error(404, "NotFound", "no such resource")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return error(405, "MethodNotAllowed", "the method is not allowed on this resource")


def create_app(enclave: host.Enclave) -> Starlette:
    """The gateway's HTTP side over a loaded gateway enclave (see the module docstring for the routes)."""
    # Evidence without a nonce never changes while the enclave (and so its key) lives: make it once.
    published = enclave.ecall.key_config_evidence(b"")
    key_configs = KeyConfigEvidence.from_bytes(published).key_configs

    async def keys(request: Request) -> Response:
        return Response(key_configs, media_type=OHTTP_KEYS_MEDIA_TYPE)

    async def evidence(request: Request) -> Response:
        text = request.query_params.get("nonce")
        if text is None:
            return Response(published, media_type=EVIDENCE_MEDIA_TYPE)
        try:
            nonce = b64url_decode(text)
        except (ValueError, binascii.Error):
            nonce = b""
        if not 0 < len(nonce) <= MAX_NONCE_SIZE:
            return error(400, "BadNonce", f"nonce must be 1 to {MAX_NONCE_SIZE} bytes in unpadded base64url")
        # Each nonce costs a quote: a public deployment rate-limits this route.
        fresh = await enclave.aecall.key_config_evidence(nonce)
        return Response(fresh, media_type=EVIDENCE_MEDIA_TYPE, headers={"cache-control": "no-store"})

    async def gateway(request: Request) -> Response:
        if _media_type(request) != OHTTP_REQUEST_MEDIA_TYPE:
            return error(415, "UnsupportedMediaType", f"the content type must be {OHTTP_REQUEST_MEDIA_TYPE}")
        body = await read_body(request, MAX_REQUEST_SIZE)
        if isinstance(body, Response):
            return body
        try:
            answer = await enclave.aecall.handle(body)
        except EcallError as exc:
            if exc.type_name == "PublicError":
                return error(400, "BadRequest", "the encapsulated request does not decapsulate")
            # Anything else is a bug in the enclave code: say so without details.
            return error(500, "InternalError", "internal error")
        except (EcallTimeout, EnclaveCrashedError):
            return error(503, "Unavailable", "the gateway enclave is not available")
        return Response(answer, media_type=OHTTP_RESPONSE_MEDIA_TYPE, headers={"cache-control": "no-store"})

    routes = [
        Route(KEYS_PATH, keys, methods=["GET"]),
        Route(EVIDENCE_PATH, evidence, methods=["GET"]),
        Route(GATEWAY_PATH, gateway, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed})


def create_relay(gateway_url: str) -> Starlette:
    """An Oblivious relay in front of ``gateway_url``, on the same paths: it forwards bytes and content types,
    nothing that identifies the client (RFC 9458 §6.3), and sees nothing but encapsulated messages."""
    upstream = httpx.AsyncClient(base_url=gateway_url, timeout=30.0)

    async def forward(request: Request) -> Response:
        body = await read_body(request, MAX_REQUEST_SIZE)
        if isinstance(body, Response):
            return body
        headers = (
            {"content-type": request.headers["content-type"]} if "content-type" in request.headers else {}
        )
        answer = await upstream.request(
            request.method, request.url.path, params=request.query_params, content=body, headers=headers
        )
        kept = {"content-type": answer.headers.get("content-type", "application/octet-stream")}
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    routes = [
        Route(KEYS_PATH, forward, methods=["GET"]),
        Route(EVIDENCE_PATH, forward, methods=["GET"]),
        Route(GATEWAY_PATH, forward, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed})


@contextmanager
def serving(app: Any, name: str) -> Iterator[str]:
    """Serve ``app`` on an ephemeral port of 127.0.0.1 in a thread; yield its URL; stop it on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the {name} did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def demo(enclave: host.Enclave, mode: str) -> int:
    """Gateway and relay on loopback; the client attests the gateway through the relay, then sends requests."""
    from client import GatewayClient, verifier_for  # noqa: PLC0415 - client.py sits next to this file.

    from enklave.channels.ohttp_attested import BhttpRequest  # noqa: PLC0415

    with (
        serving(create_app(enclave), "gateway") as gateway_url,
        serving(create_relay(gateway_url), "relay") as relay_url,
    ):
        print(f"gateway on {gateway_url}, relay on {relay_url}")
        # Pin the MRENCLAVE of the bundle we signed, not what the running enclave says about itself.
        expected = load_bundle(BUNDLE).mr_enclave
        with GatewayClient(relay_url, verifier_for(mode, expected)) as client:
            verified = client.attest()
            print(
                f"attested: key id {verified.key_config.key_id} is in enclave "
                f"{verified.mr_enclave.hex()[:16]}... (simulated: {verified.quote.simulated})"
            )
            hello = client.send(BhttpRequest("GET", path="/hello"))
            print(f"GET /hello -> {hello.status}: {hello.content.decode().strip()}")
            echo = client.send(BhttpRequest("POST", path="/echo", content=b"only the enclave reads this"))
            print(f"POST /echo -> {echo.status}: {echo.content.decode()}")
    return 0


def main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    parser.add_argument("--demo", action="store_true", help="run gateway, relay and client once, then exit")
    options = parser.parse_args(args)
    mode = resolve_mode(os.environ.get("ENKLAVE_MODE"))
    with host.load(BUNDLE, mode=mode) as enclave:
        print(f"started the gateway enclave in {mode} mode; MRENCLAVE {enclave.info.mr_enclave.hex()}")
        if options.demo:
            return demo(enclave, mode)
        uvicorn.run(create_app(enclave), host="127.0.0.1", port=options.port, log_level="info")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except EnklaveError as exc:
        print(f"ohttp_gateway: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
