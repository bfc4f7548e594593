"""Dynamic batching: queue requests, merge them into batches, run them on N executors, split outputs.

Knows nothing of gRPC or ONNX: it drives any `async (inputs, output names) -> (outputs, compute times)` callable whose
tensors share axis 0, or, where its Placement (placement.py) says so, the same run done on the event loop, and reports
each batch, with the times its run returned, to one observer. Requests asking for different outputs still merge: the
batch computes the union and each request gets back only its own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cnnserve.service.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotReady,
    OverBudget,
    QueueFull,
    ServiceError,
)
from cnnserve.service.scheduling.admission import LatencyBudget
from cnnserve.service.scheduling.batches import OutputNames, Request, Tensors, fail, measure, share_out, union
from cnnserve.service.scheduling.placement import Placement
from cnnserve.service.types import ComputeTimes

logger = logging.getLogger(__name__)

# (inputs concatenated on axis 0, outputs wanted) -> (outputs with the same leading dim, the run's phases)
RunBatch = Callable[[Tensors, OutputNames], Awaitable[tuple[Tensors, ComputeTimes]]]


@dataclass(frozen=True)
class BatchRecord:
    """What the observer learns about each executed batch (for metrics and ModelStatistics)."""

    items: int  # total items (sum of request leading dims; 1 per request when max_batch_size == 0)
    requests: int
    queue_seconds: tuple[float, ...]  # per request: enqueue -> batch start
    run_seconds: float  # time inside the run, on the loop or in a thread
    failed: bool
    compute: ComputeTimes | None = None  # the run's own phases; None when it failed
    started: float = 0.0  # time.monotonic() when the run began
    traces: tuple[object, ...] = ()  # per request, as queue_seconds: what submit(trace=...) carried (None: untraced)


REFUSAL_REASONS = ("queue_full", "budget", "deadline")
"""Why a request was refused on arrival: the queue at max_queue_size, a predicted completion past the model's
latency budget, or past the request's own (shorter) deadline."""


