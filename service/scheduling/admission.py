"""Admission against a latency budget: when would a request arriving now be answered?

The batcher asks this on every arrival at a busy model that has a budget. The prediction replays the batcher's own
rule with the measured service times: the queue ahead (and the request) leave in batches of at most max_batch_size,
each on the first instance to free up, and the running batches free theirs when their estimated time is over.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from cnnserve.service.estimates import BatchTimes

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
