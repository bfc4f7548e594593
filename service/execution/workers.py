"""One thread per ONNX Runtime session, fed from the event loop.

Why not `loop.run_in_executor`: each call there wraps a concurrent Future in an asyncio one and chains callbacks
between them, about 60 us of CPU per round trip on this project's 2-core test machine against about 20 us for a bare
queue and one `call_soon_threadsafe` (measured with a no-op job). A batch makes one round trip, so for small models
that difference is a visible share of each request. A thread per session also lets every thread own its session
outright, with no pool of free sessions to lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

State = TypeVar("State")
Result = TypeVar("Result")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[Any, object], Any], object]
_STOP = None  # in place of a job: the thread that takes it ends


class SessionWorkers(Generic[State]):
    """`submit(job, arg)` runs `job(state, arg)` on whichever thread is free; each thread holds one state."""

    def __init__(self, states: Sequence[State], name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.outstanding = 0
        """Jobs submitted whose result has not come back to the loop yet, cancelled callers' included: while it is
        0, every thread is idle. Read and written on the event loop only."""
        self._threads = [
            threading.Thread(target=self._serve, args=(state,), name=f"{name}-{i}", daemon=True)
            for i, state in enumerate(states)
        ]
        for thread in self._threads:
            thread.start()

    async def submit(self, job: Callable[[State, object], Result], arg: object) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._jobs.put((loop, future, job, arg))
        self.outstanding += 1
        return await future

    def close(self) -> None:
        """Let queued jobs finish, then stop every thread and wait for it. Blocks; call from a thread."""
        for _ in self._threads:
            self._jobs.put(_STOP)
        for thread in self._threads:
            thread.join()

    def _serve(self, state: State) -> None:
        while (item := self._jobs.get()) is not _STOP:
            loop, future, job, arg = item
            try:
                result = job(state, arg)
            except BaseException as exc:  # handed to the awaiting coroutine, as an executor would
                self._deliver(loop, future, None, exc)
            else:
                self._deliver(loop, future, result, None)

    def _deliver(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: object,
                 error: BaseException | None) -> None:  # fmt: skip
        def settle() -> None:
            self.outstanding -= 1
            _settle(future, result, error)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle)


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.cancelled():  # the caller went away; the batch ran anyway, as with an executor
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
