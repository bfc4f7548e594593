"""Where a served model's batches ran, second by second, under `cnnserve bench` at each concurrency: on the event loop
or on a session thread, and how many items they held. Checks that the inline-or-thread gate holds steady under
load (threads at 32 clients, the loop at one) rather than flip between runs. Runs a server from the checkout whose
Python runs this file (its runtime's one run function is wrapped to note the thread it ran on), so two checkouts can
be compared in one sitting.

    python benchmarks/placement_check.py REPOSITORY MODEL [SECONDS] [LEVELS]    e.g. /work/bench_repo digits_cnn 8 1,32
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

PORT = 18071


def serve(repository: Path, model: str, samples: Path) -> None:
    """The server process: `cnnserve serve` with a sampler that writes one line a second to `samples`."""
    import uvloop

    from cnnserve.service.edge.server import InferenceServer
    from cnnserve.service.settings import Settings

    settings = Settings.from_env({}, model_repository=repository, model_control_mode="explicit",
                                 startup_models=(model,), grpc_port=PORT, http_port=-1, host="127.0.0.1")  # fmt: skip
    runs: list[tuple[bool, int]] = []  # (on the loop, rows), appended from every thread (list.append is atomic)

    async def main() -> None:
        server = InferenceServer(settings)
        await server.start()
        runtime: Any = server.models.get(model)._runtime
        loop_thread, run_sync = threading.get_ident(), runtime._run_sync

        def noted(instance: Any, arg: Any) -> Any:
            inputs = arg[0]
            runs.append((threading.get_ident() == loop_thread, len(next(iter(inputs.values())))))
            return run_sync(instance, arg)

        runtime._run_sync = noted
        with samples.open("w") as out:
            while True:
                await asyncio.sleep(1.0)
                taken, runs[:] = runs[:], []
                loop_runs = [rows for on_loop, rows in taken if on_loop]
                thread_runs = [rows for on_loop, rows in taken if not on_loop]
                sample = {"t": time.time(), "loop": len(loop_runs), "loop_items": sum(loop_runs),
                          "thread": len(thread_runs), "thread_items": sum(thread_runs)}  # fmt: skip
                out.write(json.dumps(sample) + "\n")
                out.flush()

    uvloop.run(main())


def main(repository: Path, model: str, seconds: float, levels: list[int]) -> None:
    here = Path(sys.executable).parent
    samples = Path(f"/tmp/placement_check_{os.getpid()}.jsonl")
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(repository), model, str(samples)],
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while subprocess.run([here / "cnnserve", "health", "--url", f"127.0.0.1:{PORT}"], capture_output=True
                             ).returncode:  # fmt: skip
            time.sleep(0.3)
        windows = []
        for level in levels:
            started = time.time()
            bench = subprocess.run([here / "cnnserve", "bench", "--url", f"127.0.0.1:{PORT}", "--model", model,
                                    "--concurrency", str(level), "--duration-s", str(seconds), "--warmup-s", "1"],
                                   capture_output=True, text=True, check=True)  # fmt: skip
            windows.append((level, started, bench.stdout.splitlines()[2:3]))
            time.sleep(1.5)
    finally:
        server.terminate()
        server.wait()
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    samples.unlink()
    for level, start, row in windows:
        # The seconds inside the level's timed part: after its warm-up second, before its clients stop.
        inside = [s for s in lines if start + 2.0 <= s["t"] <= start + 1.5 + seconds]
        print(f"clients={level}: {' '.join(row)}")
        for s in inside:
            runs = s["loop"] + s["thread"]
            print(f"  loop {s['loop']:5d} runs ({s['loop_items'] / max(1, s['loop']):4.1f} items)  "
                  f"thread {s['thread']:5d} runs ({s['thread_items'] / max(1, s['thread']):4.1f} items)  "
                  f"on the loop {s['loop'] / max(1, runs):4.0%}")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
    else:
        main(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 8.0,
             [int(n) for n in (sys.argv[4] if len(sys.argv) > 4 else "1,32").split(",")])  # fmt: skip
