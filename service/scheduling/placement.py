"""Where a batch runs, on the event loop or on a session thread: the one inline-or-thread policy of a model version,
and its one estimate of how long batches take (which admission and the batcher's early send read too).

A run on the loop costs its compute; on a session thread it costs the same plus two thread hand-offs and a wake-up
of the loop (0.12 ms of the thread's CPU for a 0.05 ms run here, cnnserve/contracts/layout.py INLINE_RUN_MAX_US).
So a run measured tiny is done on the loop while the model is idle. Under load the loop is the bottleneck instead:
a run in a thread lets it decode the next requests meanwhile, and batches form. The runtime decides nothing: it
states the facts the policy needs (is a session thread busy, does the session for an output set exist) and runs a
batch where it is told.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cnnserve.contracts import layout
from cnnserve.service.scheduling.batches import OutputNames, Tensors
from cnnserve.service.scheduling.estimates import BatchTimes
from cnnserve.service.types import ComputeTimes

INLINE_LOOP_BUSY_MAX = 0.65
"""The loop's CPU share between the model's last run and an arrival above which the loop counts as the bottleneck:
requests then wait in gRPC's queues while the model looks idle at each arrival, and a run in a thread lets the loop
decode the next ones meanwhile, so batches form. Measured here (digits CNN): one client 0.40-0.54 (5th-95th
percentile), 32 clients 0.52-0.63 at the 5th and 0.85-1.0 at the median."""
INLINE_IDLE_GAP_S = 200e-6
"""How long since the last run ended before the model counts as idle for an inline run. A closed-loop client
leaves a round trip (~0.5 ms here) between its requests; under load the next request comes within microseconds."""

RunOnLoop = Callable[[Tensors, OutputNames], tuple[Tensors, ComputeTimes]]
"""Runs a batch on the calling thread (the event loop) and returns as the threaded run does."""
LoopReady = Callable[[OutputNames], bool]
"""A fact, not a decision: a run for these outputs could start on the loop at once (no session thread is busy, the
sessions are open, and the session for the output set exists: building one can take milliseconds)."""


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


class Placement:
    """One model version's policy. Without `run_on_loop` every batch goes to the batcher's threaded run.

    `times` holds seconds per batch by its items as the batcher measures them around each run: for a run on the
    loop that is its compute, for a run on a thread the compute plus the hand-offs and the wait for the loop to take
    the answer. Admission needs the latter (it predicts when a request is answered), and it is the quantity admission
    was tuned with (scheduling/admission.py). The inline gate would rather have the compute alone, but around-the-run
    errs one way only: a size measured on threads looks slower by the hand-off (digits CNN at batch 1, 2026-12-06:
    152 µs around a thread run of 98 µs compute; 105 µs around a run on the loop), so a run within that margin of
    the limit keeps to the threads, where inlining would gain least, and after a burst the estimate takes a few
    runs to come down again. Warm-up seeds `times` with a steady run per warmed size, so a first request can run
    inline.
    """

    __slots__ = ("_idle_gap_s", "_inline_max_s", "_last_run_ended", "_loop_ready", "loop_load", "run_on_loop",
                 "times")  # fmt: skip

    def __init__(self, run_on_loop: RunOnLoop | None = None, loop_ready: LoopReady | None = None, *,
                 inline_run_max_us: int = layout.INLINE_RUN_MAX_US, idle_gap_s: float = INLINE_IDLE_GAP_S
                 ) -> None:  # fmt: skip
        if (run_on_loop is None) != (loop_ready is None):
            raise ValueError("run_on_loop and loop_ready come together (the runtime offers both) or not at all")
        if inline_run_max_us <= 0:  # never inline: no gate to ask on each batch
            run_on_loop = loop_ready = None
        self.run_on_loop = run_on_loop
        self._loop_ready = loop_ready
        self._inline_max_s = inline_run_max_us / 1e6
        self._idle_gap_s = idle_gap_s
        self.times = BatchTimes()
        self.loop_load = ThreadLoad()
        """How busy the event loop has been since the last run ended."""
        self._last_run_ended = 0.0  # time.monotonic(), on the event loop

    def inline(self, items: int, outputs: OutputNames) -> bool:
        """Whether a batch of `items` for `outputs` runs on the event loop now, without suspending: the model is idle
        (no run ended within the idle gap, none in a thread), the loop is not the bottleneck, a batch of that size
        measured below the inline limit, and its session exists."""
        if self._loop_ready is None:
            return False
        now = time.monotonic()
        if (
            now - self._last_run_ended < self._idle_gap_s
            or self.loop_load.share_since_mark(now) >= INLINE_LOOP_BUSY_MAX
        ):
            return False
        measured = self.times.measured(items)
        return measured is not None and measured < self._inline_max_s and self._loop_ready(outputs)

    def ran(self, ended: float) -> None:
        """A batch's run ended at `ended` (time.monotonic(), on the loop), wherever it ran, failed or not."""
        self._last_run_ended = ended
        self.loop_load.mark(ended)
