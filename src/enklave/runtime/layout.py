"""The page layout of an enclave bundle: what gets EADDed and EEXTENDed, and where.

The layout is a pure function of the configuration and the files (never of file order on disk, timestamps or
the signing key), so that everyone who has the bundle computes the same MRENCLAVE. From offset 0, in order:

1. config: :meth:`EnclaveConfig.canonical_bytes`, zero-padded to whole pages; R, measured.
2. file table: u32 count, then per file (sorted by UTF-8 path) u16 path length, the path, u64 size and the
   file's SHA-256; zero-padded to whole pages; R, measured.
3. files: each file (sorted by UTF-8 path) zero-padded to whole pages (an empty file takes no page); R, measured.
4. per thread: one TCS page (PT_TCS, measured), one SSA page (RW, EADD only), 16 stack pages (RW, EADD only).
5. heap: ``heap_size / 4096`` pages, RW, EADD only.

ECREATE comes first with SSAFRAMESIZE 1 and SIZE the next power of two at or above the total. The TCS page
holds the architectural TCS fields (SDM Vol. 3D, "Thread Control Structure"): OSSA (which identifies the thread),
NSSA 1, OFSBASE/OGSBASE at the thread's stack, FSLIMIT/GSLIMIT 0xFFF, every other byte zero.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from enklave.runtime.config import EnclaveConfig, check_relative_path
from enklave.sgx.measurement import PAGE_SIZE, Measurement, SecinfoFlags
from enklave.sgx.report import MrEnclave

__all__ = [
    "SSA_FRAME_SIZE",
    "STACK_PAGES",
    "EnclaveLayout",
    "LayoutRegion",
    "file_table",
    "iter_pages",
    "plan_layout",
]

SSA_FRAME_SIZE = 1
STACK_PAGES = 16
_MEASURED = SecinfoFlags.PT_REG | SecinfoFlags.R
_DATA = SecinfoFlags.PT_REG | SecinfoFlags.R | SecinfoFlags.W
# TCS: reserved, FLAGS, OSSA, CSSA, NSSA, OENTRY, reserved (AEP), OFSBASE, OGSBASE, FSLIMIT, GSLIMIT.
_TCS = struct.Struct("<QQQIIQQQQII")


@dataclass(frozen=True, slots=True)
class LayoutRegion:
    """Consecutive pages with one purpose: ``pages`` pages at ``offset`` with SECINFO ``flags``.

    ``content`` (measured regions only) is exactly ``pages * 4096`` bytes; unmeasured regions are EADDed only.
    """

    name: str
    offset: int
    pages: int
    flags: SecinfoFlags
    measured: bool
    content: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class EnclaveLayout:
    """The whole layout: ``size`` (SECS.SIZE) and the regions in EADD order."""

    size: int
    regions: tuple[LayoutRegion, ...]

    @property
    def pages(self) -> int:
        """Pages that are EADDed (the rest of ``size`` stays unmapped)."""
        return sum(region.pages for region in self.regions)

    def measure(self) -> MrEnclave:
        """MRENCLAVE: ECREATE, then every region's EADDs (and EEXTENDs where measured), in order."""
        measurement = Measurement()
        measurement.ecreate(SSA_FRAME_SIZE, self.size)
        for region in self.regions:
            if region.measured:
                view = memoryview(region.content)
                for index in range(region.pages):
                    start = index * PAGE_SIZE
                    page = bytes(view[start : start + PAGE_SIZE])
                    measurement.add_page(region.offset + start, page, region.flags, measured=True)
            else:
                measurement.eadd_many(region.offset, region.pages, region.flags)
        return measurement.finish()


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % PAGE_SIZE)


def _sorted_paths(files: Mapping[str, bytes]) -> list[str]:
    # Sort by UTF-8 bytes: a definition that does not depend on Python's string ordering or on locale.
    return sorted(files, key=lambda path: path.encode("utf-8"))


def file_table(files: Mapping[str, bytes]) -> bytes:
    """The measured file table (unpadded): count, then per sorted path its length, UTF-8 bytes, size, SHA-256.

    Raises :class:`~enklave.errors.ConfigError` for a path that could leave the enclave directory.
    """
    parts = [struct.pack("<I", len(files))]
    for path in _sorted_paths(files):
        check_relative_path(path, "enclave file")
        encoded = path.encode("utf-8")
        data = files[path]
        parts.append(struct.pack("<H", len(encoded)) + encoded)
        parts.append(struct.pack("<Q", len(data)) + hashlib.sha256(data).digest())
    return b"".join(parts)


def _tcs_page(ssa_offset: int, stack_offset: int) -> bytes:
    fields = _TCS.pack(0, 0, ssa_offset, 0, SSA_FRAME_SIZE, 0, 0, stack_offset, stack_offset, 0xFFF, 0xFFF)
    return fields + bytes(PAGE_SIZE - len(fields))


def _next_power_of_two(value: int) -> int:
    return 1 << max(value - 1, 1).bit_length()


def plan_layout(config: EnclaveConfig, files: Mapping[str, bytes]) -> EnclaveLayout:
    """The deterministic layout of ``config`` and ``files`` (see the module docstring)."""
    regions: list[LayoutRegion] = []
    offset = 0

    def add(name: str, pages: int, flags: SecinfoFlags, content: bytes | None = None) -> int:
        nonlocal offset
        start = offset
        regions.append(LayoutRegion(name, start, pages, flags, content is not None, content or b""))
        offset += pages * PAGE_SIZE
        return start

    def add_data(name: str, data: bytes) -> None:
        padded = _pad(data)
        add(name, len(padded) // PAGE_SIZE, _MEASURED, padded)

    add_data("config", config.canonical_bytes())
    add_data("file-table", file_table(files))
    for path in _sorted_paths(files):
        add_data(f"file:{path}", files[path])
    for thread in range(config.threads):
        # The TCS refers to the SSA and stack that follow it, so their offsets are known before it is built.
        tcs = offset
        ssa, stack = tcs + PAGE_SIZE, tcs + 2 * PAGE_SIZE
        add(f"tcs[{thread}]", 1, SecinfoFlags.PT_TCS, _tcs_page(ssa, stack))
        add(f"ssa[{thread}]", SSA_FRAME_SIZE, _DATA)
        add(f"stack[{thread}]", STACK_PAGES, _DATA)
    add("heap", config.heap_size // PAGE_SIZE, _DATA)
    return EnclaveLayout(size=_next_power_of_two(max(offset, 2 * PAGE_SIZE)), regions=tuple(regions))


def iter_pages(layout: EnclaveLayout) -> Iterator[tuple[int, SecinfoFlags, bool]]:
    """Every EADDed page as (offset, flags, measured), in order (for inspection and tests)."""
    for region in layout.regions:
        for index in range(region.pages):
            yield region.offset + index * PAGE_SIZE, region.flags, region.measured
