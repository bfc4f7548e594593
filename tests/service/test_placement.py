"""scheduling.placement: where a batch runs (the event loop or a session thread), against the real runtime wired to
a batcher as a served model wires them, and the loop-load clock the decision reads. No mocks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cnnserve.contracts import layout
from cnnserve.service.execution.runtime import Runtime
from cnnserve.service.scheduling.batcher import Batcher
from cnnserve.service.scheduling.placement import INLINE_IDLE_GAP_S, INLINE_LOOP_BUSY_MAX, Placement, ThreadLoad
from tests import onnx_models


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    onnx_models.write_classifier(root)
    return root


def wired(runtime: Runtime, **options: Any) -> tuple[Batcher, Placement]:
    """A batcher in front of `runtime` with its placement, as registry/served.py wires them."""
    placement = Placement(runtime.run_on_loop, runtime.loop_ready, **options)
    return Batcher(runtime.run_on_thread, max_batch_size=8, max_queue_delay_us=0, placement=placement), placement


def _finished_without_suspending(coroutine: Any) -> Any:
    """Steps `coroutine` once: its result when it finished in that step; AssertionError when it suspended (a run
    handed to a session thread suspends until the thread answers)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise AssertionError("the run suspended: it went to a session thread")


def test_a_tiny_run_on_an_idle_model_is_done_on_the_event_loop(repo: Path) -> None:
    runtime = Runtime(repo / "classifier" / "1" / "model.onnx")
    images = np.random.default_rng(0).random((2, 1, 4, 4), dtype=np.float32)

    async def main() -> None:
        # A roomy threshold: what is tested is the decision, not whether a loaded machine measures this run under
        # the default 400 us (times are taken around the run, the thread hand-off included).
        batcher, placement = wired(runtime, inline_run_max_us=20_000)
        assert not placement.inline(2, None)  # nothing measured yet: the first goes to a thread
        for _ in range(2):  # the first run at a shape pays ORT's allocations; the second's time replaces it
            await batcher.submit({"images": images})
        assert placement.times.measured(2) is not None
        await asyncio.sleep(INLINE_IDLE_GAP_S * 2)
        assert placement.inline(2, None)
        outputs = _finished_without_suspending(batcher.submit({"images": images}))
        np.testing.assert_allclose(outputs["logits"], onnx_models.classifier_reference(images), rtol=1e-5)
        # Nor at a batch size never measured, nor while another run is in a thread.
        await asyncio.sleep(INLINE_IDLE_GAP_S * 2)
        assert not placement.inline(1, None)
        first = asyncio.ensure_future(runtime.run_on_thread({"images": images[:1]}))
        await asyncio.sleep(0)  # it is in the thread now
        assert not placement.inline(2, None)
        await first
        await batcher.close()

    asyncio.run(main())
    runtime.close()


def test_right_after_a_run_the_model_is_not_idle(repo: Path) -> None:
    """Under load the next batch comes within microseconds of the last: it goes to a thread, as before."""
    runtime = Runtime(repo / "classifier" / "1" / "model.onnx")
    images = np.zeros((1, 1, 4, 4), np.float32)

    async def main() -> None:
        batcher, placement = wired(runtime, idle_gap_s=60.0)
        for _ in range(3):
            await batcher.submit({"images": images})
        assert not placement.inline(1, None)
        await batcher.close()

    asyncio.run(main())
    runtime.close()


def spin_cpu(seconds: float) -> None:
    """Keep this thread on the CPU for `seconds` of its own CPU time, as gRPC's work keeps a loop under load."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_a_busy_event_loop_sends_tiny_runs_to_the_threads(repo: Path) -> None:
    """Many clients keep the loop busy while gRPC's queues, not the batcher's, hold the waiting requests: the model
    looks idle at each arrival, but a run in a thread lets the loop take the next requests and batches form."""
    runtime = Runtime(repo / "classifier" / "1" / "model.onnx")
    images = np.zeros((1, 1, 4, 4), np.float32)

    async def main() -> None:
        batcher, placement = wired(runtime)
        for _ in range(2):
            await batcher.submit({"images": images})
        await asyncio.sleep(0.005)
        assert placement.inline(1, None)  # the loop slept since the last run
        _finished_without_suspending(batcher.submit({"images": images}))
        spin_cpu(0.005)
        assert placement.loop_load.share_since_mark(time.monotonic()) > INLINE_LOOP_BUSY_MAX
        assert not placement.inline(1, None)  # busy since the last run: to a thread
        await batcher.submit({"images": images})
        await asyncio.sleep(0.01)
        assert placement.inline(1, None)  # idle again: inline again
        await batcher.close()

    asyncio.run(main())
    runtime.close()


def test_slow_runs_and_a_zero_inline_limit_always_use_the_threads(tmp_path: Path) -> None:
    onnx_models.write_slow_classifier(tmp_path, work=24, dim=384)
    slow_runtime = Runtime(tmp_path / "slow" / "1" / "model.onnx")
    images = np.zeros((1, 1, 4, 4), np.float32)

    async def main() -> None:
        slow_batcher, slow = wired(slow_runtime)
        never_batcher, never = wired(slow_runtime, inline_run_max_us=0)
        for batcher in (slow_batcher, never_batcher):
            for _ in range(3):
                await batcher.submit({"images": images})
                await asyncio.sleep(INLINE_IDLE_GAP_S * 2)
        measured = slow.times.measured(1)
        assert measured is not None and measured > layout.INLINE_RUN_MAX_US / 1e6  # slower than the default limit
        assert not slow.inline(1, None)
        assert not never.inline(1, None)
        for batcher in (slow_batcher, never_batcher):
            await batcher.close()

    asyncio.run(main())
    slow_runtime.close()


def test_without_a_run_on_the_loop_every_batch_goes_to_the_threads() -> None:
    placement = Placement()
    placement.times.observe(1, 1e-6)
    assert not placement.inline(1, None)
    with pytest.raises(ValueError, match="together"):
        Placement(loop_ready=lambda outputs: True)


def test_thread_load_is_the_cpu_share_since_the_mark() -> None:
    load = ThreadLoad()
    assert load.share_since_mark(time.monotonic()) == 0.0  # no mark yet: nothing known, nothing busy
    load.mark(time.monotonic())
    time.sleep(0.01)  # asleep: no CPU
    assert load.share_since_mark(time.monotonic()) < 0.3
    load.mark(time.monotonic())
    until = time.thread_time() + 0.005
    while time.thread_time() < until:  # 5 ms on the CPU
        pass
    assert 0.5 < load.share_since_mark(time.monotonic()) <= 1.0  # near 1 (less only when the machine took the CPU)
