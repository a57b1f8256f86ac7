"""The storage interface every enklave service keeps its state behind.

Services need little: named records (policies, sealed key blobs, management certificates, wrapped keys) and an
append-only log (the key broker's audit trail). Values are bytes the service has already encoded (and, for
anything secret, sealed): storage never sees a secret in clear. SQLite is the embedded default; PostgreSQL lets
several replicas behind a load balancer share one state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = ["LogRecord", "Storage"]


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One entry of an append-only log: its position (1, 2, ... per log) and its bytes."""

    sequence: int
    data: bytes


class Storage(ABC):
    """Records by (namespace, key), and append-only logs. Implementations are safe to share between threads and
    raise :class:`~enklave.errors.TransportError` when the database fails, :class:`~enklave.errors.UsageError`
    for invalid names (namespaces and keys are non-empty strings of at most 255 characters)."""

    @abstractmethod
    def get(self, namespace: str, key: str) -> bytes | None:
        """The record's value, or None."""

    @abstractmethod
    def put(self, namespace: str, key: str, value: bytes) -> None:
        """Create or replace a record atomically (a reader sees the old value or the new one)."""

    @abstractmethod
    def delete(self, namespace: str, key: str) -> bool:
        """Remove a record; True when it existed."""

    @abstractmethod
    def keys(self, namespace: str) -> list[str]:
        """The keys of a namespace, sorted."""

    @abstractmethod
    def append(self, log: str, data: bytes) -> int:
        """Append to an append-only log; returns the new record's sequence number (gap-free, from 1)."""

    @abstractmethod
    def read_log(self, log: str, *, after: int = 0, limit: int = 1000) -> list[LogRecord]:
        """Records with sequence > ``after``, oldest first, at most ``limit``."""

    @abstractmethod
    def close(self) -> None:
        """Release connections (idempotent)."""
