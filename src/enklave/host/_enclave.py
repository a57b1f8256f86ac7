"""The host's handle on a running enclave: ecalls (sync and async), ocall serving, timeouts, crash reporting."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from enklave import errors
from enklave.errors import (
    BoundaryError,
    EcallError,
    EcallTimeout,
    EnclaveCrashedError,
    EnklaveError,
    UsageError,
)
from enklave.host._process import describe_exit, stop
from enklave.runtime._types import FunctionSpec
from enklave.runtime._wire import Channel, ChannelClosed, Kind
from enklave.sgx.report import MrEnclave, MrSigner

__all__ = ["Enclave", "EnclaveInfo"]

_log = logging.getLogger("enklave.host")


@dataclass(frozen=True, slots=True)
class EnclaveInfo:
    """What the enclave reported about itself at start-up (informational: trust comes from a verified quote)."""

    mode: str
    simulated: bool
    mr_enclave: MrEnclave
    mr_signer: MrSigner
    isv_prod_id: int
    isv_svn: int
    ecalls: Mapping[str, FunctionSpec]
    ocalls: Mapping[str, FunctionSpec]


class _Calls:
    """``enclave.ecall.NAME(*args)``: attribute access returns a callable for each declared ecall."""

    def __init__(self, enclave: Enclave, asynchronous: bool) -> None:
        self._enclave = enclave
        self._async = asynchronous

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in self._enclave.info.ecalls:
            raise AttributeError(f"the enclave declares no ecall {name!r}")
        method = self._enclave.acall if self._async else self._enclave.call
        bound = functools.partial(method, name)
        # Cache the callable on the instance: later lookups skip __getattr__.
        setattr(self, name, bound)
        return bound

    def __dir__(self) -> list[str]:
        return sorted(self._enclave.info.ecalls)


class Enclave:
    """A loaded enclave. Use :func:`enklave.host.load` to get one, as a context manager.

    ``enclave.ecall.NAME(*args)`` calls an ecall and waits; ``await enclave.aecall.NAME(*args)`` does the same
    from asyncio. At most ``threads`` (the TCS count in enklave.toml) ecalls run at once; more wait for a free
    thread. Enclave exceptions arrive as :class:`~enklave.errors.EcallError`, rejected arguments as
    :class:`~enklave.errors.BoundaryError`, a dead enclave as :class:`~enklave.errors.EnclaveCrashedError`.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        channels: list[Channel],
        info: EnclaveInfo,
        *,
        ocalls: Mapping[str, Callable[..., Any]],
        timeout: float | None,
    ) -> None:
        self._process = process
        self._channels = channels
        self._free: queue.SimpleQueue[Channel] = queue.SimpleQueue()
        for channel in channels:
            self._free.put(channel)
        self.info = info
        self._ocalls = dict(ocalls)
        self._timeout = timeout
        self._dead: str | None = None
        self._closed = False
        self._lock = threading.Lock()
        # Async calls waiting on the event loop for their answer; close() wakes them (a closed socket is dropped
        # from the loop's poll set without an event, so nothing else would).
        self._waiting: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self.ecall = _Calls(self, asynchronous=False)
        self.aecall = _Calls(self, asynchronous=True)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The enclave process id."""
        return self._process.pid

    @property
    def alive(self) -> bool:
        """True while the enclave process runs and the handle is open."""
        return not self._closed and self._dead is None and self._process.poll() is None

    @property
    def threads(self) -> int:
        """The number of enclave threads (TCS): the most ecalls that run at once."""
        return len(self._channels)

    def close(self) -> None:
        """Close the channels, let the enclave process exit (killing it after a grace period). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiting = list(self._waiting)
        for channel in self._channels:
            channel.close()
        for loop, waiter in waiting:
            with contextlib.suppress(RuntimeError):  # That loop has closed: nobody waits there any more.
                loop.call_soon_threadsafe(_settle, waiter, True)
        stop(self._process)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Enclave:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    # -- calls -------------------------------------------------------------------------------------------------

    def call(self, name: str, *args: Any, timeout: float | None = None) -> Any:
        """Call ecall ``name``; ``timeout`` (seconds, default: the one given to load) bounds the whole call.

        On :class:`~enklave.errors.EcallTimeout` the enclave thread stays busy until the call returns (as a TCS
        does); the late result is discarded.
        """
        spec = self._spec(name)
        limit = self._timeout if timeout is None else timeout
        deadline = None if limit is None else time.monotonic() + limit
        try:
            channel = self._free.get(timeout=limit)
        except queue.Empty:
            raise EcallTimeout(
                f"ecall {name!r}: all {self.threads} enclave threads stayed busy for {limit} s"
            ) from None
        return self._finish(channel, spec, limit, lambda: self._send_and_wait(channel, spec, args, deadline))

    def _send_and_wait(
        self, channel: Channel, spec: FunctionSpec, args: tuple[Any, ...], deadline: float | None
    ) -> Any:
        self._check_usable()
        channel.send([Kind.CALL, spec.name, list(args)])
        return self._await_reply(channel, spec, deadline)

    def _finish(
        self, channel: Channel, spec: FunctionSpec, limit: float | None, work: Callable[[], Any]
    ) -> Any:
        """Run ``work`` (the call on ``channel``), turning channel failures into the caller's errors, and give the
        channel back when it is still in step."""
        healthy = True
        try:
            return work()
        except TimeoutError:
            healthy = False
            raise self._timed_out(channel, spec, limit) from None
        except ChannelClosed:
            healthy = False
            raise self._crashed() from None
        except _Desynchronized as exc:
            healthy = False
            raise self._desynchronized(channel, exc) from None
        finally:
            if healthy:
                self._free.put(channel)

    async def acall(self, name: str, *args: Any, timeout: float | None = None) -> Any:
        """:meth:`call` from asyncio; the event loop keeps going while the enclave works.

        A call whose arguments and answer are small runs on the event loop itself: the request is written to the
        channel (it fits the empty socket buffer, so the write does not block), the loop wakes when the answer
        arrives and reads it when it has arrived whole, which spares two thread hand-overs per call. A call with
        large arguments or answer, an answer that arrives in pieces, a call that makes ocalls (host functions may
        block) and one that finds every enclave thread busy continue on a worker thread.
        """
        spec = self._spec(name)
        loop = asyncio.get_running_loop()
        if not _inline(args):
            return await self._on_thread(loop, self.call, name, *args, timeout=timeout)
        try:
            channel = self._free.get_nowait()
        except queue.Empty:
            return await self._on_thread(loop, self.call, name, *args, timeout=timeout)
        limit = self._timeout if timeout is None else timeout
        deadline = None if limit is None else time.monotonic() + limit
        handed_over = False
        try:
            self._check_usable()
            channel.send([Kind.CALL, name, list(args)])
            while True:
                ready = channel.frame_ready(_INLINE_FRAME)
                if ready is False:
                    if not await self._readable(loop, channel.sock, deadline):
                        raise TimeoutError
                    if self._closed:
                        raise ChannelClosed("the channel is closed")
                    continue
                message = self._receive(channel) if ready else None
                if message is not None and message[0] != Kind.OCALL:
                    result = self._answer(channel, spec, message)
                    self._free.put(channel)
                    return result
                # The rest may block (an ocall's host function, a large answer): a worker thread finishes it.
                handed_over = True
                return await self._on_thread(
                    loop, self._finish, channel, spec, limit,
                    functools.partial(self._await_reply, channel, spec, deadline, message),
                )  # fmt: skip
        except ChannelClosed:
            raise await self._acrashed(loop) from None
        except _Desynchronized as exc:
            raise self._desynchronized(channel, exc) from None
        except EnklaveError:
            # The enclave's own error answer, or an unusable handle: the channel is still in step.
            if not handed_over:
                self._free.put(channel)
            raise
        except TimeoutError:
            raise self._timed_out(channel, spec, limit) from None
        except OSError:
            # The channel's socket went away under the loop (the handle is being closed, or the enclave died).
            raise await self._acrashed(loop) from None
        except asyncio.CancelledError:
            # The caller gave up; the enclave thread finishes the call and its answer is dropped.
            if not handed_over:
                self._drain_later(channel, spec)
            raise

    async def _readable(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, deadline: float | None
    ) -> bool:
        """Wait until ``sock`` has bytes to read or the handle closes (True), or ``deadline`` (time.monotonic)
        passes (False)."""
        waiter: asyncio.Future[bool] = loop.create_future()
        entry = (loop, waiter)
        with self._lock:
            if self._closed:
                return True
            self._waiting.add(entry)
        fd = sock.fileno()
        loop.add_reader(fd, _settle, waiter, True)
        timer = (
            None
            if deadline is None
            else loop.call_later(max(deadline - time.monotonic(), 0), _settle, waiter, False)
        )
        try:
            return await waiter
        finally:
            with self._lock:
                self._waiting.discard(entry)
            loop.remove_reader(fd)
            if timer is not None:
                timer.cancel()
            # Some loops (uvloop: libuv's uv_poll_init) switch a polled descriptor to non-blocking mode and leave
            # it so; the channel's other users (worker threads, call()) rely on blocking reads and writes. A
            # socket closed meanwhile has no mode left to restore.
            with contextlib.suppress(OSError):
                sock.setblocking(True)

    async def _acrashed(self, loop: asyncio.AbstractEventLoop) -> EnclaveCrashedError:
        # _crashed() waits for the process to exit, which must not stall the loop; a closed handle answers at once.
        if self._closed:
            return self._crashed()
        crashed: EnclaveCrashedError = await self._on_thread(loop, self._crashed)
        return crashed

    async def _on_thread(
        self, loop: asyncio.AbstractEventLoop, function: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="enklave-ecall")
        return await loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))

    def _spec(self, name: str) -> FunctionSpec:
        spec = self.info.ecalls.get(name)
        if spec is None:
            raise UsageError(f"the enclave declares no ecall {name!r}")
        self._check_usable()
        return spec

    def _timed_out(self, channel: Channel, spec: FunctionSpec, limit: float | None) -> EcallTimeout:
        # The enclave thread stays busy until the call returns (as a TCS does): its channel comes back after.
        self._drain_later(channel, spec)
        return EcallTimeout(f"ecall {spec.name!r} did not return within {limit} s")

    def _desynchronized(self, channel: Channel, exc: _Desynchronized) -> BoundaryError:
        # The enclave broke the protocol: nothing more on this channel (or from this enclave) can be trusted.
        channel.close()
        self._dead = f"the enclave broke the channel protocol ({exc}); load it again to continue"
        return BoundaryError(self._dead)

    def _check_usable(self) -> None:
        if self._closed:
            raise UsageError("the enclave was closed")
        if self._dead is not None:
            raise EnclaveCrashedError(self._dead)

    def _crashed(self) -> EnclaveCrashedError:
        if self._closed:
            return EnclaveCrashedError("the enclave was closed while the call was running")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=2)
        message = f"the enclave process {describe_exit(self._process)}; load it again to continue"
        self._dead = message
        _log.warning("enclave %d: %s", self._process.pid, message)
        return EnclaveCrashedError(message)

    def _await_reply(
        self, channel: Channel, spec: FunctionSpec, deadline: float | None, first: list[Any] | None = None
    ) -> Any:
        """The call's result, serving the enclave's ocalls meanwhile; ``first`` is a message already received."""
        sock = channel.sock
        message = first
        try:
            while True:
                if message is None:
                    if deadline is not None:
                        sock.settimeout(max(deadline - time.monotonic(), 0.000_001))
                    message = self._receive(channel)
                result = self._answer(channel, spec, message)
                if result is not _MORE:
                    return result
                message = None
        finally:
            if deadline is not None:
                sock.settimeout(None)

    @staticmethod
    def _receive(channel: Channel) -> list[Any]:
        try:
            return channel.receive()
        except BoundaryError as exc:
            raise _Desynchronized(str(exc)) from exc

    def _answer(self, channel: Channel, spec: FunctionSpec, message: list[Any]) -> Any:
        """The result a RETURN carries, the error an ERROR carries (raised), or _MORE once an OCALL is served."""
        kind = message[0]
        if kind == Kind.RETURN and len(message) == 2:
            return spec.check_result(message[1])
        if kind == Kind.ERROR and len(message) == 4:
            raise _error_from(message[1], message[2], message[3])
        if kind == Kind.OCALL and len(message) == 3:
            self._serve_ocall(channel, message[1], message[2])
            return _MORE
        raise _Desynchronized("the enclave answered with an unexpected message")

    def _serve_ocall(self, channel: Channel, name: object, args: object) -> None:
        # The enclave waits for this answer whatever the caller's deadline: send it whole, without a timeout.
        channel.sock.settimeout(None)
        spec = self.info.ocalls.get(name) if type(name) is str else None
        handler = self._ocalls.get(name) if type(name) is str else None
        if spec is None or handler is None:
            channel.send([Kind.OCALL_ERROR, "UsageError", f"the host provides no ocall {name!r}"])
            return
        try:
            checked = spec.check_args(args)
            result = handler(*checked)
        except Exception as exc:  # The host function's failure goes back to the enclave as an OcallError.
            channel.send([Kind.OCALL_ERROR, type(exc).__name__, str(exc)])
            return
        try:
            channel.send([Kind.OCALL_RETURN, result])
        except BoundaryError as exc:
            # Nothing was written (send encodes and checks the size first): answer with the failure instead.
            channel.send([Kind.OCALL_ERROR, "BoundaryError", str(exc)])

    def _drain_later(self, channel: Channel, spec: FunctionSpec) -> None:
        """Wait for the abandoned call's reply on a background thread, then give the channel back."""

        def drain() -> None:
            try:
                self._await_reply(channel, spec, None)
            except (ChannelClosed, _Desynchronized):
                channel.close()
                return
            except EnklaveError:
                pass
            self._free.put(channel)

        threading.Thread(target=drain, name="enklave-drain", daemon=True).start()


