"""In-process ONNX Runtime throughput on one model file with the server's thread settings: the ceiling that
`cnnserve bench` compares a server with, and the speed figure of the quantiser's gate (training/variants/gate.py).
Needs onnxruntime, numpy and measurement.py only: the one benchmark module training imports (an import-linter
contract), so the gate times a variant without reaching the server's or the client's code."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cnnserve.benchmarks.measurement import Measurement


def in_process(
    model_file: Path,
    inputs: dict[str, np.ndarray],
    duration_s: float,
    threads: int,
    allow_spinning: bool,
    instances: int = 1,
    outputs: Sequence[str] = (),
) -> Measurement:
    """The same model file run directly by ONNX Runtime with the server's thread settings (`instances` sessions of
    `threads` intra-op threads, each running the whole batch back to back in its own thread): the ceiling.
    outputs: the names session.run is given (all when empty); ONNX Runtime still runs the whole graph."""
    wanted = list(outputs) or None
    sessions = [_session(model_file, threads, allow_spinning) for _ in range(instances)]
    batch = next(iter(inputs.values())).shape[0]
    for session in sessions:
        for _ in range(3):
            session.run(wanted, inputs)
    latencies: list[float] = []
    end = time.perf_counter() + duration_s

    def loop(session: ort.InferenceSession) -> None:
        while (now := time.perf_counter()) < end:
            session.run(wanted, inputs)
            latencies.append((time.perf_counter() - now) * 1000)  # list.append is atomic under the GIL

    started = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(s,)) for s in sessions]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return Measurement(f"in-process b={batch}", len(latencies) * batch / elapsed, len(latencies), tuple(latencies))


@dataclass(frozen=True)
class PacedRuns:
    """Single runs with a pause between them, as one closed-loop client's requests reach a server."""

    pause_s: float
    runs: int
    p50_ms: float
    cpu_ms_per_run: float


def paced_in_process(model_file: Path, inputs: dict[str, np.ndarray], duration_s: float, threads: int,
                     allow_spinning: bool, pause_s: float, outputs: Sequence[str] = ()) -> PacedRuns:  # fmt: skip
    """One session running `inputs`, sleeping `pause_s` after each run. Back to back, a run finds its weights and
    code in the caches; one client's server finds them cold after each round trip, and on this machine a cold run
    of a small model takes 1.3-3x as long (the DCGAN generator: 0.21 against 0.16 ms). This is that model's share
    of a served one-client request."""
    wanted = list(outputs) or None
    session = _session(model_file, threads, allow_spinning)
    for _ in range(3):
        session.run(wanted, inputs)
    latencies, cpu_s = [], 0.0
    end = time.perf_counter() + duration_s
    while (now := time.perf_counter()) < end:
        cpu = time.thread_time()  # threads > 1 would add pool threads' CPU, which thread_time does not see
        session.run(wanted, inputs)
        latencies.append((time.perf_counter() - now) * 1000)
        cpu_s += time.thread_time() - cpu
        time.sleep(pause_s)
    return PacedRuns(pause_s, len(latencies), float(np.median(latencies)), cpu_s * 1000 / len(latencies))


def _session(model_file: Path, threads: int, allow_spinning: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
