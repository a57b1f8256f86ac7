"""Scanning this process's own memory for values it must never have held (plaintext, enclave keys).

The proofs in test_relay.py and test_ohttp_attested.py copy the host process's writable memory to a file first
and only then learn the secrets to look for, so that learning them cannot put them in the copy.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["found_in_snapshot", "snapshot_memory"]

_CHUNK = 1 << 20


def snapshot_memory(path: Path) -> int:
    """Copy every readable and writable region of this process's memory to ``path``; returns the byte count."""
    regions = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if fields[1].startswith("rw"):
            start, end = (int(value, 16) for value in fields[0].split("-"))
            regions.append((start, end))
    total = 0
    with open("/proc/self/mem", "rb", buffering=0) as memory, path.open("wb") as out:
        for start, end in regions:
            for offset in range(start, end, _CHUNK):
                try:
                    memory.seek(offset)
                    data = memory.read(min(_CHUNK, end - offset))
                except OSError:
                    continue  # Guard pages and the like cannot be read.
                out.write(data)
                total += len(data)
    return total


def found_in_snapshot(path: Path, needles: dict[str, bytes]) -> set[str]:
    """The names of the ``needles`` that occur in the snapshot at ``path`` (also across chunk borders)."""
    overlap = max(len(needle) for needle in needles.values()) - 1
    found: set[str] = set()
    tail = b""
    with path.open("rb") as snapshot:
        while chunk := snapshot.read(8 << 20):
            window = tail + chunk
            found.update(name for name, needle in needles.items() if needle in window)
            tail = window[-overlap:]
    return found
