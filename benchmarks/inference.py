"""Confidential inference against plain serving and ONNX Runtime in process: throughput and latency, same run.

Three configurations, with the same model, the same inputs and the same concurrency (``--clients`` threads of
this process, each sending one request at a time and waiting for its answer):

* ``in-process``: an ``onnxruntime.InferenceSession`` in this process with the session options of enklave's
  :class:`~enklave.inference.runner.ModelRunner` (``--threads`` intra-op threads, one inter-op thread,
  sequential execution), called directly by the client threads;
* ``plain``: the same serving stack without an enclave and without encryption, in a process of its own
  (``benchmarks/_inference_server.py plain``): Starlette on uvicorn, the Open Inference Protocol (KServe v2)
  binary tensor codec of :mod:`enklave.inference.protocol`, and a ``ModelRunner`` with the same batching
  (``--max-batch``, ``--batch-delay-ms``) and threads; the clients share one keep-alive ``httpx.Client``;
* ``enklave``: the confidential inference service in simulation mode, ``serving(InferenceConfig(mode="sim",
  ...))`` in a process of its own (host process, enclave process), with the same settings; the clients share
  one :class:`enklave.inference.Client`, which attests the enclave once (DCAP against the simulated root), then
  encapsulates every request with Oblivious HTTP to the attested key. The models reach the enclave encrypted,
  uploaded through that client.

Models: a small MLP built here with ``onnx.helper`` (x [N, 256] -> 512 ReLU -> y [N, 10], float32, dynamic batch
dimension, one row per request, so concurrent requests are batched) and the light ResNet-50 of the ``onnx``
package's backend test data (fixed batch of 1, so nothing is batched). Before timing, the answers of the two
servers are checked against the in-process outputs, and ResNet-50's against the reference output it ships with.

Rounds alternate the configurations (medians of the throughputs are reported, latencies pooled over the rounds),
so that other load on the machine hits them alike. CPU time per inference is read from /proc for this process
(the load generator) and each server process (host, and enclave for enklave); the ratios are also given by CPU
time per inference of all processes together, which other load on the machine does not move.

Usage: python benchmarks/inference.py [--seconds 10] [--rounds 5] [--clients 4] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort

# A sibling module: Python puts the directory of the script it runs first on sys.path.
from _inference_setup import Array, Server, Workload, workloads

from enklave.attestation.policy import EnclavePolicy
from enklave.inference import Client
from enklave.inference.protocol import (
    HEADER_LENGTH,
    InferInput,
    InferRequest,
    decode_response,
    encode_request,
    parse_header_length,
)
from enklave.platform.simulated import simulated_root

OWNER = "benchmark-owner-token-0123456789"
CONFIGURATIONS = ("in-process", "plain", "enklave")
TARGETS = {"mlp": 0.6, "resnet50": 0.9}
"""enklave's throughput over the plain server's, at least."""

Call = Callable[[int], dict[str, Array]]


# -- the three ways to run a model -----------------------------------------------------------------------------


def in_process(work: Workload, threads: int) -> Call:
    # The options of ModelRunner._load, so that only the serving differs.
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 4
    session = ort.InferenceSession(work.model, sess_options=options, providers=["CPUExecutionProvider"])

    def call(index: int) -> dict[str, Array]:
        x = work.inputs[index % len(work.inputs)]
        return {work.output: session.run([work.output], {work.input: x})[0]}

    return call


def plain(work: Workload, http: httpx.Client, url: str) -> Call:
    target = f"{url}/v2/models/{work.name}/infer"

    def call(index: int) -> dict[str, Array]:
        x = work.inputs[index % len(work.inputs)]
        request = InferRequest(inputs=(InferInput(work.input, x),), binary_outputs=True)
        body, headers = encode_request(request, binary=True)
        answer = http.post(target, content=body, headers=headers)
        if answer.status_code != 200:
            raise SystemExit(f"the plain server answered {answer.status_code}: {answer.text[:200]}")
        decoded = decode_response(
            answer.content,
            answer.headers.get("content-type"),
            parse_header_length(answer.headers.get(HEADER_LENGTH)),
        )
        return decoded.arrays()

    return call


def confidential(work: Workload, client: Client) -> Call:
    def call(index: int) -> dict[str, Array]:
        return client.infer(work.name, {work.input: work.inputs[index % len(work.inputs)]})

    return call


# -- load ------------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    """What the rounds of one configuration measured."""

    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    inferences: int = 0
    cpu: dict[str, float] = field(default_factory=lambda: {"client": 0.0, "host": 0.0, "enclave": 0.0})


def drive(call: Call, clients: int, seconds: float) -> tuple[int, float, list[float]]:
    """``clients`` threads calling ``call`` back to back for ``seconds``; calls started before the deadline all
    finish and count. Returns the calls, the time from the start to the last answer, and every call's latency."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)
    timing = {"deadline": float("inf")}

    def loop(slot: int) -> None:
        index = slot
        barrier.wait()
        mine = latencies[slot]
        try:
            while True:
                begin = time.perf_counter()
                if begin >= timing["deadline"]:
                    return
                call(index)
                mine.append(time.perf_counter() - begin)
                index += clients
        except BaseException as exc:  # Reported once the threads have stopped.
            errors.append(exc)

    workers = [threading.Thread(target=loop, args=(slot,), daemon=True) for slot in range(clients)]
    for worker in workers:
        worker.start()
    start = time.perf_counter()
    timing["deadline"] = start + seconds
    barrier.wait()
    for worker in workers:
        worker.join(seconds + 300)
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"a client failed: {type(errors[0]).__name__}: {errors[0]}")
    pooled = [value for mine in latencies for value in mine]
    return len(pooled), elapsed, pooled


