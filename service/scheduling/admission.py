"""Admission against a latency budget: when would a request arriving now be answered, and is that in time?

The batcher asks this on every arrival at a busy model that has a budget. The prediction replays the batcher's own
rule with the measured service times: the queue ahead (and the request) leave in batches of at most max_batch_size,
each on the first instance to free up, and the running batches free theirs when their estimated time is over. What
batch times alone miss (the event loop's gaps between batches while it answers a flood of refusals, say) is learned
from the answers: the residual. A request that leaves with the next batch has no queue of ours ahead of it: only
the mean of the batches it waits for and its own can refuse it.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterable

from cnnserve.service.errors import DeadlineExceeded, OverBudget
from cnnserve.service.scheduling.estimates import BatchTimes

BUDGET_HEADROOM = 0.75
"""Admission aims at this share of the budget: the rest is for what a prediction made at arrival cannot know, such
as the first batches after a burst begins, before the residual is learned, and the reply's way back. Measured on
tests/service/test_overload.py (2 cores, 2026-12-03, three A/B pairs in one sitting): at 0.8 the pooled accepted
p99 was 138-147 ms against 150, at 0.75 122-128 ms, both accepting 98-107% of what the twin without a budget
accepted under the same overload. (Against a quiet closed-loop capacity 0.75 had once looked like a 7-12% loss.)"""
RESIDUAL_WEIGHT = 0.05
"""Answered requests correct the predictions: the EMA (and spread) of answered-after minus predicted."""
RESIDUAL_HALF_LIFE_S = 0.5
"""Between lessons the residual halves every this long. Only admitted requests teach it, so without decay one burst
of lateness (a stall of the loop) could refuse every later request and never be unlearned: at 32 clients the
digits CNN had learned 19 ms +- 18 and refused all but its idle arrivals for good, with its p99 at 23 ms."""
TAIL_Z = 2.33
"""The budget is a p99 promise: the batcher adds 2.33 standard deviations (a normal's 99th percentile) of the batch
times a prediction sums, so a noisy machine admits fewer requests rather than let its spread break the budget."""


def predicted_wait_and_run(
    times: BatchTimes,
    running: Iterable[tuple[float, int]],
    queued_items: int,
    items: int,
    max_batch_size: int,
    concurrency: int,
    now: float,
) -> tuple[float, float] | None:
    """(mean, variance) of the seconds from `now` until a request of `items` that joins the tail of the queue is
    answered; None while no batch time has been measured (or seeded by warm-up) to predict from.

    running: (started, items) of each batch executing now, started being a time.monotonic() value.
    """
    limit = max_batch_size or 1
    # Each instance: (when it frees up in seconds from now, the variance of that time), earliest first.
    free: list[tuple[float, float]] = []
    for started, size in running:
        seconds = times.predict(size)
        if seconds is None:
            return None
        free.append((max(0.0, started + seconds - now), times.variance(size)))
    free += [(0.0, 0.0)] * max(0, concurrency - len(free))
    heapq.heapify(free)
    left, finish, spread = queued_items + items, 0.0, 0.0
    while left > 0:
        size = min(limit, left)
        seconds = times.predict(size)
        if seconds is None:
            return None
        start, variance = heapq.heappop(free)
        finish, spread = start + seconds, variance + times.variance(size)
        heapq.heappush(free, (finish, spread))
        left -= size
    return finish, spread


class LatencyBudget:
    """One model's budget: refuses arrivals predicted to be answered late, and learns from the answers how late its
    predictions run."""

    def __init__(self, budget_s: float, model_name: str) -> None:
        if budget_s <= 0:
            raise ValueError(f"latency_budget_s must be > 0 (None: no budget), got {budget_s}")
        self.seconds = budget_s
        self._name = model_name
        self.residual = 0.0
        """Seconds by which admitted requests were answered later than predicted: an EMA (RESIDUAL_WEIGHT)."""
        self._residual_variance = 0.0
        self._residual_at = 0.0  # time.monotonic() of its last lesson or decay

    def admit(self, times: BatchTimes, running: Iterable[tuple[float, int]], queued_items: int, items: int,
              max_batch_size: int, concurrency: int, deadline: float | None) -> float:  # fmt: skip
        """Raise OverBudget (or DeadlineExceeded, for a request whose own deadline is sooner) when a request of
        `items` joining the queue now would be answered too late; else return the mean prediction (0 when there is
        none yet), which its answer checks."""
        now = time.monotonic()
        self.decay(now)
        prediction = predicted_wait_and_run(times, running, queued_items, items, max_batch_size, concurrency, now)
        if prediction is None:  # nothing measured yet: no grounds to refuse
            return 0.0
        mean, variance = prediction
        if queued_items + items <= (max_batch_size or 1):
            # It leaves with the next batch: no queue of ours is ahead of it, so refusing it shortens nobody's wait.
            # Only the mean counts, so a batch that alone runs past the budget still refuses. The spread of running
            # batches on a contended CPU and the lateness learnt downstream (gRPC's own queues) refused
            # perf_analyzer's arrivals with 0 or 1 items queued, at a 0.1 ms model.
            wait = mean
        else:
            wait = max(mean / 2, mean + self.residual) + TAIL_Z * math.sqrt(variance + self._residual_variance)
        if deadline is not None and deadline - now < self.seconds and wait > (deadline - now) * BUDGET_HEADROOM:
            raise DeadlineExceeded(
                f"model '{self._name}': predicted to answer in {wait * 1e3:.1f} ms, after the request's deadline "
                f"({(deadline - now) * 1e3:.1f} ms from now); refused without queueing"
            )
        if wait > self.seconds * BUDGET_HEADROOM:
            raise OverBudget(
                f"model '{self._name}': predicted to answer in {wait * 1e3:.1f} ms, over its latency budget of "
                f"{self.seconds * 1e3:.0f} ms less {1 - BUDGET_HEADROOM:.0%} headroom "
                f"({queued_items} items queued); retry later"
            )
        return mean

    def learn(self, late_s: float) -> None:
        """One admitted request was answered `late_s` after its prediction (negative: sooner)."""
        self.decay(time.monotonic())
        # One answer later than the budget says no more than that it was late: clipped, so one stall teaches a
        # twentieth of a budget, not a twentieth of the stall.
        late_s = max(-self.seconds, min(late_s, self.seconds))
        deviation = late_s - self.residual
        self.residual += RESIDUAL_WEIGHT * deviation
        self._residual_variance = (1 - RESIDUAL_WEIGHT) * (self._residual_variance
                                                          + RESIDUAL_WEIGHT * deviation * deviation)  # fmt: skip

    def decay(self, now: float) -> None:
        age = now - self._residual_at
        if age > 0:
            keep = 0.5 ** (age / RESIDUAL_HALF_LIFE_S)
            self.residual *= keep
            self._residual_variance *= keep * keep
            self._residual_at = now
