"""One throughput and latency measurement, served (client/bench.py) or in-process (cnnserve/in_process.py)."""

from __future__ import annotations

from dataclasses import dataclass

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
