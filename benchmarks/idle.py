"""Other processes' share of the CPUs, for benchmarks on a shared machine (no torch: cheap to import).

Run by the benchmark scripts beside it (``from idle import wait_until_idle``).
"""

from __future__ import annotations

import time
from pathlib import Path


def busy_fraction(seconds: float = 2.0) -> float:
    """Share of all CPUs busy over ``seconds`` while this process sleeps (other processes' load)."""
    def sample():
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_until_idle(limit_s: float, threshold: float = 0.1) -> float:
    """Wait (up to ``limit_s``) until other processes use less than ``threshold`` of the CPUs; returns their share."""
    deadline = time.monotonic() + limit_s
    busy = busy_fraction()
    while busy >= threshold and time.monotonic() < deadline:
        busy = busy_fraction(5.0)
    return busy
