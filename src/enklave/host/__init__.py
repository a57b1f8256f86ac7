"""What host code imports: load a signed enclave bundle and call into it.

::

    from enklave import host

    with host.load("build/app.enclave", mode="sim", ocalls={"log": print}) as enclave:
        reply = enclave.ecall.infer(b"request")
        # or, from asyncio: await enclave.aecall.infer(b"request")

Loading reads the bundle and checks what EINIT checks (measurement and SIGSTRUCT signature), starts the enclave
process (simulation: a separate Python process with an empty environment; hardware: the same under Gramine),
which checks the bundle again itself, and waits for the interface the enclave declares. The host process never
holds the enclave's secrets: the simulated CPU keys, seal keys and enclave keys live in the enclave process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from enklave._home import data_home
from enklave.deploy.gramine import gramine_command
from enklave.errors import BoundaryError, EnclaveCrashedError, UsageError
from enklave.host._enclave import Enclave, EnclaveInfo, start_error
from enklave.host._process import describe_exit, launch, stop
from enklave.platform.mode import resolve_mode
from enklave.runtime._types import FunctionSpec
from enklave.runtime._wire import Channel, ChannelClosed, Kind
from enklave.runtime.bundle import load_bundle
from enklave.runtime.enclave_main import FRAME_OVERHEAD
from enklave.sgx.report import MrEnclave, MrSigner

__all__ = ["Enclave", "EnclaveInfo", "load"]


def load(
    bundle: str | os.PathLike[str],
    *,
    mode: str | None = None,
    ocalls: Mapping[str, Callable[..., Any]] | None = None,
    timeout: float | None = None,
    start_timeout: float = 60.0,
    home: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    command: list[str] | None = None,
    transport: str | None = None,
) -> Enclave:
    """Load and start the enclave in ``bundle``; returns an :class:`Enclave` (use it as a context manager).

    ``mode`` is ``"sim"``, ``"sgx"`` or ``"auto"`` (default: ``ENKLAVE_MODE``, else auto); asking for sgx where
    there is no SGX raises :class:`~enklave.errors.PlatformError`, never a silent fall back. ``ocalls`` maps the
    names of the ocalls the enclave declares to host functions. ``timeout`` is the default per-ecall timeout.
    ``home`` is the data directory (default ``ENKLAVE_HOME``). ``command`` replaces the enclave process command
    (hardware mode: the Gramine loader; see :mod:`enklave.deploy.gramine`), ``transport`` is ``"fd"`` or ``"tcp"``
    (hardware mode needs tcp).

    Raises :class:`~enklave.errors.InvalidBundle` / :class:`~enklave.errors.LaunchError` for a bad bundle, the
    enclave's own start-up error type when it fails to start, and EnclaveCrashedError when it dies on the way.
    """
    env = os.environ if environ is None else environ
    resolved = resolve_mode(mode, environ=env)
    path = Path(bundle).resolve()
    signed = load_bundle(path)
    if resolved == "sgx" and command is None:
        command = gramine_command(path.parent, signed.config.name)
    launched = launch(
        signed.config,
        bundle=path,
        mode=resolved,
        home=Path(home) if home is not None else data_home(env),
        environ=env,
        command=command,
        transport=transport or ("tcp" if resolved == "sgx" else "fd"),
        connect_timeout=start_timeout,
    )
    max_frame = signed.config.max_message_size + FRAME_OVERHEAD
    channels = [Channel(sock, max_frame) for sock in launched.sockets]
    try:
        info = _hello(channels[0], start_timeout, launched.process)
    except BaseException:
        for channel in channels:
            channel.close()
        stop(launched.process, grace=1.0)
        raise
    # In simulation the platform takes the identity from the SIGSTRUCT, so a mismatch means the enclave process
    # measured something else than this host did: refuse to talk to it.
    if info.mode == "sim" and info.mr_enclave != signed.mr_enclave:
        for channel in channels:
            channel.close()
        stop(launched.process, grace=1.0)
        raise EnclaveCrashedError("the enclave reported another MRENCLAVE than the bundle's")
    missing = sorted(set(ocalls or {}) - set(info.ocalls))
    if missing:
        for channel in channels:
            channel.close()
        stop(launched.process, grace=1.0)
        raise UsageError(f"the enclave declares no ocall named {', '.join(missing)}")
    return Enclave(launched.process, channels, info, ocalls=ocalls or {}, timeout=timeout)


def _hello(channel: Channel, timeout: float, process: subprocess.Popen[bytes]) -> EnclaveInfo:
    channel.sock.settimeout(timeout)
    try:
        message = channel.receive()
    except TimeoutError:
        raise EnclaveCrashedError(f"the enclave did not start within {timeout} s") from None
    except ChannelClosed:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        raise EnclaveCrashedError(f"the enclave process {describe_exit(process)} during start-up") from None
    finally:
        channel.sock.settimeout(None)
    if message[0] == Kind.FATAL and len(message) == 3:
        raise start_error(message[1], message[2])
    if message[0] != Kind.HELLO or len(message) != 2 or not isinstance(message[1], dict):
        raise BoundaryError("the enclave did not start with its interface description")
    return _info(message[1])


_MEASUREMENT_SIZE = 32  # MRENCLAVE and MRSIGNER are SHA-256 values
_MAX_U16 = 0xFFFF  # ISV product id and ISV SVN are 16-bit


def _info(hello: dict[str, Any]) -> EnclaveInfo:
    # The enclave process is started by the host but speaks for the enclave: every field is checked for its
    # exact type and range, not coerced (bytes(2**40) would allocate a terabyte, int(1.5) would truncate).
    mode, simulated = hello.get("mode"), hello.get("simulated")
    mr_enclave, mr_signer = hello.get("mr_enclave"), hello.get("mr_signer")
    isv_prod_id, isv_svn = hello.get("isv_prod_id"), hello.get("isv_svn")
    ecall_specs, ocall_specs = hello.get("ecalls"), hello.get("ocalls")
    if not (
        isinstance(mode, str) and type(simulated) is bool
        and isinstance(mr_enclave, bytes) and len(mr_enclave) == _MEASUREMENT_SIZE
        and isinstance(mr_signer, bytes) and len(mr_signer) == _MEASUREMENT_SIZE
        and type(isv_prod_id) is int and 0 <= isv_prod_id <= _MAX_U16
        and type(isv_svn) is int and 0 <= isv_svn <= _MAX_U16
        and isinstance(ecall_specs, dict) and isinstance(ocall_specs, dict)
        and all(isinstance(name, str) for name in (*ecall_specs, *ocall_specs))
    ):  # fmt: skip
        raise BoundaryError("the enclave's interface description is malformed")
    try:
        ecalls = {name: FunctionSpec.from_wire(name, wire) for name, wire in ecall_specs.items()}
        ocalls = {name: FunctionSpec.from_wire(name, wire) for name, wire in ocall_specs.items()}
        return EnclaveInfo(
            mode=mode,
            simulated=simulated,
            mr_enclave=MrEnclave(mr_enclave),
            mr_signer=MrSigner(mr_signer),
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            ecalls=ecalls,
            ocalls=ocalls,
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise BoundaryError("the enclave's interface description is malformed") from exc
