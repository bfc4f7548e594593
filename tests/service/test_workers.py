"""execution.workers: jobs run on the threads that own each state, results and errors reach the awaiting coroutine."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cnnserve.service.execution.workers import SessionWorkers


def test_results_errors_and_states() -> None:
    workers = SessionWorkers(["a", "b"], name="test")

    def job(state: str, arg: object) -> str:
        if arg == "fail":
            raise ValueError("refused")
        return f"{state}:{arg}:{threading.current_thread().name}"

    async def run() -> None:
        answers = await asyncio.gather(*(workers.submit(job, i) for i in range(20)))
        assert {a.split(":")[0] for a in answers} <= {"a", "b"}
        for answer in answers:  # each state stays on its own thread
            state, _, thread = answer.split(":")
            assert thread == f"test-{'ab'.index(state)}"
        with pytest.raises(ValueError, match="refused"):
            await workers.submit(job, "fail")

    asyncio.run(run())
    workers.close()


def test_states_run_in_parallel() -> None:
    """Two jobs that each wait for the other finish only if the two states' threads run at once."""
    barrier = threading.Barrier(2, timeout=5)
    workers = SessionWorkers([1, 2], name="parallel")

    def job(state: int, arg: object) -> int:
        barrier.wait()
        return state

    async def run() -> list[int]:
        return sorted(await asyncio.gather(workers.submit(job, None), workers.submit(job, None)))

    assert asyncio.run(run()) == [1, 2]
    workers.close()


def test_a_caller_that_goes_away_does_not_break_the_thread() -> None:
    release = threading.Event()
    workers = SessionWorkers(["only"], name="cancel")

    def slow(state: str, arg: object) -> str:
        release.wait(5)
        return "late"

    async def run() -> str:
        waiting = asyncio.ensure_future(workers.submit(slow, None))
        await asyncio.sleep(0.05)
        waiting.cancel()
        release.set()
        return await workers.submit(lambda state, arg: f"{state} {arg}", "next")

    assert asyncio.run(run()) == "only next"
    workers.close()


def test_close_lets_queued_jobs_finish() -> None:
    workers = SessionWorkers([0], name="close")
    done: list[int] = []

    def record(state: int, arg: object) -> None:
        assert isinstance(arg, int)
        done.append(arg)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        pending = [asyncio.ensure_future(workers.submit(record, i)) for i in range(5)]
        await asyncio.sleep(0)  # the jobs are queued
        await loop.run_in_executor(None, workers.close)
        await asyncio.gather(*pending)

    asyncio.run(run())
    assert done == [0, 1, 2, 3, 4]
