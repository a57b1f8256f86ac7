"""What enclave code imports: the interface decorators and the enclave's view of its TEE.

An enclave module declares its interface with typed functions::

    from enklave import enclave

    @enclave.ocall
    def log(message: str) -> None: ...          # provided by the host

    @enclave.ecall
    def infer(request: Annotated[bytes, enclave.MaxSize(1 << 20)]) -> bytes:
        log("inferring")
        return enclave.seal(request)

The signatures are the whole boundary, as an EDL file is for the SGX SDK: ecall arguments from the host are
checked against them inside the enclave before the function runs, and ocall results from the host are checked
before the enclave sees them (see :mod:`enklave.runtime._types` for the supported types).

The functions below (:func:`identity`, :func:`get_report`, :func:`get_quote`, :func:`seal`, :func:`unseal`,
:func:`random_bytes`, :func:`bundle_file`) work only inside a running enclave and raise
:class:`~enklave.errors.UsageError` elsewhere. Secrets they touch (seal keys, the simulated CPU's keys) stay in
the enclave process.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from enklave.errors import BoundaryError, OcallError, SealingError, UsageError
from enklave.platform._base import Platform
from enklave.runtime._types import FunctionSpec, MaxSize, spec_of_function
from enklave.runtime._wire import Channel, Kind
from enklave.sealing import SealPolicy
from enklave.sealing import seal as _seal
from enklave.sealing import unseal as _unseal
from enklave.sgx.report import Report, ReportBody, TargetInfo

__all__ = [
    "MaxSize",
    "PublicError",
    "SealPolicy",
    "bundle_file",
    "ecall",
    "get_quote",
    "get_report",
    "identity",
    "in_enclave",
    "mode",
    "ocall",
    "platform",
    "random_bytes",
    "seal",
    "unseal",
]

_F = TypeVar("_F", bound=Callable[..., Any])


class PublicError(Exception):
    """An error whose message enclave code chose to show the host, also from a production enclave.

    A production (non-debug) enclave reports other exceptions to the host by type name only: their messages may
    quote secrets (``int(secret)`` fails with the secret in its message). Raise this with a message that is safe
    to disclose.
    """


@dataclass(frozen=True, slots=True)
class _Registration:
    spec: FunctionSpec
    function: Callable[..., Any]


@dataclass(frozen=True, slots=True)
class _Context:
    platform: Platform
    files: Mapping[str, bytes]


# The interface of the enclave module, filled in by the decorators when the entry module is imported.
_ecalls: dict[str, _Registration] = {}
_ocalls: dict[str, FunctionSpec] = {}
_context: _Context | None = None
# The channel (TCS) the current thread is serving an ecall on: ocalls go back over it.
_tcs = threading.local()


def ecall(function: _F) -> _F:
    """Declare ``function`` an ecall: the host may call it by name with arguments of the annotated types.

    Raises UsageError when a parameter or the return type cannot cross the boundary, or the name is taken.
    """
    spec = spec_of_function(function)
    if spec.name in _ecalls or spec.name in _ocalls:
        raise UsageError(f"the interface already declares {spec.name!r}")
    _ecalls[spec.name] = _Registration(spec, function)
    return function


def ocall(function: _F) -> _F:
    """Declare a host function the enclave may call (an ocall); the body of ``function`` is never run.

    Calling the returned function inside an ecall sends the arguments to the host and returns the host's result
    after checking it against the annotated return type (the host is untrusted). Raises
    :class:`~enklave.errors.OcallError` when the host function raised or is not provided.
    """
    spec = spec_of_function(function)
    if spec.name in _ecalls or spec.name in _ocalls:
        raise UsageError(f"the interface already declares {spec.name!r}")
    _ocalls[spec.name] = spec

    def perform(*args: Any) -> Any:
        return _perform_ocall(spec, list(args))

    perform.__name__ = function.__name__
    perform.__qualname__ = function.__qualname__
    perform.__doc__ = function.__doc__
    perform.__wrapped__ = function  # type: ignore[attr-defined]
    return perform  # type: ignore[return-value]


def _perform_ocall(spec: FunctionSpec, args: list[Any]) -> Any:
    channel: Channel | None = getattr(_tcs, "channel", None)
    if channel is None:
        raise UsageError(
            f"ocall {spec.name!r} can only be made while serving an ecall, on the ecall's thread"
        )
    try:
        checked = spec.check_args(args)
    except BoundaryError as exc:
        raise UsageError(str(exc)) from None
    channel.send([Kind.OCALL, spec.name, checked])
    reply = channel.receive()
    if reply[0] == Kind.OCALL_RETURN and len(reply) == 2:
        return spec.check_result(reply[1])
    if reply[0] == Kind.OCALL_ERROR and len(reply) == 3 and type(reply[1]) is str and type(reply[2]) is str:
        raise OcallError(f"ocall {spec.name!r} failed in the host: {reply[1]}: {reply[2]}")
    raise BoundaryError(f"the host answered ocall {spec.name!r} with an unexpected message")


def _require() -> _Context:
    if _context is None:
        raise UsageError("this function only works inside a running enclave (load it with enklave.host.load)")
    return _context


def in_enclave() -> bool:
    """True inside a running enclave process."""
    return _context is not None


def platform() -> Platform:
    """The TEE platform this enclave runs on (simulated or Gramine)."""
    return _require().platform


def mode() -> str:
    """``"sim"`` or ``"sgx"``."""
    return _require().platform.mode


def identity() -> ReportBody:
    """This enclave's identity as the CPU reports it: MRENCLAVE, MRSIGNER, ISV product id and SVN, attributes."""
    return _require().platform.identity


