"""CPU time of benchmark processes, read from /proc (shared by the benchmarks that run servers of their own)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["process_cpu"]


def process_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of ``pid`` and of each of its descendants, from /proc (empty elsewhere)."""
    seconds: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        # Fields 14 and 15 of proc(5) (utime, stime); the split above starts at field 3.
        seconds[current] = (int(fields[11]) + int(fields[12])) / ticks
        pending.extend(int(child) for child in children)
    return seconds