class _Desynchronized(Exception):
    """The enclave sent a frame that does not fit the protocol at this point."""


_MORE: Any = object()
"""What :meth:`Enclave._answer` returns after serving an ocall: the call goes on."""

_INLINE_FRAME = 64 * 1024
"""The largest request or answer frame an ecall may have to run on the event loop (see :meth:`Enclave.acall`);
a free channel's socket buffer holds it whole, so writing it cannot block."""


def _inline(args: tuple[Any, ...]) -> bool:
    """Whether ``args`` surely encode within the inline frame size (only scalars, byte and text strings)."""
    size = 0
    for arg in args:
        if isinstance(arg, bytes | bytearray | memoryview):
            size += len(arg)
        elif isinstance(arg, str):
            size += 4 * len(arg)
        elif arg is not None and not isinstance(arg, int | float):
            return False
        size += 16
    return size <= _INLINE_FRAME - 1024


def _settle(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


# Errors the enclave may report by type name and that keep their type in the host.
_KNOWN: dict[str, type[EnklaveError]] = {
    name: getattr(errors, name)
    for name in (
        "LaunchError",
        "InvalidBundle",
        "PlatformError",
        "ConfigError",
        "UsageError",
        "BoundaryError",
    )
}


def _error_from(kind: object, type_name: object, message: object) -> EnklaveError:
    if type(type_name) is not str or type(message) is not str:
        return BoundaryError("the enclave sent a malformed error message")
    if kind == "boundary":
        return BoundaryError(message)
    return EcallError(message, type_name=type_name)


def start_error(type_name: object, message: object) -> EnklaveError:
    """The host-side error for a FATAL start-up message: the same type when it is a known one."""
    if type(type_name) is not str or type(message) is not str:
        return EnclaveCrashedError("the enclave failed to start and sent a malformed error")
    known = _KNOWN.get(type_name)
    if known is not None:
        return known(message)
    return EnclaveCrashedError(f"the enclave failed to start: {type_name}: {message}")
