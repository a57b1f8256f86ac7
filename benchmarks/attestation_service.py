"""Attestation service throughput: tokens per second over loopback HTTP against the in-process floor.

Both run in the same run, on the same simulated platform and the same quotes (32 distinct quotes, each binding
its own runtime data):

* floor, in process: what a token costs at least, with no HTTP and no enclave boundary. One ``QuoteVerifier``
  (caching the collateral checks, as the service's enclave does) verifies the quote against the simulated
  collateral, the runtime data binding is checked, the claims are built, the default SGX policy (parsed once)
  is evaluated, and a ``TokenSigner`` signs an RS256 token with a 3072-bit key, as the service's is. Measured
  on one thread, and on two threads sharing the verifier and the signer (the service runs a host and an
  enclave process, so it can use both cores of a 2-core machine; ``cryptography`` releases the GIL while it
  signs and verifies).
* service: ``enklave attestation-service serve --mode sim --allow-simulated`` in its own process (host and
  enclave processes, SQLite in a temporary ENKLAVE_HOME), loaded by ``--clients`` threads, each with its own
  keep-alive ``httpx.Client``, posting ``/attest/SgxEnclave`` until ``--seconds`` are up or
  ``--max-requests`` were sent. Any answer but 200 is a failure, printed with its body. A sample of the tokens
  is verified with ``TokenVerifier`` against the service's JWKS after the timing.

The load generator runs on the same machine and takes CPU from the service; its CPU time is printed.

Usage: python benchmarks/attestation_service.py [--seconds 10] [--clients 16] [--json]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

# Sibling modules: Python puts the directory of the script it runs first on sys.path.
from _harness import self_signed
from _proc import process_cpu
from cryptography.hazmat.primitives.asymmetric import rsa

from enklave.attestation.evidence import collateral_request
from enklave.attestation.tokens import StaticJwksSource, TokenSigner, TokenVerifier, sgx_claims
from enklave.attestation.trust import intel_sgx_root
from enklave.attestation.verify import QuoteVerifier
from enklave.platform.simulated import SimulatedCollateralSource, SimulatedPlatform, simulated_root
from enklave.services.attestation.policy import DEFAULT_SGX_POLICY, Claim, evaluate, parse_policy, policy_hash
from enklave.sgx.quote import Quote
from enklave.sgx.report import ReportBody

IDENTITY = ReportBody.build(mr_enclave=b"\x11" * 32, mr_signer=b"\x22" * 32, isv_prod_id=9, isv_svn=4)
ATTEST_PATH = "/attest/SgxEnclave?api-version=2022-08-01"
ISSUER = "http://127.0.0.1"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_requests(home: Path, count: int) -> list[tuple[bytes, bytes, dict[str, Any]]]:
    """``count`` distinct (quote, runtime bytes, runtime JSON) triples; each quote binds SHA-256 of its runtime."""
    simulated = SimulatedPlatform.launch(IDENTITY, home=home)
    made = []
    for index in range(count):
        runtime_json = {"jwk": {"kty": "RSA", "n": b64url(os.urandom(32)), "e": "AQAB"}, "index": index}
        runtime = json.dumps(runtime_json, separators=(",", ":")).encode()
        made.append((simulated.get_quote(hashlib.sha256(runtime).digest()), runtime, runtime_json))
    return made


def request_body(quote: bytes, runtime: bytes) -> bytes:
    return json.dumps(
        {"quote": b64url(quote), "runtimeData": {"data": b64url(runtime), "dataType": "JSON"}}
    ).encode()


# -- the floor -----------------------------------------------------------------------------------------------


def _signer() -> TokenSigner:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    certificate = self_signed(key, "benchmark token signing")
    return TokenSigner(key, [certificate], issuer=ISSUER, jku=f"{ISSUER}/certs")


def floor_function(home: Path, requests: list[tuple[bytes, bytes, dict[str, Any]]]) -> Callable[[int], str]:
    """One token for request ``i``: the work the service's enclave must do, minus request parsing and the ecall."""
    verifier = QuoteVerifier([intel_sgx_root(), simulated_root(home)])
    first = Quote.from_bytes(requests[0][0])
    wanted = collateral_request(first)
    collateral = SimulatedCollateralSource(home).fetch(wanted.fmspc, wanted.ca)
    signer = _signer()
    policy = parse_policy(DEFAULT_SGX_POLICY)
    digest = policy_hash(DEFAULT_SGX_POLICY)

    def one(index: int) -> str:
        quote, runtime, runtime_json = requests[index % len(requests)]
        now = datetime.now(UTC)
        verified = verifier.verify(quote, collateral, now=now)
        if hashlib.sha256(runtime).digest() != bytes(verified.body.report_data)[:32]:
            raise SystemExit("the runtime data is not bound to the quote")
        claims = sgx_claims(
            verified, runtime_data=runtime, runtime_json=runtime_json, init_time_data=None, nonce=None,
            collateral=collateral,
        )  # fmt: skip
        incoming = [
            Claim(name, item)
            for name, value in claims.items()
            for item in (value if isinstance(value, list) else [value])
            if isinstance(item, str | int | bool)
        ]
        result = evaluate(policy, incoming)
        claims["x-ms-policy-hash"] = digest
        for name, value in result.issued_claims().items():
            claims.setdefault(name, value)
        return signer.sign(claims, now=now)

    return one


