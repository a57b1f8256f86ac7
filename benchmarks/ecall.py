"""Ecall cost: enklave's host/enclave boundary against a raw two-process socket ping-pong, in the same run.

Both sides are two Python processes on one machine joined by a UNIX stream socket pair, with the same
length-prefixed framing, so the ratio shows what enklave adds: CBOR encoding, the declared-type checks inside
the enclave, the TCS pool in the host.

* round trips per second with a 16-byte argument echoed back (enklave: ``ecall.ping(data) -> bytes``);
* MB/s with 1 MiB arguments answered by a small integer (enklave: ``ecall.sink(data) -> int``).

Usage: python benchmarks/ecall.py [--seconds 7] [--rounds 7] [--json]
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# A sibling module: Python puts the directory of the script it runs first on sys.path.
from _harness import alternating_arguments, signed_copy

from enklave import host

ENCLAVE = Path(__file__).resolve().parent / "enclaves" / "bench"
SMALL = b"0123456789abcdef"
LARGE = os.urandom(1 << 20)

# The raw peer: read a length-prefixed frame straight into a buffer of its size, answer with the same payload
# when it is small and with its length (4 bytes) when it is large: the work the enclave does for ping and sink,
# minus enklave. The host side sends with scatter-gather, so neither side copies more than it must.
_RAW_PEER = r"""
import socket, struct, sys
sock = socket.socket(fileno=int(sys.argv[1]))
head = bytearray(4)
def exact(into):
    view, have = memoryview(into), 0
    while have < len(into):
        got = sock.recv_into(view[have:])
        if not got:
            sys.exit(0)
        have += got
while True:
    exact(head)
    (n,) = struct.unpack(">I", head)
    payload = bytearray(n)
    exact(payload)
    reply = bytes(payload) if n <= 1024 else struct.pack(">I", n)
    sock.sendall(struct.pack(">I", len(reply)) + reply)
"""


class RawPeer:
    """A child process answering length-prefixed frames over a socket pair."""

    def __init__(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-c", _RAW_PEER, str(child.fileno())], pass_fds=[child.fileno()]
        )
        child.close()
        self.sock = parent
        self.buffer = bytearray()

    def call(self, payload: bytes) -> bytes:
        if len(payload) <= 1024:
            self.sock.sendall(struct.pack(">I", len(payload)) + payload)
        else:
            self.sock.sendmsg([struct.pack(">I", len(payload)), payload])
        (size,) = struct.unpack(">I", self._exact(4))
        return self._exact(size)

    def _exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError("raw peer closed")
            self.buffer += chunk
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def close(self) -> None:
        self.sock.close()
        self.process.wait(timeout=5)


def rate(function: Callable[[], object], seconds: float) -> float:
    """Calls per second over about ``seconds`` after a warm-up."""
    for _ in range(50):
        function()
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            function()
        calls += 20
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - start)


def main() -> None:
    options = alternating_arguments(__doc__, seconds=7.0, rounds=7).parse_args()

    with tempfile.TemporaryDirectory(prefix="enklave-bench-") as tmp:
        bundle_path = signed_copy(ENCLAVE, Path(tmp))

        # Alternate short rounds of both, and keep each one's median: other load on the machine then hits both
        # sides alike instead of whichever ran during it.
        raw = RawPeer()
        rates: dict[str, list[float]] = {"raw_small": [], "raw_large": [], "ours_small": [], "ours_large": []}
        try:
            with host.load(bundle_path, mode="sim", home=Path(tmp) / "home") as enclave:
                ping, sink = enclave.ecall.ping, enclave.ecall.sink
                share = options.seconds / options.rounds
                for _ in range(options.rounds):
                    rates["raw_small"].append(rate(lambda: raw.call(SMALL), share))
                    rates["ours_small"].append(rate(lambda: ping(SMALL), share))
                    rates["raw_large"].append(rate(lambda: raw.call(LARGE), share))
                    rates["ours_large"].append(rate(lambda: sink(LARGE), share))
        finally:
            raw.close()
        raw_small, raw_large, ours_small, ours_large = (
            statistics.median(rates[key]) for key in ("raw_small", "raw_large", "ours_small", "ours_large")
        )

    mib = len(LARGE) / 1e6
    results = {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "raw_round_trips_per_s": round(raw_small),
        "enklave_round_trips_per_s": round(ours_small),
        "round_trip_ratio": round(ours_small / raw_small, 2),
        "raw_mb_per_s": round(raw_large * mib),
        "enklave_mb_per_s": round(ours_large * mib),
        "throughput_ratio": round(ours_large / raw_large, 2),
    }
    if options.json:
        print(json.dumps(results, indent=2))
        return
    print(f"Python {results['python']} on {results['machine']}")
    print(f"{'':28} {'raw socket':>12} {'enklave':>12} {'ratio':>7}")
    print(
        f"{'16-byte round trips / s':28} {raw_small:12.0f} {ours_small:12.0f} {ours_small / raw_small:7.2f}"
    )
    print(
        f"{'1 MiB arguments, MB/s':28} {raw_large * mib:12.0f} {ours_large * mib:12.0f} {ours_large / raw_large:7.2f}"
    )


if __name__ == "__main__":
    main()