class Batcher:
    """One per model version. `concurrency` batches run at once (one per model instance); while they run, the
    queue keeps filling, so the next batch is as large as it can be when an executor frees up."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_queue_delay_us: int,
        preferred_batch_sizes: Sequence[int] = (),
        max_queue_size: int = 1024,
        concurrency: int = 1,
        observer: Callable[[BatchRecord], None] | None = None,
        name: str = "model",
        wait_when_idle: bool = False,
        merge: bool = True,
        placement: Placement | None = None,
        latency_budget_s: float | None = None,
    ) -> None:
        if max_batch_size < 0:
            raise ValueError(f"max_batch_size must be >= 0 (0 = the model does not batch), got {max_batch_size}")
        if max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {max_queue_delay_us}")
        if any(not 0 < p <= max_batch_size for p in preferred_batch_sizes):
            raise ValueError(
                f"preferred_batch_sizes must lie in 1..{max_batch_size} (max_batch_size), "
                f"got {list(preferred_batch_sizes)}"
            )
        if max_queue_size < 1 or concurrency < 1:
            raise ValueError(f"max_queue_size and concurrency must be >= 1, got {max_queue_size}, {concurrency}")
        self._run_batch, self._observer, self._name = run_batch, observer, name
        self._max_batch_size, self._max_queue_size = max_batch_size, max_queue_size
        self._concurrency = concurrency
        self._delay = max_queue_delay_us / 1e6
        self._wait_when_idle = wait_when_idle
        self._preferred = frozenset(preferred_batch_sizes)
        self._merge = merge  # False: a model that batches but runs each request alone (no dynamic batching)
        self.placement = placement or Placement()
        """Where each batch runs, and the batch times (around each run) that admission and early sends read."""
        self.budget = None if latency_budget_s is None else LatencyBudget(latency_budget_s, name)
        self.refusals: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self._running_batches: dict[int, tuple[float, int]] = {}  # id(batch) -> (started, items)
        self._queue: collections.deque[Request] = collections.deque()
        self._queued_items = 0
        self._in_flight = 0
        self._running = 0  # batches executing now
        self._closing = False
        self._stopped: str | None = None  # why submit is refused after a crash
        self._wakeup: asyncio.Event | None = None  # created in the running loop, with the loop task
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def queued_items(self) -> int:
        """Items accepted and waiting for a batch."""
        return self._queued_items

    @property
    def in_flight_requests(self) -> int:
        """Requests whose batch is executing now."""
        return self._in_flight

    async def submit(self, inputs: Tensors, *, outputs: OutputNames = None, deadline: float | None = None,
                     trace: object = None) -> Tensors:  # fmt: skip
        """Queue one request; return its rows of the batch outputs it asked for (`outputs`; None: all).
        `deadline`: a time.monotonic() value; `trace`: opaque here, handed to the observer in the batch's record."""
        if self._closing or self._stopped:
            raise ModelNotReady(self._stopped or f"model '{self._name}' is unloading")
        items, signature = measure(inputs, self._max_batch_size, self._name)
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceeded(f"model '{self._name}': deadline passed before the request was queued")
        if self._queued_items + items > self._max_queue_size:
            self.refusals["queue_full"] += 1
            raise QueueFull(
                f"model '{self._name}': queue holds {self._queued_items} of {self._max_queue_size} items, "
                f"no room for {items} more"
            )
        idle = not self._queue and not self._running
        if idle and not self._wait_when_idle and self.placement.inline(items, outputs):
            return self._run_alone(inputs, items, outputs, trace)
        predicted = 0.0
        if self.budget is not None and not idle:  # an idle model is never refused: nothing could answer sooner
            predicted = self._admit(self.budget, items, deadline)
        wakeup = self._start()
        request = Request(inputs, items, signature, deadline, outputs,
                          None if self.budget is None else self.budget.seconds)  # fmt: skip
        request.predicted = predicted
        request.trace = trace
        self._queue.append(request)
        self._queued_items += items
        wakeup.set()
        # A timer, not asyncio.wait: it costs one handle per request instead of a waiter future and callbacks.
        timer = None
        if deadline is not None:
            timer = asyncio.get_running_loop().call_later(max(0.0, deadline - time.monotonic()), self._expire, request)
        try:
            return await request.future
        except asyncio.CancelledError:  # the client went away: drop it from the queue, or drop its result
            if request.queued:
                self._unqueue(request)
            request.future.cancel()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _admit(self, budget: LatencyBudget, items: int, deadline: float | None) -> float:
        try:
            return budget.admit(self.placement.times, self._running_batches.values(), self._queued_items, items,
                                self._max_batch_size, self._concurrency, deadline)  # fmt: skip
        except OverBudget:
            self.refusals["budget"] += 1
            raise
        except DeadlineExceeded:
            self.refusals["deadline"] += 1
            raise

    def _run_alone(self, inputs: Tensors, items: int, outputs: OutputNames, trace: object) -> Tensors:
        """An idle model whose batch runs on the loop: the request is its own batch, run in the caller's task and
        answered by its return. No queue, no future, no wake-up of the batcher's task, no task of its own, no deadline
        timer, no await: nothing can happen between its arrival and its answer, so it is a batch of one that started
        at once (it waited 0 s), and no other coroutine sees it running."""
        placement = self.placement
        assert placement.run_on_loop is not None  # placement.inline said yes
        started = time.monotonic()
        run_seconds, failed, compute = 0.0, True, None
        try:
            try:
                answer, compute = placement.run_on_loop(inputs, outputs)
            finally:
                ended = time.monotonic()
                run_seconds = ended - started
                placement.ran(ended)
            if self._max_batch_size and any(v.ndim == 0 or v.shape[0] != items for v in answer.values()):
                raise InferenceFailed(f"model '{self._name}': outputs do not have the batch's {items} rows")
            failed = False
            placement.times.observe(items, run_seconds)
            return answer
        except InvalidInput:
            raise
        except Exception as exc:
            error = self._batch_failed(exc, 1)
            if error is exc:
                raise
            raise error from exc
        finally:
            self._report(BatchRecord(items, 1, (0.0,), run_seconds, failed, None if failed else compute, started,
                                     (trace,)))  # fmt: skip

    def _expire(self, request: Request) -> None:
        """Deadline reached: a request still queued is answered now and never run; a running one finishes."""
        if request.queued:
            self._unqueue(request, DeadlineExceeded(f"model '{self._name}': deadline passed while queued"))

    async def close(self, *, drain: bool = True) -> None:
        """Refuse new requests; run (drain) or fail (no drain) the queued ones; wait for running batches."""
        self._closing = True
        if not drain:
            while self._queue:
                self._unqueue(self._queue[0], ModelNotReady(f"model '{self._name}' is unloading"))
        if self._wakeup is not None:
            self._wakeup.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self) -> asyncio.Event:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._loop(self._wakeup))
        return self._wakeup

    def _unqueue(self, request: Request, error: BaseException | None = None) -> None:
        self._queue.remove(request)
        request.queued = False
        self._queued_items -= request.items
        if error is not None:
            fail(request.future, error)
        if self._wakeup is not None:
            self._wakeup.set()  # the front may have changed

    async def _loop(self, wakeup: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue or not self._closing:
                wakeup.clear()
                timer = None
                if self._queue and self._running < self._concurrency:
                    batch, wait = self._take(time.monotonic())
                    if batch:
                        self._running += 1
                        self._in_flight += len(batch)
                        task = loop.create_task(self._execute(batch))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                        continue
                    if wait is None:  # all it took had expired or been cancelled: look again
                        continue
                    timer = loop.call_later(wait, wakeup.set)
                await wakeup.wait()
                if timer is not None:
                    timer.cancel()
        except BaseException as exc:  # a bug, or the event loop shutting down: fail what waits, never hang
            if not isinstance(exc, asyncio.CancelledError):
                logger.exception("event=batcher_crashed model=%s", self._name)
            self._stopped = f"model '{self._name}': batcher stopped"
            while self._queue:
                self._unqueue(self._queue[0], InferenceFailed(self._stopped))
            if not isinstance(exc, Exception):
                raise

    def _take(self, now: float) -> tuple[list[Request], float | None]:
        """Pop the next batch if one is due (empty if all it took had expired or been cancelled) and None;
        else ([], seconds until the oldest request's delay ends)."""
        limit = self._max_batch_size or 1
        head = self._queue[0]
        totals: list[int] = []  # items in the batch if it ends after each queued request, in FIFO order
        full = False
        for request in self._queue:
            total = (totals[-1] if totals else 0) + request.items
            if total > limit or request.signature != head.signature:
                full = True  # requests are never split or reordered: this one starts the next batch
                break
            totals.append(total)
            if total == limit or not self._merge:
                full = True
                break
        cut = len(totals)
        waited = now - head.enqueued
        idle = self._running == 0 and not self._wait_when_idle  # nothing to wait behind: waiting is pure latency
        if not (full or self._closing or idle or waited >= self._delay):
            cut = max((i + 1 for i, total in enumerate(totals) if total in self._preferred), default=0)
            if not cut:
                wait = self._delay - waited
                if head.due is not None:  # send early rather than let the oldest miss its budget waiting
                    run = self.placement.times.predict(totals[-1]) or 0.0
                    wait = min(wait, head.due - run - now)
                if wait > 0:
                    return [], wait
                cut = len(totals)
        batch = []
        for _ in range(cut):
            request = self._queue.popleft()
            request.queued = False
            self._queued_items -= request.items
            if request.deadline is not None and request.deadline <= now:
                fail(request.future, DeadlineExceeded(f"model '{self._name}': deadline passed while queued"))
            elif not request.future.done():
                batch.append(request)
        return batch, None

    async def _execute(self, batch: list[Request]) -> None:
        self._running_batches[id(batch)] = (time.monotonic(), sum(r.items for r in batch))
        try:
            await self._run(batch)
        finally:
            del self._running_batches[id(batch)]
            for r in batch:  # never leave a caller hanging, whatever escaped
                fail(r.future, InferenceFailed(f"model '{self._name}': batch aborted"))
            self._running -= 1
            self._in_flight -= len(batch)
            if self._wakeup is not None:
                self._wakeup.set()

    async def _run(self, batch: list[Request]) -> None:
        """Run one batch and answer its requests. When the model refuses a merged batch's input values
        (InvalidInput: an index out of range, text that is not UTF-8), each request runs again alone, so only the
        one that carried them fails and its batch-mates are answered."""
        started = time.monotonic()
        alone = len(batch) == 1
        queue_seconds = (started - batch[0].enqueued,) if alone else tuple(started - r.enqueued for r in batch)
        total = batch[0].items if alone else sum(r.items for r in batch)
        run_seconds, failed, split, compute, run_started = 0.0, True, False, None, started
        try:
            if alone:
                inputs = batch[0].inputs
            else:
                inputs = {k: np.concatenate([r.inputs[k] for r in batch]) for k in batch[0].inputs}
            wanted = union(batch)
            placement = self.placement
            run_started = time.monotonic()
            try:
                if placement.run_on_loop is not None and placement.inline(total, wanted):
                    outputs, compute = placement.run_on_loop(inputs, wanted)
                else:
                    outputs, compute = await self._run_batch(inputs, wanted)
            finally:
                ended = time.monotonic()
                run_seconds = ended - run_started
                placement.ran(ended)
            share_out(batch, outputs, wanted, total, self._max_batch_size > 0, self._name)
            if self.budget is not None:
                answered = time.monotonic()
                for r in batch:
                    if r.predicted:
                        self.budget.learn(answered - r.enqueued - r.predicted)
            failed = False
            placement.times.observe(total, run_seconds)
        except InvalidInput as exc:
            split = len(batch) > 1
            if not split:
                fail(batch[0].future, exc)
        except Exception as exc:
            error = self._batch_failed(exc, len(batch))
            for r in batch:
                fail(r.future, error)
        finally:
            if not split:  # a split batch is reported by the runs that follow
                traces = (batch[0].trace,) if alone else tuple(r.trace for r in batch)
                self._report(BatchRecord(total, len(batch), queue_seconds, run_seconds, failed,
                                         None if failed else compute, run_started, traces))  # fmt: skip
        if split:
            logger.info("event=batch_split model=%s requests=%d reason=input_refused", self._name, len(batch))
            for r in batch:
                if not r.future.done():
                    await self._run([r])

    def _batch_failed(self, exc: Exception, requests: int) -> ServiceError:
        """What the requests of a batch that raised `exc` are told: a ServiceError as it is, anything else as
        InferenceFailed naming its type (the cause kept for the log)."""
        logger.warning("event=batch_failed model=%s requests=%d error=%s", self._name, requests, type(exc).__name__)
        if isinstance(exc, ServiceError):
            return exc
        error = InferenceFailed(f"model '{self._name}': {type(exc).__name__} while running the batch")
        error.__cause__ = exc
        return error

    def _report(self, record: BatchRecord) -> None:
        if self._observer is None:
            return
        try:
            self._observer(record)
        except Exception:
            logger.exception("event=batch_observer_failed model=%s", self._name)
