"""Starting the enclave process and connecting its channels.

In simulation the enclave is ``python -I -m enklave.runtime.enclave_main``: isolated mode ignores ``PYTHON*``
variables and the user's site directory, the environment is empty except for the ``ENKLAVE_*`` variables and the
names the enclave configuration allows, and the channels are UNIX socket pairs the child inherits. On SGX
hardware the same module runs inside Gramine (``gramine-sgx <manifest>``), and the channels are loopback TCP
connections that the enclave opens and authenticates with a one-time token, because Gramine's UNIX sockets do not
reach processes outside the enclave.
"""

from __future__ import annotations

import hmac
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from enklave.errors import EnclaveCrashedError, PlatformError
from enklave.runtime.config import EnclaveConfig
from enklave.runtime.enclave_main import TOKEN_SIZE

__all__ = ["ENCLAVE_MODULE", "Launched", "describe_exit", "enclave_environment", "launch", "stop"]

ENCLAVE_MODULE = "enklave.runtime.enclave_main"


@dataclass(slots=True)
class Launched:
    """A started enclave process and its connected channel sockets (one per TCS, in TCS order)."""

    process: subprocess.Popen[bytes]
    sockets: list[socket.socket]


def enclave_environment(
    config: EnclaveConfig, *, bundle: Path, mode: str, channel: str, home: Path, environ: Mapping[str, str]
) -> dict[str, str]:
    """The whole environment of the enclave process: the ENKLAVE_* variables and the allowed host variables."""
    env = {name: environ[name] for name in config.env if name in environ}
    env.update({
        "ENKLAVE_BUNDLE": str(bundle),
        "ENKLAVE_CHANNEL": channel,
        "ENKLAVE_MODE": mode,
        "ENKLAVE_HOME": str(home),
    })  # fmt: skip
    return env


def launch(
    config: EnclaveConfig,
    *,
    bundle: Path,
    mode: str,
    home: Path,
    environ: Mapping[str, str],
    command: Sequence[str] | None = None,
    transport: str = "fd",
    connect_timeout: float = 60.0,
) -> Launched:
    """Start the enclave process and return it with its channels; raises PlatformError when it cannot start.

    ``command`` replaces ``python -I -m enklave.runtime.enclave_main`` (the Gramine loader in hardware mode);
    ``transport`` is ``"fd"`` (inherited socket pairs) or ``"tcp"`` (loopback, token-authenticated).
    """
    argv = list(command) if command else [sys.executable, "-I", "-m", ENCLAVE_MODULE]
    if transport == "fd":
        return _launch_fd(config, argv, bundle=bundle, mode=mode, home=home, environ=environ)
    return _launch_tcp(
        config, argv, bundle=bundle, mode=mode, home=home, environ=environ, timeout=connect_timeout
    )


def _popen(
    argv: list[str], env: dict[str, str], config: EnclaveConfig, pass_fds: Sequence[int] = ()
) -> subprocess.Popen[bytes]:
    # A debug enclave may write to the host's standard error (as a debug enclave can be inspected anyway); a
    # production enclave talks to the host only over its channels.
    output = None if config.debug else subprocess.DEVNULL
    try:
        # The command is ours (the interpreter or the Gramine loader), never taken from untrusted input.
        return subprocess.Popen(  # noqa: S603
            argv, env=env, pass_fds=pass_fds, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
            close_fds=True, start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        raise PlatformError(f"cannot start the enclave process {argv[0]!r}: {exc.strerror}") from exc


def _launch_fd(
    config: EnclaveConfig, argv: list[str], *, bundle: Path, mode: str, home: Path, environ: Mapping[str, str]
) -> Launched:
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(config.threads)]
    child_fds = [child.fileno() for _, child in pairs]
    channel = "fd:" + ",".join(str(fd) for fd in child_fds)
    env = enclave_environment(config, bundle=bundle, mode=mode, channel=channel, home=home, environ=environ)
    try:
        process = _popen(argv, env, config, pass_fds=child_fds)
    finally:
        for _, child in pairs:
            child.close()
    return Launched(process, [parent for parent, _ in pairs])


def _launch_tcp(
    config: EnclaveConfig,
    argv: list[str],
    *,
    bundle: Path,
    mode: str,
    home: Path,
    environ: Mapping[str, str],
    timeout: float,
) -> Launched:
    token = secrets.token_bytes(TOKEN_SIZE)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        channel = f"tcp:127.0.0.1:{port}:{token.hex()}"
        env = enclave_environment(
            config, bundle=bundle, mode=mode, channel=channel, home=home, environ=environ
        )
        process = _popen(argv, env, config)
        connected: dict[int, socket.socket] = {}
        deadline = time.monotonic() + timeout
        try:
            while len(connected) < config.threads:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or process.poll() is not None:
                    raise EnclaveCrashedError("the enclave process did not connect its channels")
                server.settimeout(min(remaining, 0.5))
                try:
                    sock, _ = server.accept()
                except TimeoutError:
                    continue
                index = _authenticate(sock, token, config.threads, deadline)
                if index is None or index in connected:
                    sock.close()  # Not our enclave (or a replay): ignore it and keep waiting.
                    continue
                connected[index] = sock
        except BaseException:
            for sock in connected.values():
                sock.close()
            process.kill()
            process.wait()
            raise
    return Launched(process, [connected[i] for i in range(config.threads)])


def _authenticate(sock: socket.socket, token: bytes, threads: int, deadline: float) -> int | None:
    # Each connection gets a second to greet: an idle local connection must not stall the launch.
    sock.settimeout(max(0.1, min(1.0, deadline - time.monotonic())))
    greeting = b""
    try:
        while len(greeting) < TOKEN_SIZE + 2:
            chunk = sock.recv(TOKEN_SIZE + 2 - len(greeting))
            if not chunk:
                return None
            greeting += chunk
    except OSError:
        return None
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    index = int.from_bytes(greeting[TOKEN_SIZE:], "big")
    if not hmac.compare_digest(greeting[:TOKEN_SIZE], token) or index >= threads:
        return None
    return index


def describe_exit(process: subprocess.Popen[bytes]) -> str:
    """``exited with status 3`` / ``was killed by signal SIGKILL`` / ``is still running``."""
    code = process.poll()
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def stop(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Wait up to ``grace`` seconds for the process to exit after its channels closed, then kill it."""
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
