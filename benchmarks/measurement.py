"""What a benchmark run measured: throughput and latencies, served (grpc_load.py, rest_load.py) or in-process
(in_process.py), and the server CPU read at the edges of its timed window."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Measurement:
    label: str
    items_per_s: float
    requests: int
    latencies_ms: tuple[float, ...]

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        return float(np.percentile(self.latencies_ms, q))


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of the given processes and their children (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
    return total