def floor_rate(one: Callable[[int], str], seconds: float, threads: int) -> float:
    """Tokens per second of ``threads`` threads calling ``one`` for about ``seconds`` (after a warm-up)."""
    for index in range(10):
        one(index)
    counts = [0] * threads
    start = time.perf_counter()
    deadline = start + seconds

    def loop(slot: int) -> None:
        index = slot
        while time.perf_counter() < deadline:
            one(index)
            index += threads
            counts[slot] += 1

    workers = [threading.Thread(target=loop, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - start)


# -- the service ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_service(home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The service in its own process on 127.0.0.1; waits (at most 60 s) until it answers ``/certs``."""
    port = free_port()
    command = [
        sys.executable, "-c", "import sys; from enklave.cli import main; sys.exit(main(sys.argv[1:]))",
        "attestation-service", "serve", "--mode", "sim", "--allow-simulated", "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    environ = {**os.environ, "ENKLAVE_HOME": str(home)}
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=environ, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the service exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/certs", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the service did not start within 60 s:\n{log.read_text()[-2000:]}")


def load(
    base: str, bodies: list[bytes], clients: int, seconds: float, max_requests: int
) -> tuple[float, int, Counter[str], list[str]]:
    """Run ``clients`` keep-alive clients for ``seconds`` (or ``max_requests`` requests in all).

    Returns tokens per second, the requests sent, the failures by status and message, and the tokens.
    """
    lock = threading.Lock()
    sent = 0
    failures: Counter[str] = Counter()
    tokens: list[str] = []
    start_line = threading.Barrier(clients + 1)
    timing: dict[str, float] = {}

    def take() -> bool:
        nonlocal sent
        with lock:
            if sent >= max_requests or time.perf_counter() >= timing["deadline"]:
                return False
            sent += 1
            return True

    def client(slot: int) -> None:
        index = slot
        with httpx.Client(base_url=base, timeout=30) as http:
            # One warm-up request each opens the keep-alive connection before the clock starts.
            http.post(ATTEST_PATH, content=bodies[index % len(bodies)])
            start_line.wait()
            while take():
                try:
                    response = http.post(
                        ATTEST_PATH, content=bodies[index % len(bodies)],
                        headers={"content-type": "application/json"},
                    )  # fmt: skip
                except httpx.HTTPError as exc:
                    with lock:
                        failures[f"transport: {type(exc).__name__}: {exc}"] += 1
                    continue
                index += clients
                if response.status_code == 200:
                    with lock:
                        tokens.append(response.json()["token"])
                else:
                    with lock:
                        failures[f"{response.status_code}: {response.text[:200]}"] += 1

    workers = [threading.Thread(target=client, args=(slot,)) for slot in range(clients)]
    timing["deadline"] = float("inf")
    for worker in workers:
        worker.start()
    start_line.wait()
    start = time.perf_counter()
    timing["deadline"] = start + seconds
    for worker in workers:
        worker.join(seconds + 60)
    elapsed = time.perf_counter() - start
    return len(tokens) / elapsed, sent, failures, tokens


def check_tokens(base: str, tokens: list[str], runtimes: dict[str, bytes], sample: int) -> int:
    """Verify ``sample`` tokens with TokenVerifier; raises SystemExit on the first bad one."""
    jwks = httpx.get(f"{base}/certs", timeout=10).json()
    verifier = TokenVerifier(base, StaticJwksSource(jwks))
    chosen = random.sample(tokens, min(sample, len(tokens)))
    for token in chosen:
        claims = verifier.verify(token).claims
        ehd = str(claims.get("x-ms-sgx-ehd", ""))
        if claims.get("x-ms-sgx-mrenclave") != IDENTITY.mr_enclave.hex() or ehd not in runtimes:
            raise SystemExit(f"a token does not describe its evidence: {sorted(claims)}")
        if claims.get("x-enklave-simulated") is not True:
            raise SystemExit("a token of simulated evidence does not say so")
    return len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="time per measurement (default 10)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--quotes", type=int, default=32, help="distinct quotes (default 32)")
    parser.add_argument(
        "--max-requests", type=int, default=200_000, help="bound on requests (default 200000)"
    )
    parser.add_argument("--sample", type=int, default=64, help="tokens verified after the run (default 64)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.clients < 1 or args.quotes < 1 or args.seconds <= 0:
        parser.error("--clients, --quotes and --seconds must be positive")

    with tempfile.TemporaryDirectory(prefix="enklave-bench-maa-") as tmp:
        home = Path(tmp)
        os.environ["ENKLAVE_HOME"] = str(home)
        requests = make_requests(home, args.quotes)
        bodies = [request_body(quote, runtime) for quote, runtime, _ in requests]
        runtimes = {b64url(runtime): runtime for _, runtime, _ in requests}

        one = floor_function(home, requests)
        floor_1 = floor_rate(one, args.seconds, 1)
        floor_2 = floor_rate(one, args.seconds, 2)

        process, base = start_service(home, home / "service.log")
        try:
            cpu_before = os.times()
            service_before = process_cpu(process.pid)
            service_rate, sent, failures, tokens = load(
                base, bodies, args.clients, args.seconds, args.max_requests
            )
            cpu_after = os.times()
            service_after = process_cpu(process.pid)
            checked = check_tokens(base, tokens, runtimes, args.sample)
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    client_cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    host_cpu = service_after.get(process.pid, 0.0) - service_before.get(process.pid, 0.0)
    enclave_cpu = sum(
        spent - service_before.get(pid, 0.0) for pid, spent in service_after.items() if pid != process.pid
    )
    per_token = 1e6 / max(len(tokens), 1)
    figures = {
        "floor_1_thread_per_second": floor_1,
        "floor_2_threads_per_second": floor_2,
        "service_per_second": service_rate,
        "clients": args.clients,
        "requests": sent,
        "tokens": len(tokens),
        "failures": sum(failures.values()),
        "tokens_verified": checked,
        "cpu_us_per_token": {
            "host": host_cpu * per_token,
            "enclave": enclave_cpu * per_token,
            "load_generator": client_cpu * per_token,
        },
        "ratio_to_floor_1_thread": service_rate / floor_1,
        "ratio_to_floor_2_threads": service_rate / floor_2,
    }
    if args.json:
        print(json.dumps({**figures, "failure_messages": dict(failures)}, indent=2))
    else:
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
              f"{platform.python_implementation()} {platform.python_version()}")  # fmt: skip
        print(f"{'configuration':<44}{'tokens/s':>10}{'ratio':>8}")
        print(f"{'floor, in process, 1 thread':<44}{floor_1:>10.0f}{1.0:>8.2f}")
        print(f"{'floor, in process, 2 threads':<44}{floor_2:>10.0f}{floor_2 / floor_1:>8.2f}")
        label = f"service, loopback HTTP, {args.clients} clients"
        print(f"{label:<44}{service_rate:>10.0f}{service_rate / floor_1:>8.2f}")
        print(f"ratio to the 2-thread floor: {service_rate / floor_2:.2f}")
        print(f"requests {sent}, tokens {len(tokens)}, failures {sum(failures.values())}, "
              f"tokens verified {checked}")  # fmt: skip
        print(f"CPU per token (us): host {host_cpu * per_token:.0f}, enclave {enclave_cpu * per_token:.0f}, "
              f"load generator {client_cpu * per_token:.0f}; floor {1e6 / floor_1:.0f}")  # fmt: skip
        for message, count in failures.most_common(10):
            print(f"  failure x{count}: {message}")
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