def check_outputs(work: Workload, calls: dict[str, Call]) -> None:
    """Every configuration answers every input as ONNX Runtime in process does (and as the model's reference)."""
    for index, _ in enumerate(work.inputs):
        expected = calls["in-process"](index)[work.output]
        if index == 0 and work.reference is not None:
            np.testing.assert_allclose(expected, work.reference, rtol=1e-3, atol=1e-5)
        for name in ("plain", "enklave"):
            got = calls[name](index)[work.output]
            if got.shape != expected.shape or got.dtype != expected.dtype:
                raise SystemExit(f"{work.name}: {name} answered {got.dtype}{got.shape}")
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def measure(
    work: Workload, calls: dict[str, Call], servers: dict[str, Server], options: argparse.Namespace
) -> dict[str, Figures]:
    check_outputs(work, calls)
    for call in calls.values():
        # Untimed: first runs of a session, connections opened, pages faulted in.
        drive(call, options.clients, options.warm_up)
    figures = {name: Figures() for name in calls}
    share = options.seconds / options.rounds
    for _ in range(options.rounds):
        for name, call in calls.items():
            server = servers.get(name)
            before = os.times()
            host_before, enclave_before = server.cpu() if server else (0.0, 0.0)
            count, elapsed, latencies = drive(call, options.clients, share)
            after = os.times()
            host_after, enclave_after = server.cpu() if server else (0.0, 0.0)
            entry = figures[name]
            entry.rates.append(count / elapsed)
            entry.latencies += latencies
            entry.inferences += count
            entry.cpu["client"] += (after.user - before.user) + (after.system - before.system)
            entry.cpu["host"] += host_after - host_before
            entry.cpu["enclave"] += enclave_after - enclave_before
    return figures


def batches(servers: dict[str, Server], http: httpx.Client) -> dict[str, dict[str, int]]:
    """Session runs so far by the number of requests merged into them, per server (all models together)."""
    plain_total: dict[str, int] = {}
    for model in http.get(f"{servers['plain'].url}/stats").json().values():
        for size, count in model["batch_sizes"].items():
            plain_total[size] = plain_total.get(size, 0) + count
    enclave: dict[str, int] = {}
    for line in http.get(f"{servers['enklave'].url}/metrics").text.splitlines():
        if line.startswith("enklave_inference_batches_total{"):
            size = line.split('size="', 1)[1].split('"', 1)[0]
            enclave[size] = int(float(line.rsplit(" ", 1)[1]))
    return {"plain": plain_total, "enklave": enclave}


