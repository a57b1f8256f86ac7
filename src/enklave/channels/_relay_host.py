"""The host's half of TLS inside the enclave: a TCP server that moves records and nothing else.

For each accepted connection, :class:`TlsRelay` opens a session in the enclave, then repeats: read at most one
chunk from the socket, pass it to the feed ecall, write what the enclave returns. It never parses, decrypts or
keeps the bytes beyond that one chunk; the host could not decrypt them anyway, since the TLS keys are in the
enclave. One thread per connection, at most ``max_connections`` of them; connections over the cap are closed at
once, so a flood costs the host a bounded number of threads and the enclave a bounded number of sessions.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from enklave.errors import EcallError, EnklaveError, TransportError, UsageError

if TYPE_CHECKING:
    from enklave.host import Enclave

__all__ = ["READ_SIZE", "TlsRelay", "serve"]

_log = logging.getLogger("enklave.channels.relay")

#: The most bytes the relay reads from a socket and feeds to the enclave at once (less if the ecall declares
#: a smaller MaxSize for its records). Each feed is one ecall, so bulk throughput grows with it: on the
#: project's 2-core VM, 64 KiB reads gave 0.4x of direct TLS and 512 KiB reads about 1.2x (the enclave
#: decrypts in its own process while the host reads the next chunk); a recv returns only what has arrived.
READ_SIZE: Final = 512 * 1024


class TlsRelay:
    """A TCP server on ``(host, port)`` that relays each connection's TLS records to an enclave's sessions.

    ``open_ecall() -> int``, ``feed_ecall(session, records) -> bytes`` and ``close_ecall(session) -> bytes``
    are the names of the enclave's ecalls (see :class:`~enklave.channels.relay.TlsSessions`). A connection
    ends when the client closes, when it is idle for ``idle_timeout`` seconds, when the enclave refuses a feed
    (TLS failed or the session ended; the enclave's last records, such as an alert, are still sent), or when
    the relay closes. Each ecall waits at most ``ecall_timeout`` seconds.

    The constructor binds and listens (use port 0 for any free port, then :attr:`port`); :meth:`start` begins
    accepting. Use it as a context manager or call :meth:`close`. Raises :class:`UsageError` when the enclave
    lacks one of the ecalls or an option is out of range, and :class:`TransportError` when the address cannot
    be bound.
    """

    def __init__(
        self,
        enclave: Enclave,
        host: str,
        port: int,
        *,
        open_ecall: str = "tls_open",
        feed_ecall: str = "tls_feed",
        close_ecall: str = "tls_close",
        max_connections: int = 128,
        read_size: int = READ_SIZE,
        idle_timeout: float = 60.0,
        ecall_timeout: float | None = 30.0,
    ) -> None:
        missing = [name for name in (open_ecall, feed_ecall, close_ecall) if name not in enclave.info.ecalls]
        if missing:
            raise UsageError(f"the enclave declares no ecall {', '.join(missing)}")
        if max_connections <= 0 or read_size <= 0 or idle_timeout <= 0:
            raise UsageError("max_connections, read_size and idle_timeout must be positive")
        params = enclave.info.ecalls[feed_ecall].params
        declared = params[1][1].limit if len(params) == 2 else None
        # A chunk the ecall would refuse at the boundary is never worth reading.
        self._read_size = min(read_size, declared) if declared else read_size
        self._enclave = enclave
        self._ecalls = (open_ecall, feed_ecall, close_ecall)
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._ecall_timeout = ecall_timeout
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._acceptor: threading.Thread | None = None
        try:
            self._listener = socket.create_server((host, port), backlog=min(max_connections, 1024))
        except OSError as exc:
            raise TransportError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        bound = self._listener.getsockname()
        self._address = (str(bound[0]), int(bound[1]))

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (host, port); it stays readable after :meth:`close`."""
        return self._address

    @property
    def port(self) -> int:
        """The bound port (the one the system chose when 0 was asked for)."""
        return self.address[1]

    @property
    def connections(self) -> int:
        """The number of connections being relayed now."""
        with self._lock:
            return len(self._connections)

    def start(self) -> TlsRelay:
        """Start accepting connections on a background thread; returns self. Idempotent."""
        with self._lock:
            if self._acceptor is None and not self._stopping.is_set():
                self._acceptor = threading.Thread(target=self._accept_loop, name="enklave-relay", daemon=True)
                self._acceptor.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the relay is closed (or ``timeout`` seconds pass); True if it is closed."""
        return self._stopped.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every connection (each session is closed in the enclave), and wait up to
        ``timeout`` seconds for the relay's threads. Idempotent."""
        self._stopping.set()
        # On Linux, shutting a listening socket down wakes the thread blocked in accept().
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            live = dict(self._connections)
            acceptor = self._acceptor
        for connection in live:
            # The connection's thread sees end of file, closes the enclave session, sends its close_notify and
            # exits; shutting down only the reading side leaves the socket able to send that.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RD)
        for thread in [*live.values(), *([acceptor] if acceptor else [])]:
            thread.join(timeout)
        self._stopped.set()

    def __enter__(self) -> TlsRelay:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _peer = self._listener.accept()
            except OSError as exc:
                if self._stopping.is_set():
                    return
                # Out of file descriptors and the like: wait a little instead of spinning.
                _log.warning("accept failed: %s", exc)
                self._stopping.wait(0.1)
                continue
            with self._lock:
                refuse = self._stopping.is_set() or len(self._connections) >= self._max_connections
                if not refuse:
                    thread = threading.Thread(
                        target=self._relay, args=(connection,), name="enklave-relay-conn", daemon=True
                    )
                    self._connections[connection] = thread
            if refuse:
                _log.warning("refused a connection: %d connections are open", self._max_connections)
                connection.close()
            else:
                thread.start()

    def _call(self, name: str, *args: Any) -> Any:
        return self._enclave.call(name, *args, timeout=self._ecall_timeout)

    def _relay(self, connection: socket.socket) -> None:
        open_ecall, feed_ecall, close_ecall = self._ecalls
        try:
            connection.settimeout(self._idle_timeout)
            try:
                session = self._call(open_ecall)
            except EnklaveError as exc:
                _log.warning("the enclave opened no TLS session: %s: %s", type(exc).__name__, exc)
                return
            try:
                while True:
                    records = connection.recv(self._read_size)
                    if not records:
                        break
                    reply = self._call(feed_ecall, session, records)
                    if reply:
                        connection.sendall(reply)
            except EcallError as exc:
                # The enclave ended the session: TLS failed, the client was refused, or the session was over.
                _log.info("TLS session ended by the enclave: %s", exc.type_name)
            except OSError as exc:
                _log.info("TLS connection dropped: %s", exc)
            except EnklaveError as exc:
                _log.warning("relaying a TLS session failed: %s: %s", type(exc).__name__, exc)
            finally:
                self._finish(connection, close_ecall, session)
        finally:
            connection.close()
            with self._lock:
                self._connections.pop(connection, None)

    def _finish(self, connection: socket.socket, close_ecall: str, session: object) -> None:
        """Close the enclave session and send its last records (close_notify or an alert), best effort."""
        try:
            last = self._call(close_ecall, session)
        except EnklaveError as exc:
            _log.info("closing a TLS session failed: %s", type(exc).__name__)
            return
        if last:
            with contextlib.suppress(OSError):
                connection.sendall(last)


def serve(
    enclave: Enclave,
    host: str,
    port: int,
    *,
    open_ecall: str = "tls_open",
    feed_ecall: str = "tls_feed",
    close_ecall: str = "tls_close",
    max_connections: int = 128,
    read_size: int = READ_SIZE,
    idle_timeout: float = 60.0,
    ecall_timeout: float | None = 30.0,
) -> TlsRelay:
    """Bind ``(host, port)`` and start relaying TLS connections to ``enclave``; returns the running
    :class:`TlsRelay` (a context manager). Raises what :class:`TlsRelay` raises."""
    return TlsRelay(
        enclave,
        host,
        port,
        open_ecall=open_ecall,
        feed_ecall=feed_ecall,
        close_ecall=close_ecall,
        max_connections=max_connections,
        read_size=read_size,
        idle_timeout=idle_timeout,
        ecall_timeout=ecall_timeout,
    ).start()