def get_report(target_info: TargetInfo | None = None, report_data: bytes = b"") -> Report:
    """EREPORT: a report over ``report_data`` (<= 64 bytes) that the enclave ``target_info`` can verify."""
    return _require().platform.get_report(target_info, report_data)


def get_quote(report_data: bytes = b"") -> bytes:
    """A DCAP quote v3 over ``report_data`` (<= 64 bytes; bind a nonce or a key hash here)."""
    return _require().platform.get_quote(report_data)


def seal(data: bytes, policy: SealPolicy = "unique", aad: bytes = b"") -> bytes:
    """Seal ``data`` to this enclave (``"unique"``: same MRENCLAVE) or to its signer's product (``"product"``:
    same MRSIGNER and ISV product id, same or higher ISV SVN). ``aad`` is authenticated, not encrypted."""
    return _seal(_require().platform, data, policy=policy, aad=aad)


def unseal(blob: bytes, *, policy: SealPolicy = "unique", aad: bytes | None = None) -> bytes:
    """Unseal a blob made by :func:`seal` with ``policy``; when ``aad`` is given, the blob's must equal it.

    The policy is checked because a "product" blob can be made by any enclave of the same signer and product: an
    enclave that seals to itself must not accept one. Sealing gives no freshness: the host stores the blobs and
    can hand back an older one; keep a version inside the data (or a counter elsewhere) when that matters.

    Raises :class:`~enklave.errors.SealingError` when the blob was tampered with, belongs to another enclave or
    signer, was sealed with another policy or at a higher SVN (rollback), and
    :class:`~enklave.errors.InvalidSealedBlob` when it is malformed.
    """
    unsealed = _unseal(_require().platform, blob)
    if unsealed.policy != policy:
        raise SealingError(f"the blob was sealed with the {unsealed.policy!r} policy, not {policy!r}")
    if aad is not None and not hmac.compare_digest(unsealed.aad, aad):
        raise SealingError("the sealed blob's associated data is not the expected one")
    return unsealed.data


def random_bytes(size: int) -> bytes:
    """``size`` bytes from the operating system's CSPRNG (inside Gramine, the enclave's own RDRAND-seeded one)."""
    if size < 0:
        raise UsageError("size must be non-negative")
    return os.urandom(size)


def bundle_file(path: str) -> bytes:
    """A file of the signed bundle (measured into MRENCLAVE), by its path relative to enklave.toml."""
    files = _require().files
    if path not in files:
        raise UsageError(f"the enclave bundle has no file {path!r}")
    return files[path]
