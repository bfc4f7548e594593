"""Running batch-time estimates (service/scheduling/estimates.py) and the latency-budget prediction built on them."""

from __future__ import annotations

import pytest

from cnnserve.service.scheduling.admission import predicted_wait_and_run
from cnnserve.service.scheduling.estimates import BatchTimes


def test_the_first_run_at_a_size_is_replaced_then_runs_are_averaged() -> None:
    times = BatchTimes(weight=0.5)
    assert times.predict(4) is None and times.measured(4) is None
    times.observe(4, 0.100)  # a first run at a new shape: ORT's allocations
    times.observe(4, 0.010)
    assert times.measured(4) == pytest.approx(0.010)
    times.observe(4, 0.020)
    assert times.measured(4) == pytest.approx(0.015)
    with pytest.raises(ValueError, match="weight"):
        BatchTimes(weight=0)


def test_unmeasured_sizes_are_interpolated_scaled_beyond_and_floored_below() -> None:
    times = BatchTimes()
    times.observe(2, 0.004)
    times.observe(10, 0.012)
    assert times.predict(6) == pytest.approx(0.008)  # halfway between the two measured sizes
    assert times.predict(20) == pytest.approx(0.024)  # twice the largest measured: twice its time
    assert times.predict(1) == pytest.approx(0.004)  # below the smallest: the smallest's time
    assert times.snapshot() == {2: pytest.approx(0.004), 10: pytest.approx(0.012)}


def test_prediction_replays_the_queue_in_full_batches_behind_the_running_ones() -> None:
    times = BatchTimes()
    times.observe(1, 0.010)
    times.observe(4, 0.020)
    now = 100.0
    # One instance, running a batch of 4 that started 5 ms ago (15 ms left); 6 items queued, the request brings 1:
    # batches of 4 then 3 -> 15 + 20 + (10 + 10 * 2/3) ms.
    wait = predicted_wait_and_run(times, [(now - 0.005, 4)], queued_items=6, items=1, max_batch_size=4,
                                  concurrency=1, now=now)  # fmt: skip
    assert wait is not None and wait[0] == pytest.approx(0.015 + 0.020 + 0.010 + 0.010 * 2 / 3)
    # Two instances, one free: the first batch starts at once on it, the second when the busy one frees.
    two = predicted_wait_and_run(times, [(now - 0.005, 4)], queued_items=6, items=1, max_batch_size=4,
                                 concurrency=2, now=now)  # fmt: skip
    assert two is not None and two[0] == pytest.approx(0.015 + 0.010 + 0.010 * 2 / 3)
    # An overdue running batch frees its instance now, not in the past.
    late = predicted_wait_and_run(times, [(now - 1.0, 4)], queued_items=0, items=1, max_batch_size=4,
                                  concurrency=1, now=now)  # fmt: skip
    assert late is not None and late[0] == pytest.approx(0.010)
    assert predicted_wait_and_run(BatchTimes(), [], 0, 1, 4, 1, now) is None  # nothing measured: no grounds


def test_the_spread_of_the_summed_batches_adds_up() -> None:
    times = BatchTimes(weight=0.5)
    for seconds in (0.010, 0.010, 0.014, 0.006, 0.014, 0.006):  # first two: the replaced first run and a steady one
        times.observe(2, seconds)
    one = predicted_wait_and_run(times, [], queued_items=0, items=2, max_batch_size=2, concurrency=1, now=0.0)
    three = predicted_wait_and_run(times, [], queued_items=4, items=2, max_batch_size=2, concurrency=1, now=0.0)
    assert one is not None and three is not None and one[1] > 0
    assert three[1] == pytest.approx(3 * one[1])  # three batches in a row: three variances
