"""Overload with and without a latency budget, in one run: the same model file served twice from one server, as
MODEL_nobudget (dynamic_batching.latency_budget_ms 0, the queue bound alone) and MODEL_budget (the budget given).

For each, in turn: its capacity (closed loop, --clients clients), then open-loop load at --overload x that capacity
for --seconds (requests sent on schedule whatever the answers, as real traffic arrives), and a closed loop of
--crowd clients (the issue's 128-client case). Prints accepted throughput, latency percentiles of the accepted
requests, the refusals and how fast they came back.

    python benchmarks/latency_budget.py model_repository digits_cnn --budget-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.benchmarks.local_server import LocalServer

INFER = "/inference.GRPCInferenceService/ModelInfer"


def variants(source: Path, model: str, budget_ms: int, into: Path) -> None:
    """MODEL_nobudget and MODEL_budget: copies of the newest version of MODEL with their own config."""
    folder = source / model
    version = max(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    for suffix, budget in (("nobudget", 0), ("budget", budget_ms)):
        target = into / f"{model}_{suffix}"
        shutil.copytree(folder / str(version), target / "1")
        for extra in folder.iterdir():
            if extra.is_file() and extra.name != "config.json":
                shutil.copy(extra, target / extra.name)
        config = json.loads((folder / "config.json").read_text())
        config["name"] = target.name
        config.setdefault("dynamic_batching", {})["latency_budget_ms"] = budget
        (target / "config.json").write_text(json.dumps(config, indent=2))


def payload(model: str, source: Path, name: str) -> bytes:
    config = json.loads((source / name / "config.json").read_text())
    tensor = config["inputs"][0]
    shape = [1 if d < 0 else d for d in tensor["dims"]]
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    request = pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name=tensor["name"], datatype="FP32", shape=shape)],
        raw_input_contents=[data.tobytes()],
    )
    return request.SerializeToString()


async def closed_loop(address: str, body: bytes, clients: int, seconds: float) -> tuple[float, list[float], int]:
    """(answered per second, accepted latencies in ms, refused)."""
    latencies: list[float] = []
    refused = 0
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(INFER)
        end = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal refused
            while (sent := time.perf_counter()) < end:
                try:
                    await call(body, timeout=30)
                except grpc.aio.AioRpcError:
                    refused += 1
                    continue
                latencies.append((time.perf_counter() - sent) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return len(latencies) / (time.perf_counter() - began), latencies, refused


async def open_loop(address: str, body: bytes, rate: float, seconds: float) -> tuple[list[float], list[float], float]:
    """(accepted latencies ms, refusal latencies ms, elapsed s): a request every 1/rate s, whatever the answers."""
    accepted: list[float] = []
    refused: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(INFER)
        loop = asyncio.get_running_loop()
        began = loop.time()

        async def one() -> None:
            sent = loop.time()
            try:
                await call(body, timeout=30)
            except grpc.aio.AioRpcError:
                refused.append((loop.time() - sent) * 1000)
                return
            accepted.append((loop.time() - sent) * 1000)

        tasks = []
        for index in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, began + index / rate - loop.time()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        return accepted, refused, loop.time() - began


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    p50, p99 = np.percentile(values, [50, 99])
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"


async def measure(address: str, body: bytes, name: str, args: argparse.Namespace) -> None:
    await closed_loop(address, body, args.clients, 1.0)  # warm the path
    capacity, _, _ = await closed_loop(address, body, args.clients, args.seconds)
    accepted, refused, elapsed = await open_loop(address, body, args.overload * capacity, args.seconds)
    print(f"{name}: capacity {capacity:.0f} req/s ({args.clients} clients, closed loop)")
    print(f"  open loop at {args.overload:g}x ({args.overload * capacity:.0f} req/s offered): accepted "
          f"{len(accepted) / elapsed:.0f}/s ({len(accepted) / elapsed / capacity:.0%} of capacity; "
          f"{percentiles(accepted)}), refused {len(refused)} ({percentiles(refused)})")  # fmt: skip
    crowd, latencies, turned = await closed_loop(address, body, args.crowd, args.seconds)
    print(f"  closed loop, {args.crowd} clients: answered {crowd:.0f}/s ({percentiles(latencies)}), refused "
          f"{turned}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=Path)
    parser.add_argument("model")
    parser.add_argument("--budget-ms", type=int, default=50)
    parser.add_argument("--clients", type=int, default=32, help="closed-loop clients for the capacity")
    parser.add_argument("--overload", type=float, default=4.0)
    parser.add_argument("--crowd", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        variants(args.repository, args.model, args.budget_ms, repo)
        with LocalServer(repo) as server:
            print(f"# {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())} {args.model}, budget {args.budget_ms} ms")
            for suffix in ("nobudget", "budget"):
                name = f"{args.model}_{suffix}"
                asyncio.run(measure(server.grpc_address, payload(name, repo, name), name, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
