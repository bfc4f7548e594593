"""The server's own request path without any transport: N coroutines call the servicer's inference path (decode,
batcher, session thread, encode) on one model, and the CPU per request is printed per thread (Linux /proc), so what
cnnserve costs can be told apart from what gRPC costs.

    python benchmarks/request_path.py MODEL_REPOSITORY MODEL [SECONDS] [CONCURRENCY] [GAP_US]

GAP_US: each client sleeps that long between requests (the loop blocked, using no CPU), as a closed-loop client's
round trip would leave; with 500 and one client the model is idle at each arrival, as one gRPC client finds it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import uvloop

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.service.edge.server import InferenceServer
from cnnserve.service.protocol.servicer import InferenceServicer
from cnnserve.service.settings import Settings


def thread_cpu_seconds() -> dict[str, float]:
    tick = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for tid in os.listdir("/proc/self/task"):
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        seconds[tid] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def request_bytes(server: InferenceServer, model: str) -> bytes:
    spec = server.models.get(model).spec
    inputs, raw = [], []
    for tensor in spec.inputs:
        shape = [1 if d < 0 else d for d in tensor.shape]
        array = np.random.default_rng(0).random(shape).astype(np.float32)
        inputs.append(pb.ModelInferRequest.InferInputTensor(name=tensor.name, datatype=tensor.datatype, shape=shape))
        raw.append(array.tobytes())
    return pb.ModelInferRequest(model_name=model, inputs=inputs, raw_input_contents=raw).SerializeToString()


async def main(repository: Path, model: str, seconds: float, concurrency: int, gap_s: float) -> None:
    settings = Settings.from_env({}, model_repository=repository, model_control_mode="explicit",
                                 startup_models=(model,), grpc_port=0, http_port=-1, host="127.0.0.1")  # fmt: skip
    server = InferenceServer(settings)
    await server.start()
    servicer = InferenceServicer(server.plane)
    data = request_bytes(server, model)
    count, stop = 0, 0.0

    async def client() -> None:
        nonlocal count
        while time.monotonic() < stop:
            reply = await servicer._infer(pb.ModelInferRequest.FromString(data), None)
            reply.SerializeToString()
            count += 1
            if gap_s:
                time.sleep(gap_s)

    for timed in (False, True):  # a warm-up round, then the measured one
        count, stop = 0, time.monotonic() + (seconds if timed else 1.0)
        before, started = thread_cpu_seconds(), time.monotonic()
        await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed, after = time.monotonic() - started, thread_cpu_seconds()
    loop_thread = str(threading.get_native_id())
    print(
        f"model={model} concurrency={concurrency} gap_us={gap_s * 1e6:.0f} requests={count} "
        f"requests/s={count / elapsed:.0f}"
    )
    for tid, cpu in sorted(after.items(), key=lambda item: before.get(item[0], 0.0) - item[1]):
        used = cpu - before.get(tid, 0.0)
        if used > 0.01:
            print(f"  {'event loop' if tid == loop_thread else 'thread ' + tid}: {used * 1e3 / count:.4f} ms/request")
    total = sum(cpu - before.get(tid, 0.0) for tid, cpu in after.items())
    print(f"  all threads: {total * 1e3 / count:.4f} ms/request")
    await server.stop(0.5)


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 2:
        raise SystemExit(__doc__)
    seconds, concurrency = float(args[2]) if len(args) > 2 else 5.0, int(args[3]) if len(args) > 3 else 32
    uvloop.run(main(Path(args[0]), args[1], seconds, concurrency, float(args[4]) * 1e-6 if len(args) > 4 else 0.0))
