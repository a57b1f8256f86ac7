"""TLS that ends inside the enclave: the enclave's session table, and the host's relay that feeds it.

The host owns the sockets but must never see plaintext, so it only moves TLS records: :class:`TlsRelay` (host
side) accepts TCP connections and, for each, calls three ecalls that the enclave module defines and delegates to
a :class:`TlsSessions` (enclave side)::

    # enclave.py
    SESSIONS = TlsSessions.http(handle)     # handle(method, target, headers, body) -> (status, headers, body)
    SESSIONS.declare_ecalls()               # tls_open() -> int, tls_feed(session, records) -> bytes,
                                            # tls_close(session) -> bytes

    # host.py
    with host.load(bundle) as enclave, serve(enclave, "0.0.0.0", 8443) as relay:
        relay.wait()

The TLS endpoint (:class:`~enklave.channels.engine.TlsEngine`) and its RA-TLS key live in the enclave; the key is
made there and is never returned by any ecall. Session ids are visible to the host and need not be secret: a host
that mixes them up, replays records or feeds garbage only breaks the TLS connections it relays, because every
record is authenticated with keys the host does not have.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Final, Protocol

from enklave.channels._relay_host import READ_SIZE, TlsRelay, serve
from enklave.channels._relay_http import HttpApp, HttpLimits, HttpSession
from enklave.channels.engine import EngineState, TlsEngine
from enklave.channels.ratls import (
    AttestedCertificate,
    PeerVerifier,
    VerifiedPeer,
    create_attested_certificate,
)
from enklave.enclave import MaxSize
from enklave.enclave import ecall as _declare_ecall
from enklave.enclave import platform as _enclave_platform
from enklave.errors import BoundaryError, ChannelError, UsageError

__all__ = [
    "MAX_FEED",
    "MAX_SESSIONS",
    "READ_SIZE",
    "HttpApp",
    "HttpLimits",
    "HttpSession",
    "SessionHandler",
    "TlsRelay",
    "TlsSessions",
    "serve",
]

#: The default bound on the records one feed call carries (declare the same ``MaxSize`` on the ecall).
MAX_FEED: Final = 1024 * 1024
#: The default bound on the number of TLS sessions open at once in one enclave.
MAX_SESSIONS: Final = 256


class SessionHandler(Protocol):
    """The application behind one TLS session (the byte-stream form).

    :meth:`received` gets the plaintext as it arrives, in pieces of any size, and returns the plaintext to send
    back (possibly empty). Once :attr:`closed` is true the session is closed after the replies so far are sent.
    """

    def received(self, data: bytes) -> bytes:
        """The reply to ``data``; raising ends the session (the exception reaches the host's feed ecall)."""
        ...

    @property
    def closed(self) -> bool:
        """True once the application wants the connection to end."""
        ...


#: Makes the handler of a session when its handshake completes; gets the verified client with mutual RA-TLS.
HandlerFactory = Callable[[VerifiedPeer | None], SessionHandler]


@dataclass(slots=True)
class _Session:
    engine: TlsEngine
    # One call at a time per session: a TLS engine is not thread-safe, and a host that feeds one session from two
    # enclave threads at once gets a refusal rather than blocking a thread.
    lock: threading.Lock = field(default_factory=threading.Lock)
    handler: SessionHandler | None = None
    ended: bool = False


class TlsSessions:
    """The enclave's TLS server: an RA-TLS certificate, a bounded table of sessions, and the application.

    Without ``certificate``, one is made inside the enclave (a fresh key and a quote from
    :func:`enklave.enclave.platform`) when the first session opens, and made again once half of ``validity`` has
    passed, so a long-running server never presents an expired certificate. With ``verifier``, clients must
    present an RA-TLS certificate it accepts (mutual RA-TLS) and the handler factory gets the verified peer.

    Thread-safe: the enclave may serve ecalls for different sessions on several threads at once.
    """

    def __init__(
        self,
        handler: HandlerFactory,
        *,
        certificate: AttestedCertificate | None = None,
        verifier: PeerVerifier | None = None,
        max_sessions: int = MAX_SESSIONS,
        max_feed: int = MAX_FEED,
        validity: timedelta = timedelta(days=1),
    ) -> None:
        if type(max_sessions) is not int or max_sessions <= 0:
            raise UsageError("max_sessions must be a positive int")
        if type(max_feed) is not int or max_feed <= 0:
            raise UsageError("max_feed must be a positive int")
        if validity <= timedelta(0):
            raise UsageError("validity must be positive")
        self._handler = handler
        self._fixed = certificate
        self._verifier = verifier
        self._max_sessions = max_sessions
        self._max_feed = max_feed
        self._validity = validity
        self._certificate: AttestedCertificate | None = certificate
        self._made_at = 0.0
        self._sessions: dict[int, _Session] = {}
        self._lock = threading.Lock()

    @classmethod
    def http(
        cls,
        app: HttpApp,
        *,
        limits: HttpLimits | None = None,
        certificate: AttestedCertificate | None = None,
        verifier: PeerVerifier | None = None,
        max_sessions: int = MAX_SESSIONS,
        max_feed: int = MAX_FEED,
        validity: timedelta = timedelta(days=1),
    ) -> TlsSessions:
        """Sessions that speak HTTP/1.1 to ``app`` (see :class:`HttpSession`), within ``limits``; the other
        options are the constructor's."""
        return cls(
            lambda _peer: HttpSession(app, limits),
            certificate=certificate,
            verifier=verifier,
            max_sessions=max_sessions,
            max_feed=max_feed,
            validity=validity,
        )

    @property
    def certificate(self) -> AttestedCertificate:
        """The certificate (and key) new sessions present; made now if there is none yet.

        Enclave code only: the private key must never be returned to the host. Raises
        :class:`~enklave.errors.UsageError` outside an enclave when no certificate was given.
        """
        with self._lock:
            return self._current_certificate()

    def declare_ecalls(self, prefix: str = "tls") -> None:
        """Declare the three ecalls a :class:`TlsRelay` calls, delegating to these sessions.

        They are ``{prefix}_open() -> int``, ``{prefix}_feed(session: int, records: Annotated[bytes,
        MaxSize(max_feed)]) -> bytes`` and ``{prefix}_close(session: int) -> bytes``; the records' bound is
        checked at the boundary, before any of them runs. Call it once, when the enclave module is imported.
        Raises :class:`UsageError` when a name is already declared or ``prefix`` is not an identifier.
        """
        if not prefix.isidentifier():
            raise UsageError(f"prefix {prefix!r} is not a Python identifier")

        def open_session() -> int:
            return self.open()

        def feed(session: int, records: bytes) -> bytes:
            return self.feed(session, records)

        def close(session: int) -> bytes:
            return self.close(session)

        # Real annotation objects, since the bound is this instance's and get_type_hints cannot see closures.
        open_session.__annotations__ = {"return": int}
        feed.__annotations__ = {
            "session": int,
            "records": Annotated[bytes, MaxSize(self._max_feed)],
            "return": bytes,
        }
        close.__annotations__ = {"session": int, "return": bytes}
        for suffix, function in (("open", open_session), ("feed", feed), ("close", close)):
            function.__name__ = function.__qualname__ = f"{prefix}_{suffix}"
            function.__doc__ = f"The TLS relay's {suffix} call, delegated to TlsSessions.{suffix}."
            _declare_ecall(function)

    def __len__(self) -> int:
        """The number of sessions in the table (open, or ended and not yet closed)."""
        with self._lock:
            return len(self._sessions)

    def open(self) -> int:
        """Start a TLS session; returns its id for :meth:`feed` and :meth:`close`.

        Raises :class:`ChannelError` when ``max_sessions`` sessions are already in the table.
        """
        with self._lock:
            if len(self._sessions) >= self._max_sessions:
                raise ChannelError(f"too many TLS sessions: {self._max_sessions} are open")
            engine = TlsEngine.server(self._current_certificate(), verifier=self._verifier)
            while True:
                # Random ids are never reused, so a stale id from the host cannot reach a newer session.
                session_id = secrets.randbits(63)
                if session_id not in self._sessions:
                    break
            self._sessions[session_id] = _Session(engine)
            return session_id

    def feed(self, session: int, records: bytes) -> bytes:
        """Give session ``session`` the bytes that arrived from the network; returns the bytes to send back.

        Steps: (1) check the input and find the session; (2) advance the handshake, and when it completes (and
        the client, with mutual RA-TLS, was appraised) make the session's handler; (3) decrypt the application
        data and pass it to the handler, encrypting its replies; (4) when the client or the handler closed,
        send close_notify and end the session. The returned bytes are TLS records only.

        Raises :class:`BoundaryError` when ``records`` is over ``max_feed`` bytes, :class:`ChannelError` for an
        unknown, busy or ended session and when TLS fails, and the verification error of a client certificate
        that fails appraisal. After any error the session is ended: call :meth:`close` to get the TLS alert to
        send and to free the slot.
        """
        # 1. Input and session.
        if type(records) is not bytes:
            raise UsageError("records must be bytes")
        if len(records) > self._max_feed:
            raise BoundaryError(
                f"{len(records)} bytes of records in one feed, over the limit {self._max_feed}"
            )
        entry = self._find(session)
        if not entry.lock.acquire(blocking=False):
            raise ChannelError("the TLS session is busy with another call")
        try:
            if entry.ended:
                raise ChannelError("the TLS session has ended")
            try:
                return self._advance(entry, records)
            except BaseException:
                entry.ended = True
                raise
        finally:
            entry.lock.release()

    def close(self, session: int) -> bytes:
        """End session ``session`` and free its slot; returns the last records to send (close_notify or an
        alert), ``b""`` for a session that is not in the table (closing twice is harmless)."""
        with self._lock:
            entry = self._sessions.pop(session, None)
        if entry is None:
            return b""
        # A feed running on another thread finishes first; it is bounded by max_feed.
        with entry.lock:
            entry.engine.close()
            return entry.engine.pending_records()

    def _advance(self, entry: _Session, records: bytes) -> bytes:
        engine = entry.engine
        engine.receive_records(records)
        # 2. Handshake; the engine appraises a client certificate before it reports the handshake done.
        if entry.handler is None:
            if not engine.handshake():
                return engine.pending_records()
            entry.handler = self._handler(engine.peer)
        handler = entry.handler
        # 3. Application data, bounded by what this feed carried.
        while not handler.closed:
            data = engine.read()
            if not data:
                break
            reply = handler.received(data)
            if reply:
                engine.write(reply)
        # 4. Either side closing ends the session; the next feed is refused.
        if handler.closed or engine.state is not EngineState.OPEN:
            engine.close()
            entry.ended = True
        return engine.pending_records()

    def _find(self, session: int) -> _Session:
        if type(session) is not int:
            raise UsageError("session must be an int")
        with self._lock:
            entry = self._sessions.get(session)
        if entry is None:
            raise ChannelError("no such TLS session")
        return entry

    def _current_certificate(self) -> AttestedCertificate:
        """The certificate for new sessions; the caller holds ``self._lock``."""
        if self._fixed is not None:
            return self._fixed
        age = time.monotonic() - self._made_at
        if self._certificate is None or age > self._validity.total_seconds() / 2:
            # The key is made here, inside the enclave; a fresh one with each renewal.
            self._certificate = create_attested_certificate(_enclave_platform(), validity=self._validity)
            self._made_at = time.monotonic()
        return self._certificate
