"""Running estimates of how long a batch takes, by batch size: exponential moving averages of measured times.

Shared by the execution layer (is a run tiny enough to do on the event loop?) and the scheduler (will a request
finish within its latency budget?), which may not import each other.
"""

from __future__ import annotations

import bisect
import time

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


class ThreadLoad:
    """The share of wall time the calling thread (the event loop's) spent on CPU since a mark: how busy the loop
    was between a model's last run and a new arrival. One closed-loop client leaves the loop asleep through most of
    each round trip (a share of ~0.3-0.4 here); many clients keep it working through the gap (0.9 or more), with
    gRPC's queues, not cnnserve's, holding the requests that wait, so that the model looks idle at each arrival all
    the same."""

    __slots__ = ("_cpu", "_wall")

    def __init__(self) -> None:
        self._wall = self._cpu = 0.0

    def mark(self, now: float) -> None:
        """Start a window at `now` (time.monotonic()); costs a thread-clock read (~0.6 µs)."""
        self._wall, self._cpu = now, time.thread_time()

    def share_since_mark(self, now: float) -> float:
        """CPU over wall time since the mark, in [0, 1]; 0 before any mark."""
        window = now - self._wall
        if not self._wall or window <= 0:
            return 0.0
        return min((time.thread_time() - self._cpu) / window, 1.0)
