"""MRENCLAVE: the SHA-256 measurement the CPU accumulates while an enclave is built.

SDM Vol. 3D, "ECREATE", "EADD", "EEXTEND" and "Measurement" describe the records that update the running
SHA-256 of SECS.MRENCLAVE. Each record is 64 bytes, little-endian:

- ECREATE: ``"ECREATE\\0"`` (8) + SSAFRAMESIZE (u32) + SECS.SIZE (u64) + 44 zero bytes;
- EADD: ``"EADD\\0\\0\\0\\0"`` (8) + page offset from the enclave base (u64) + the first 48 bytes of SECINFO
  (FLAGS as u64, then 40 zero bytes);
- EEXTEND: ``"EEXTEND\\0"`` (8) + chunk offset (u64) + 48 zero bytes, followed by the 256 bytes of the chunk.

EINIT finalises the hash. This module is pure (layer 1); it checks the same ordering and alignment rules the
instructions enforce, raising :class:`~enklave.errors.UsageError` when the caller breaks them.
"""

from __future__ import annotations

import enum
import hashlib
import struct

from enklave.errors import UsageError
from enklave.sgx.report import MrEnclave

__all__ = ["CHUNK_SIZE", "PAGE_SIZE", "Measurement", "SecinfoFlags"]

PAGE_SIZE = 4096
CHUNK_SIZE = 256
_CHUNKS_PER_PAGE = PAGE_SIZE // CHUNK_SIZE

_ECREATE = struct.Struct("<8sIQ44s")
_EADD = struct.Struct("<8sQQ40s")
_EEXTEND = struct.Struct("<8sQ48s")


class SecinfoFlags(enum.IntFlag):
    """SECINFO.FLAGS (SDM Vol. 3D, "SECINFO"): page permissions and page type (bits 8..15)."""

    R = 0x1
    W = 0x2
    X = 0x4
    PT_TCS = 1 << 8
    PT_REG = 2 << 8


class Measurement:
    """A running MRENCLAVE. Call :meth:`ecreate` once, then add pages, then :meth:`finish` once.

    Guarantees: the digest equals what the CPU would compute for the same sequence of ECREATE, EADD and EEXTEND
    operations. Raises :class:`UsageError` when operations come out of order, offsets are misaligned or outside
    the enclave size, or data has the wrong length.
    """

    __slots__ = ("_finished", "_hash", "_size")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._size: int | None = None
        self._finished = False

    def _require_open(self) -> int:
        if self._finished:
            raise UsageError("the measurement is already finished")
        if self._size is None:
            raise UsageError("ECREATE must come first")
        return self._size

    def _check_range(self, offset: int, length: int, alignment: int, what: str) -> None:
        size = self._require_open()
        if offset < 0 or offset % alignment:
            raise UsageError(f"{what} offset {offset:#x} is not {alignment}-byte aligned")
        if offset + length > size:
            raise UsageError(f"{what} offset {offset:#x} lies outside the enclave ({size:#x} bytes)")

    def ecreate(self, ssa_frame_size: int, size: int) -> None:
        """Start the measurement of an enclave of ``size`` bytes (a power of two, at least two pages)."""
        if self._size is not None or self._finished:
            raise UsageError("ECREATE may only come once, first")
        if not 1 <= ssa_frame_size < (1 << 32):
            raise UsageError(f"SSA frame size must be a positive u32, got {ssa_frame_size}")
        # SECS.SIZE must be a power of two of at least two pages (SDM, ECREATE).
        if size < 2 * PAGE_SIZE or size & (size - 1) or size >= (1 << 64):
            raise UsageError(f"enclave size must be a power of two of at least 8 KiB, got {size:#x}")
        self._size = size
        self._hash.update(_ECREATE.pack(b"ECREATE\0", ssa_frame_size, size, bytes(44)))

    def eadd(self, offset: int, flags: int) -> None:
        """Record EADD of the page at ``offset`` (from the enclave base) with SECINFO ``flags``."""
        self._check_range(offset, PAGE_SIZE, PAGE_SIZE, "EADD")
        self._hash.update(_EADD.pack(b"EADD\0\0\0\0", offset, int(flags), bytes(40)))

    def eadd_many(self, offset: int, count: int, flags: int) -> None:
        """Record EADD of ``count`` consecutive pages from ``offset`` without EEXTEND (heap, stack, SSA).

        Equivalent to ``count`` calls of :meth:`eadd`, but hashes one precomputed buffer so that large heaps
        measure quickly.
        """
        if count < 0:
            raise UsageError(f"page count must not be negative, got {count}")
        self._check_range(offset, count * PAGE_SIZE, PAGE_SIZE, "EADD")
        # Every record differs only in its offset field: repeat one template, then patch the offsets.
        records = bytearray(_EADD.pack(b"EADD\0\0\0\0", 0, int(flags), bytes(40)) * count)
        pack_offset = struct.Struct("<Q").pack_into
        for index in range(count):
            pack_offset(records, index * _EADD.size + 8, offset + index * PAGE_SIZE)
        self._hash.update(records)

    def eextend(self, offset: int, chunk: bytes) -> None:
        """Record EEXTEND of the 256-byte ``chunk`` at ``offset`` (256-byte aligned)."""
        self._check_range(offset, CHUNK_SIZE, CHUNK_SIZE, "EEXTEND")
        if len(chunk) != CHUNK_SIZE:
            raise UsageError(f"an EEXTEND chunk is {CHUNK_SIZE} bytes, got {len(chunk)}")
        self._hash.update(_EEXTEND.pack(b"EEXTEND\0", offset, bytes(48)))
        self._hash.update(chunk)

    def add_page(self, offset: int, data: bytes, flags: int, *, measured: bool) -> None:
        """EADD the 4096-byte page ``data`` at ``offset``; if ``measured``, EEXTEND its 16 chunks in order."""
        if len(data) != PAGE_SIZE:
            raise UsageError(f"a page is {PAGE_SIZE} bytes, got {len(data)}")
        self.eadd(offset, flags)
        if measured:
            for index in range(_CHUNKS_PER_PAGE):
                start = index * CHUNK_SIZE
                self.eextend(offset + start, data[start : start + CHUNK_SIZE])

    def finish(self) -> MrEnclave:
        """The final MRENCLAVE (what EINIT stores). The measurement cannot be extended afterwards."""
        self._require_open()
        self._finished = True
        return MrEnclave(self._hash.digest())
