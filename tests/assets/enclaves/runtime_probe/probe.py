"""Test enclave: each ecall exercises one path across the host/enclave boundary."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Annotated

from probe_helpers import GREETING

from enklave import enclave


@enclave.ocall
def host_upper(text: str) -> str: ...


@enclave.ocall
def host_fails() -> None: ...


@enclave.ocall
def host_lies() -> int: ...


@enclave.ocall
def host_missing() -> None: ...


@enclave.ocall
def host_unencodable() -> int: ...


@enclave.ecall
def echo(data: bytes) -> bytes:
    return data


@enclave.ecall
def size(data: bytes) -> int:
    return len(data)


@enclave.ecall
def filler(size: int) -> bytes:
    return b"\xab" * size


@enclave.ecall
def add(a: int, b: int) -> int:
    return a + b


@enclave.ecall
def limited(data: Annotated[bytes, enclave.MaxSize(16)], tags: list[str] | None) -> int:
    return len(data) + len(tags or [])


@enclave.ecall
def fail(message: str) -> None:
    raise ValueError(message)


@enclave.ecall
def wrong_result() -> int:
    return "not an int"  # type: ignore[return-value]


@enclave.ecall
def crash(status: int) -> None:
    os._exit(status)


@enclave.ecall
def nap(seconds: float) -> str:
    time.sleep(seconds)
    return threading.current_thread().name


@enclave.ecall
def upper_via_host(text: str) -> str:
    return host_upper(text) + "!"


@enclave.ecall
def ocall_failures() -> list[str]:
    seen = []
    for function in (host_fails, host_lies, host_missing, host_unencodable):
        try:
            function()
        except Exception as exc:
            seen.append(type(exc).__name__)
    return seen


@enclave.ecall
def environment() -> dict[str, str]:
    return dict(os.environ)


@enclave.ecall
def isolated() -> bool:
    return bool(sys.flags.isolated)


@enclave.ecall
def greeting() -> str:
    return GREETING + " / " + enclave.bundle_file("data.txt").decode().strip()


@enclave.ecall
def identity() -> dict[str, bytes]:
    me = enclave.identity()
    return {
        "mr_enclave": me.mr_enclave,
        "mr_signer": me.mr_signer,
        "isv_svn": me.isv_svn.to_bytes(2, "little"),
    }


@enclave.ecall
def quote(report_data: Annotated[bytes, enclave.MaxSize(64)]) -> bytes:
    return enclave.get_quote(report_data)


@enclave.ecall
def seal(data: bytes, policy: str) -> bytes:
    return enclave.seal(data, policy="product" if policy == "product" else "unique")


@enclave.ecall
def unseal(blob: bytes, policy: str) -> bytes:
    return enclave.unseal(blob, policy="product" if policy == "product" else "unique")


@enclave.ecall
def leak(secret: str) -> int:
    return int(secret)


@enclave.ecall
def public_failure(reason: str) -> None:
    raise enclave.PublicError(reason)
