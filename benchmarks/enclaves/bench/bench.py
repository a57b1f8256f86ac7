"""Benchmark enclave: an echo for round trips and a sink for throughput."""

from __future__ import annotations

from enklave import enclave


@enclave.ecall
def ping(data: bytes) -> bytes:
    return data


@enclave.ecall
def sink(data: bytes) -> int:
    return len(data)
