"""Prometheus metrics and access logs of the inference host: counts and timings, nothing derived from content.

Each app has its own :class:`prometheus_client.CollectorRegistry` (several services may run in one process, as in
tests). Metrics:

* ``enklave_inference_http_requests_total{route, method, status}`` and
  ``enklave_inference_http_request_duration_seconds{route}`` (histogram), by route template, never by raw path;
* ``enklave_inference_http_errors_total{route, code}``: answers of 400 and more by the host's error code;
* from the enclave's own counters, read at each scrape: ``enklave_inference_enclave_up``,
  ``enklave_inference_models_loaded``, ``enklave_inference_inner_answers_total{class}`` (the status classes of
  the answers inside the encryption), ``enklave_inference_inferences_total``, ``enklave_inference_runs_total``,
  ``enklave_inference_rows_total``, ``enklave_inference_model_errors_total`` and
  ``enklave_inference_batches_total{size}`` (session runs by the number of requests merged into them).

Access log lines (logger ``enklave.inference.access``) are JSON objects with the route, method, status and
duration: no body, no header, no model name from a path.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from enklave._json import loads

__all__ = ["Metrics"]

access_log = logging.getLogger("enklave.inference.access")
log = logging.getLogger("enklave.inference")

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _EnclaveCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("enklave_inference_enclave_up", "1 while the inference enclave answers")
        try:
            stats = self._stats()
        except Exception as exc:  # An unavailable enclave is a metric value, not a failed scrape.
            log.warning("no enclave statistics: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "enklave_inference_models_loaded",
            "Models loaded in the enclave",
            value=int(stats.get("models", 0)),
        )
        answers = CounterMetricFamily(
            "enklave_inference_inner_answers",
            "Answers inside the encryption, by status class",
            labels=["class"],
        )
        for status_class, count in sorted(stats.get("answers", {}).items()):
            if status_class.endswith("xx"):
                answers.add_metric([status_class], int(count))
        yield answers
        for name, key, text in (
            ("enklave_inference_inferences", "requests", "Inference calls that reached a model"),
            ("enklave_inference_runs", "runs", "ONNX Runtime session runs"),
            ("enklave_inference_rows", "rows", "Rows (batch entries) run"),
            ("enklave_inference_model_errors", "errors", "Inference calls that failed in the model runner"),
        ):
            yield CounterMetricFamily(name, text, value=int(stats.get(key, 0)))
        batches = CounterMetricFamily(
            "enklave_inference_batches",
            "Session runs by the number of requests merged into them",
            labels=["size"],
        )
        for size, count in sorted(stats.get("batch_sizes", {}).items(), key=lambda item: int(item[0])):
            batches.add_metric([str(size)], int(count))
        yield batches


class Metrics:
    """The registry of one app, its HTTP metrics, and the enclave collector over ``stats``."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "enklave_inference_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "enklave_inference_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "enklave_inference_http_errors",
            "HTTP answers of 400 and more by route template and error code",
            ["route", "code"],
            registry=self.registry,
        )
        self.registry.register(_EnclaveCollector(stats))

    def timed(
        self, route: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` counted, timed and logged under ``route`` (a template such as ``/v1/models/{name}``)."""

        async def wrapped(request: Request) -> Response:
            start = time.perf_counter()
            response = await handler(request)
            elapsed = time.perf_counter() - start
            status = response.status_code
            self.requests.labels(route, request.method, str(status)).inc()
            self.duration.labels(route).observe(elapsed)
            if status >= 400:
                self.errors.labels(route, _error_code(response)).inc()
            if access_log.isEnabledFor(logging.INFO):
                line = {"event": "request", "route": route, "method": request.method, "status": status}
                access_log.info(json.dumps({**line, "duration_ms": round(elapsed * 1000, 3)}))
            return response

        return wrapped


def _error_code(response: Response) -> str:
    # The host's own JSON errors carry a code; anything else counts by status.
    try:
        document = loads(bytes(response.body))
        code = document["error"]["code"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return str(response.status_code)
    return code if isinstance(code, str) and code.isidentifier() else str(response.status_code)
