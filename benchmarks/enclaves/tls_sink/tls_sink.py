"""Ends TLS inside the enclave and counts bytes: an 8-byte big-endian length, then that many bytes, answered by
the 8-byte count once they all arrived (what benchmarks/channels.py's direct TLS server does too)."""

from __future__ import annotations

import struct

from enklave.channels.ratls import VerifiedPeer
from enklave.channels.relay import TlsSessions


class Counter:
    """One connection's byte count against the length its client announced."""

    def __init__(self) -> None:
        self.head = b""
        self.expected = -1
        self.count = 0

    def received(self, data: bytes) -> bytes:
        if self.expected < 0:
            need = 8 - len(self.head)
            self.head, data = self.head + data[:need], data[need:]
            if len(self.head) < 8:
                return b""
            (self.expected,) = struct.unpack(">Q", self.head)
        self.count += len(data)
        return struct.pack(">Q", self.count) if self.count >= self.expected else b""

    @property
    def closed(self) -> bool:
        return False


def _counter(_peer: VerifiedPeer | None) -> Counter:
    return Counter()


SESSIONS = TlsSessions(_counter)


SESSIONS.declare_ecalls()
