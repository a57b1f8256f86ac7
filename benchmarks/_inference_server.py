"""The servers of ``benchmarks/inference.py``, each in a process of its own so that the load generator does not
share their interpreter: a plain KServe v2 server, or enklave's confidential inference service in simulation.

* ``plain``: Starlette on uvicorn (the configuration :func:`enklave.inference.app.serving` uses) answering
  ``POST /v2/models/{name}/infer`` with the Open Inference Protocol codec of :mod:`enklave.inference.protocol`
  and a :class:`~enklave.inference.runner.ModelRunner` per model (the same batching as the enclave's), with no
  enclave, no encryption and no authentication. Each request is decoded, run and encoded on a worker thread, as
  the enclave does it on the thread of its ecall. Models come from ``--model NAME=PATH``. ``GET /stats`` answers
  the runners' counters (session runs by the number of requests merged), as the enclave's metrics do.
* ``enklave``: ``serving(InferenceConfig(mode="sim", ...))``, host and enclave processes; the benchmark uploads
  the models through :class:`enklave.inference.Client` with the owner token it passes here.

The server prints one JSON line (``url``, ``pid``, and for enklave ``mr_enclave``) once it answers, then serves
until its standard input closes.

Usage: python benchmarks/_inference_server.py plain|enklave [--data-dir DIR] [--threads 1] [--max-batch 8]
[--batch-delay-ms 2] [--owner-token TOKEN] [--model NAME=PATH ...] (enklave needs --data-dir and ENKLAVE_HOME)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from enklave.errors import BoundaryError, TransportError
from enklave.inference.app import serving
from enklave.inference.protocol import (
    HEADER_LENGTH,
    InferOutput,
    InferResponse,
    Limits,
    decode_request,
    encode_response,
    error_body,
    parse_header_length,
)
from enklave.inference.runner import ModelRunner
from enklave.inference.service import InferenceConfig
from enklave.services._http import serve_in_thread

__all__ = ["plain_app", "serve_plain"]

_START_TIMEOUT = 60.0


def plain_app(runners: dict[str, ModelRunner], limits: Limits) -> Starlette:
    """The plain server: v2 inference over ``runners`` by model name, and their counters at ``/stats``."""

    def handle(name: str, body: bytes, content_type: str | None, header_length: str | None) -> Response:
        runner = runners.get(name)
        if runner is None:
            return Response(error_body(f"no model {name[:64]!r}"), 404, media_type="application/json")
        try:
            decoded = decode_request(body, content_type, parse_header_length(header_length), limits)
            outputs = None if decoded.outputs is None else list(decoded.outputs)
            results = runner.run(decoded.arrays(), outputs)
            response = InferResponse(
                model_name=name,
                model_version="1",
                outputs=tuple(InferOutput(output, array) for output, array in results.items()),
                id=decoded.id,
            )
            encoded, headers = encode_response(response, decoded.binary_outputs)
        except BoundaryError as exc:
            return Response(error_body(str(exc)), 400, media_type="application/json")
        return Response(encoded, headers=headers)

    async def infer(request: Request) -> Response:
        body = await request.body()
        return await run_in_threadpool(
            handle,
            request.path_params["name"],
            body,
            request.headers.get("content-type"),
            request.headers.get(HEADER_LENGTH),
        )

    async def stats(request: Request) -> Response:
        # The runners' counters (session runs by calls merged), which the benchmark compares with the enclave's.
        document = {name: runner.stats().to_dict() for name, runner in runners.items()}
        return Response(json.dumps(document), media_type="application/json")

    return Starlette(
        routes=[
            Route("/v2/models/{name}/infer", infer, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
        ]
    )


@contextmanager
def serve_plain(app: Starlette) -> Iterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1 in a background thread, as ``serving`` does; yield its URL."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        try:
            with serve_in_thread(app, sock, name="plain server", timeout=_START_TIMEOUT):
                yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        except TransportError as exc:
            raise SystemExit(str(exc)) from None


def _announce(document: dict[str, Any]) -> None:
    print(json.dumps(document), flush=True)
    # Serve until the benchmark closes our standard input (or dies).
    sys.stdin.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["plain", "enklave"])
    parser.add_argument("--data-dir", type=Path, help="the enklave service's data directory")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--batch-delay-ms", type=float, default=2.0)
    parser.add_argument("--owner-token")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH")
    options = parser.parse_args()

    if options.kind == "plain":
        runners = {}
        for item in options.model:
            name, _, path = item.partition("=")
            runners[name] = ModelRunner(
                Path(path).read_bytes(),
                intra_op_threads=options.threads,
                max_batch=options.max_batch,
                max_delay_ms=options.batch_delay_ms,
            )
        with serve_plain(plain_app(runners, Limits())) as url:
            _announce({"url": url, "pid": os.getpid()})
        return

    if options.data_dir is None:
        parser.error("enklave needs --data-dir")
    config = InferenceConfig(
        data_dir=options.data_dir,
        mode="sim",
        home=Path(os.environ["ENKLAVE_HOME"]),
        owner_token=options.owner_token,
        threads=options.threads,
        max_batch=options.max_batch,
        batch_delay_ms=options.batch_delay_ms,
    )
    with serving(config) as running:
        info = running.service.info
        _announce({"url": running.url, "pid": os.getpid(), "mr_enclave": bytes(info.mr_enclave).hex()})


if __name__ == "__main__":
    main()
