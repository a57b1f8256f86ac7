"""The enclave process: ``python -I -m enklave.runtime.enclave_main``.

The host starts this with an empty environment except for:

``ENKLAVE_BUNDLE``   path of the signed bundle;
``ENKLAVE_CHANNEL``  how to reach the host: ``fd:3,4,...`` (inherited sockets, one per TCS) or
                     ``tcp:127.0.0.1:PORT:TOKEN`` (connect once per TCS and present the token first; the
                     form Gramine needs, since its UNIX sockets do not reach processes outside the enclave);
``ENKLAVE_MODE``     ``sim`` or ``sgx``;
``ENKLAVE_HOME``     the data directory (simulation mode: where the simulated CPU keeps its keys);
and the variables the enclave configuration's ``env`` list names.

Start-up follows the SGX launch: (1) read the bundle and check what EINIT checks (measurement and SIGSTRUCT
signature); (2) bring up the platform, whose identity comes from the SIGSTRUCT in simulation and from the CPU on
hardware; (3) import the entry module from the measured bytes; (4) send the interface to the host (HELLO) on the
first channel; (5) serve each channel on its own thread, one ecall at a time, until the host closes it. A failure
before (4) is sent as a FATAL message, so the host raises the same error type, and the process exits with 1.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import enklave.enclave as api
from enklave.errors import BoundaryError, EnklaveError, PlatformError, UsageError
from enklave.platform._base import Platform
from enklave.runtime._importer import BundleImporter
from enklave.runtime._wire import Channel, ChannelClosed, Kind
from enklave.runtime.bundle import Bundle, load_bundle

__all__ = ["FRAME_OVERHEAD", "TOKEN_SIZE", "connect_channels", "main", "serve"]

# A frame holds the CBOR envelope around the arguments; this much room is allowed above max_message_size.
FRAME_OVERHEAD = 4096
TOKEN_SIZE = 32


def connect_channels(spec: str, count: int) -> list[socket.socket]:
    """Open the ``count`` sockets that ``ENKLAVE_CHANNEL`` describes; raises UsageError when it is malformed."""
    kind, _, rest = spec.partition(":")
    if kind == "fd":
        fds = [int(part) for part in rest.split(",") if part.isdigit()]
        if len(fds) != count:
            raise UsageError(f"ENKLAVE_CHANNEL names {len(fds)} sockets, the enclave has {count} threads")
        return [socket.socket(fileno=fd) for fd in fds]
    if kind == "tcp":
        host, port, token = rest.rsplit(":", 2)
        secret = bytes.fromhex(token)
        if len(secret) != TOKEN_SIZE:
            raise UsageError("ENKLAVE_CHANNEL token must be 32 bytes of hex")
        socks = []
        for index in range(count):
            sock = socket.create_connection((host, int(port)), timeout=30)
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(secret + index.to_bytes(2, "big"))
            socks.append(sock)
        return socks
    raise UsageError("ENKLAVE_CHANNEL must start with 'fd:' or 'tcp:'")


def _platform(mode: str, bundle: Bundle, environ: Mapping[str, str]) -> Platform:
    if mode == "sim":
        # Imported here: an enclave loads only the platform it runs on.
        from enklave.platform.simulated import SimulatedPlatform  # noqa: PLC0415

        home = environ.get("ENKLAVE_HOME")
        return SimulatedPlatform.launch(bundle.report_body(), home=Path(home) if home else None)
    if mode == "sgx":
        from enklave.platform.gramine import GraminePlatform  # noqa: PLC0415

        return GraminePlatform()
    raise PlatformError(f"unknown enclave mode {mode!r}")


def _interface(platform: Platform) -> dict[str, Any]:
    identity = platform.identity
    return {
        "ecalls": {name: reg.spec.to_wire() for name, reg in api._ecalls.items()},
        "ocalls": {name: spec.to_wire() for name, spec in api._ocalls.items()},
        "mode": platform.mode,
        "simulated": platform.simulated,
        "mr_enclave": identity.mr_enclave,
        "mr_signer": identity.mr_signer,
        "isv_prod_id": identity.isv_prod_id,
        "isv_svn": identity.isv_svn,
        "pid": os.getpid(),
    }


def _error(kind: str, exc: BaseException, *, disclose: bool = True) -> list[Any]:
    # A production enclave tells the host only the type of an exception from enclave code: a message may quote a
    # secret (int(secret) fails with the secret in it). enklave's own errors never carry secrets, and
    # PublicError is enclave code saying that its message may be shown.
    if disclose or isinstance(exc, (EnklaveError, api.PublicError)):
        return [Kind.ERROR, kind, type(exc).__name__, str(exc)]
    return [Kind.ERROR, kind, type(exc).__name__, "(message withheld: not a debug enclave)"]


def serve(channel: Channel, *, debug: bool) -> None:
    """Serve ecalls on one channel (one TCS) until the host closes it.

    ``debug`` is the enclave's DEBUG attribute: only a debug enclave discloses its exception messages.
    """
    api._tcs.channel = channel
    ecalls = api._ecalls
    while True:
        try:
            message = channel.receive()
        except ChannelClosed:
            return
        except BoundaryError as exc:
            reply = _error("boundary", exc)
        else:
            reply = _dispatch(message, ecalls, debug)
        try:
            channel.send(reply)
        except ChannelClosed:
            return
        except BoundaryError as exc:  # The result is too large for a frame: say so instead.
            channel.send(_error("ecall", exc))


def _dispatch(message: list[Any], ecalls: Mapping[str, Any], debug: bool) -> list[Any]:
    # 1. Only CALL is expected between ecalls; anything else is a confused or hostile host.
    if message[0] != Kind.CALL or len(message) != 3 or type(message[1]) is not str:
        return _error("boundary", BoundaryError("expected an ecall message"))
    registration = ecalls.get(message[1])
    if registration is None:
        return _error("boundary", BoundaryError(f"the enclave has no ecall {message[1]!r}"))
    # 2. Check every argument against the declared types before enclave code sees it.
    try:
        args = registration.spec.check_args(message[2])
    except BoundaryError as exc:
        return _error("boundary", exc)
    # 3. Run the enclave function; its exceptions go back as typed errors, the enclave keeps running.
    try:
        result = registration.function(*args)
    except (Exception, SystemExit) as exc:
        return _error("ecall", exc, disclose=debug)
    # 4. Check the result too, so an enclave bug cannot send the host something the interface does not promise.
    try:
        return [Kind.RETURN, registration.spec.check_result(result)]
    except BoundaryError as exc:
        return _error("ecall", exc)


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run the enclave process; returns the exit status."""
    env = os.environ if environ is None else environ
    bundle_path = env.get("ENKLAVE_BUNDLE", "")
    try:
        bundle = load_bundle(bundle_path)
    except EnklaveError as exc:
        # Without a bundle there is no thread count: tell the host on the first channel only.
        _fatal_first(env.get("ENKLAVE_CHANNEL", ""), exc)
        return 1
    config = bundle.config
    channels = [
        Channel(sock, config.max_message_size + FRAME_OVERHEAD)
        for sock in connect_channels(env.get("ENKLAVE_CHANNEL", ""), config.threads)
    ]
    try:
        platform = _platform(env.get("ENKLAVE_MODE", "sim"), bundle, env)
        api._context = api._Context(platform, bundle.files)
        BundleImporter(bundle.files).install()
        importlib.import_module(config.entry)
        hello = _interface(platform)
    except Exception as exc:  # Any start-up failure, including the enclave module's own, goes to the host.
        channels[0].send([Kind.FATAL, type(exc).__name__, str(exc)])
        return 1
    channels[0].send([Kind.HELLO, hello])
    debug = platform.identity.debug
    threads = [
        threading.Thread(target=serve, args=(ch,), kwargs={"debug": debug}, name=f"tcs-{i}", daemon=True)
        for i, ch in enumerate(channels)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0


def _fatal_first(spec: str, exc: BaseException) -> None:
    try:
        sock = connect_channels(spec, 1)[0] if spec.startswith("tcp:") else _first_fd(spec)
        Channel(sock, 1 << 16).send([Kind.FATAL, type(exc).__name__, str(exc)])
    except (OSError, ValueError, EnklaveError):
        print(f"enklave enclave: {type(exc).__name__}: {exc}", file=sys.stderr)


def _first_fd(spec: str) -> socket.socket:
    first = spec.partition(":")[2].split(",")[0]
    return socket.socket(fileno=int(first))


if __name__ == "__main__":
    sys.exit(main())
