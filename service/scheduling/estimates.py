"""Running estimates of how long a batch takes, by batch size: exponential moving averages of measured times.

One per model version (placement.Placement.times), read by admission (will a request be answered within its latency
budget?), by the batcher's early send, and by the inline gate (is a run tiny enough to do on the event loop?).
"""

from __future__ import annotations

import bisect

EMA_WEIGHT = 0.2
"""The newest measurement's share: about the last ten runs count, so a model that slows down is noticed within
tens of batches, and one slow run (a page fault, a noisy neighbour) moves the estimate by a fifth of its excess."""


class BatchTimes:
    """Seconds per batch, by batch size (items). Only written and read on one thread at a time, or, where two
    threads touch it, tolerant of a lost update: it is an estimate."""

    __slots__ = ("_seconds", "_sizes", "_variance", "_warm", "weight")

    def __init__(self, weight: float = EMA_WEIGHT) -> None:
        if not 0 < weight <= 1:
            raise ValueError(f"the EMA weight must lie in (0, 1], got {weight}")
        self.weight = weight
        self._seconds: dict[int, float] = {}
        self._variance: dict[int, float] = {}  # exponentially weighted, of the same runs
        self._sizes: list[int] = []  # the keys of _seconds, sorted, for interpolation
        self._warm: set[int] = set()  # sizes measured twice or more

    def observe(self, size: int, seconds: float) -> None:
        old = self._seconds.get(size)
        if old is None:
            bisect.insort(self._sizes, size)
            self._seconds[size], self._variance[size] = seconds, 0.0
        elif size not in self._warm:
            # The first run at a new shape pays ONNX Runtime's allocations and kernel choices, often several times
            # a steady run: the second measurement replaces it rather than averaging with it.
            self._warm.add(size)
            self._seconds[size] = seconds
        else:
            deviation = seconds - old
            self._seconds[size] = old + self.weight * deviation
            self._variance[size] = (1 - self.weight) * (self._variance[size] + self.weight * deviation * deviation)

    def measured(self, size: int) -> float | None:
        """The estimate for exactly this size; None until a batch of it ran."""
        return self._seconds.get(size)

    def predict(self, size: int) -> float | None:
        """The estimate for `size`, interpolated linearly between the nearest measured sizes; beyond the largest,
        scaled in proportion (CPU batches cost about their size); below the smallest, the smallest's. None when
        nothing was measured yet."""
        seconds = self._seconds.get(size)
        if seconds is not None:
            return seconds
        sizes = self._sizes
        if not sizes:
            return None
        at = bisect.bisect_left(sizes, size)
        if at == 0:
            return self._seconds[sizes[0]]
        if at == len(sizes):
            largest = sizes[-1]
            return self._seconds[largest] * size / largest
        below, above = sizes[at - 1], sizes[at]
        low, high = self._seconds[below], self._seconds[above]
        return low + (high - low) * (size - below) / (above - below)

    def variance(self, size: int) -> float:
        """The spread of runs at the measured size nearest to `size` (seconds squared); 0 before any."""
        sizes = self._sizes
        if not sizes:
            return 0.0
        at = bisect.bisect_left(sizes, size)
        nearest = sizes[min(at, len(sizes) - 1)]
        if at > 0 and (at == len(sizes) or size - sizes[at - 1] < nearest - size):
            nearest = sizes[at - 1]
        return self._variance[nearest]

    def snapshot(self) -> dict[int, float]:
        """Every measured size and its estimate (for metrics)."""
        return dict(self._seconds)
