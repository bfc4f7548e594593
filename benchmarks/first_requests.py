"""Do the first requests after ready pay for warming the model? Starts a server, and the moment it reports ready
sends N requests of each batch size one after another, then (after a pause) N more of each: the steady state.
Prints p50/p99 of both and their ratio per batch size. Warm-up (service/execution/runtime.py) runs every batch size
the batcher aims at before ready, so the ratios should be ~1 within noise.

    python benchmarks/first_requests.py model_repository digits_cnn [--batches 1,32,128] [--requests 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

from cnnserve.benchmarks.local_server import LocalServer


def timed(client: triton.InferenceServerClient, model: str, inputs: list[triton.InferInput], n: int) -> np.ndarray:
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        client.infer(model, inputs)
        latencies.append((time.perf_counter() - started) * 1000)
    return np.asarray(latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("model")
    parser.add_argument("--batches", default="1,32,128")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--pause-s", type=float, default=2.0)
    args = parser.parse_args()
    with LocalServer(args.repository) as server:
        print(f"ready after {server.ready_after_s:.1f} s; model={args.model} requests={args.requests} per block")
        client = triton.InferenceServerClient(server.grpc_address)
        metadata = client.get_model_metadata(args.model)
        tensor = metadata.inputs[0]
        batches = [int(b) for b in args.batches.split(",") if b]

        def inputs(batch: int) -> list[triton.InferInput]:
            shape = [batch, *(int(d) for d in tensor.shape[1:])]
            images = triton.InferInput(tensor.name, shape, tensor.datatype)
            images.set_data_from_numpy(np.random.default_rng(batch).random(shape, dtype=np.float32))
            return [images]

        # The client's own first infer (tritonclient building its request path) costs it ~3-5 ms here, before any
        # byte reaches the server: paid on a model name the server refuses before touching any model, so the first
        # block times the server's warm-up and not the client's.
        try:
            client.infer(f"{args.model}-not-a-model", inputs(batches[0]))
        except triton.InferenceServerException as err:
            if err.status() != "StatusCode.NOT_FOUND":
                raise
        first = {batch: timed(client, args.model, inputs(batch), args.requests) for batch in batches}
        time.sleep(args.pause_s)
        steady = {batch: timed(client, args.model, inputs(batch), args.requests) for batch in batches}
        print(f"{'batch':>6} {'first p50':>10} {'first p99':>10} {'first max':>10} {'steady p50':>11} "
              f"{'steady p99':>11} {'p99 ratio':>10}")  # fmt: skip
        for batch in batches:
            f, s = first[batch], steady[batch]
            print(f"{batch:>6} {np.percentile(f, 50):>10.2f} {np.percentile(f, 99):>10.2f} {f.max():>10.2f} "
                  f"{np.percentile(s, 50):>11.2f} {np.percentile(s, 99):>11.2f} "
                  f"{np.percentile(f, 99) / np.percentile(s, 99):>10.2f}")  # fmt: skip
        print("ms per request, one client, requests sent back to back; first = the first block after ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