def difference(
    after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    """``after - before`` of two :func:`batches` snapshots, sizes in increasing order, zeros left out."""
    result = {}
    for server, sizes in after.items():
        counts = {size: count - before.get(server, {}).get(size, 0) for size, count in sizes.items()}
        result[server] = {size: counts[size] for size in sorted(counts, key=int) if counts[size]}
    return result


# -- report ----------------------------------------------------------------------------------------------------


def summary(figures: Figures) -> dict[str, Any]:
    latencies = sorted(figures.latencies)
    per = 1e6 / max(figures.inferences, 1)
    return {
        "inferences_per_s": round(statistics.median(figures.rates), 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2),
        "inferences": figures.inferences,
        "cpu_us_per_inference": {role: round(spent * per) for role, spent in figures.cpu.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="time per configuration and model")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads, everywhere")
    parser.add_argument("--max-batch", type=int, default=8, help="dynamic batching: most rows per run")
    parser.add_argument("--batch-delay-ms", type=float, default=2.0, help="dynamic batching: longest wait")
    parser.add_argument("--warm-up", type=float, default=1.0, help="untimed seconds per configuration")
    parser.add_argument("--models", default="mlp,resnet50", help="comma-separated: mlp, resnet50")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    options = parser.parse_args()
    names = [name.strip() for name in options.models.split(",") if name.strip()]
    if not names or set(names) - set(TARGETS):
        parser.error("--models takes mlp, resnet50 or both")
    if options.clients < 1 or options.rounds < 1 or options.seconds <= 0 or options.threads < 1:
        parser.error("--clients, --rounds, --seconds and --threads must be positive")

    results: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "onnxruntime": ort.__version__,
        "clients": options.clients,
        "threads": options.threads,
        "max_batch": options.max_batch,
        "batch_delay_ms": options.batch_delay_ms,
        "load_average_before": round(os.getloadavg()[0], 2),
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="enklave-bench-inference-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        os.environ["ENKLAVE_HOME"] = str(home)
        work = workloads(names)
        paths = []
        for item in work:
            path = Path(tmp) / f"{item.name}.onnx"
            path.write_bytes(item.model)
            paths += ["--model", f"{item.name}={path}"]
        common = [
            "--threads", str(options.threads), "--max-batch", str(options.max_batch),
            "--batch-delay-ms", str(options.batch_delay_ms),
        ]  # fmt: skip
        servers: dict[str, Server] = {}
        try:
            servers["plain"] = Server("plain", [*common, *paths], Path(tmp) / "plain.log")
            servers["enklave"] = Server(
                "enklave",
                [*common, "--owner-token", OWNER, "--data-dir", f"{tmp}/enklave"],
                Path(tmp) / "enklave.log",
            )
            policy = EnclavePolicy(mr_enclave=servers["enklave"].info["mr_enclave"], allow_simulated=True)
            with (
                httpx.Client(timeout=120) as http,
                Client(
                    servers["enklave"].url,
                    policy=policy,
                    roots=[simulated_root(home)],
                    owner_token=OWNER,
                    timeout=120,
                ) as client,
            ):
                for item in work:
                    client.upload_model(item.model, name=item.name, version=1)
                for item in work:
                    calls = {
                        "in-process": in_process(item, options.threads),
                        "plain": plain(item, http, servers["plain"].url),
                        "enklave": confidential(item, client),
                    }
                    before = batches(servers, http)
                    figures = measure(item, calls, servers, options)
                    results["models"][item.name] = {name: summary(figures[name]) for name in CONFIGURATIONS}
                    merged = difference(batches(servers, http), before)
                    results["models"][item.name]["session_runs_by_requests_merged"] = merged
        finally:
            for server in servers.values():
                server.close()

    results["load_average_after"] = round(os.getloadavg()[0], 2)
    for name, model in results["models"].items():
        ours, base, local = (model[key]["inferences_per_s"] for key in ("enklave", "plain", "in-process"))
        model["enklave_over_plain"] = round(ours / base, 3)
        model["plain_over_in_process"] = round(base / local, 3)
        model["target_enklave_over_plain"] = TARGETS[name]
        model["target_met"] = ours / base >= TARGETS[name]
        # What the ratio would be if CPU time were the only limit: it does not move with other load on the
        # machine, which makes the throughput of a 10-second run swing.
        spent = {key: sum(model[key]["cpu_us_per_inference"].values()) for key in CONFIGURATIONS}
        model["cpu_enklave_over_plain"] = round(spent["plain"] / spent["enklave"], 3)
        model["cpu_plain_over_in_process"] = round(spent["in-process"] / spent["plain"], 3)
    if options.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"Python {results['python']} on {results['machine']}, onnxruntime {results['onnxruntime']}; "
        f"{options.clients} clients, {options.threads} intra-op thread(s), batches of at most "
        f"{options.max_batch} rows within {options.batch_delay_ms} ms"
    )
    print(
        f"{'model':10} {'configuration':12} {'inferences/s':>13} {'p50 ms':>9} {'p99 ms':>9}  CPU us/inference"
    )
    for name, model in results["models"].items():
        for configuration in CONFIGURATIONS:
            row = model[configuration]
            cpu = ", ".join(f"{role} {spent}" for role, spent in row["cpu_us_per_inference"].items() if spent)
            print(
                f"{name:10} {configuration:12} {row['inferences_per_s']:13.1f} {row['p50_ms']:9.2f}"
                f" {row['p99_ms']:9.2f}  {cpu}"
            )
        verdict = "met" if model["target_met"] else "NOT met"
        print(
            f"{name:10} enklave/plain {model['enklave_over_plain']:.2f} (target >= {TARGETS[name]}: {verdict}),"
            f" plain/in-process {model['plain_over_in_process']:.2f}; by CPU per inference"
            f" {model['cpu_enklave_over_plain']:.2f} and {model['cpu_plain_over_in_process']:.2f}"
        )
        print(
            f"{name:10} session runs by requests merged: {json.dumps(model['session_runs_by_requests_merged'])}"
        )
    print(
        f"load average (1 min): {results['load_average_before']:.2f} before, {results['load_average_after']:.2f} after"
    )


if __name__ == "__main__":
    main()
