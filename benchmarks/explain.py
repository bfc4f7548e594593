"""What one occlusion explanation costs: a server on loopback, one client explaining one item at a time over gRPC
(tritonclient), against plain inference of the same item; prints the copies per request and p50/p90 latency.

    python benchmarks/explain.py MODEL_REPOSITORY MODEL [REQUESTS] [PATCH] [STRIDE]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

from cnnserve.contracts import features
from cnnserve.contracts.features import occlusion_positions
from tests.conftest import ServerThread, loopback_settings


def timed(client: triton.InferenceServerClient, model: str, tensor: triton.InferInput, requests: int,
          parameters: dict[str, object] | None) -> np.ndarray:  # fmt: skip
    client.infer(model, [tensor], parameters=parameters)  # warm
    seconds = []
    for _ in range(requests):
        started = time.perf_counter()
        client.infer(model, [tensor], parameters=parameters)
        seconds.append(time.perf_counter() - started)
    return np.asarray(seconds) * 1000


def main(argv: list[str]) -> None:
    repo, model = Path(argv[0]), argv[1]
    requests = int(argv[2]) if len(argv) > 2 else 50
    patch = int(argv[3]) if len(argv) > 3 else features.DEFAULT_PATCH
    stride = int(argv[4]) if len(argv) > 4 else features.DEFAULT_STRIDE
    with ServerThread(loopback_settings(repo)) as server, triton.InferenceServerClient(server.grpc_address) as client:
        spec = server.server.models.get(model).spec
        shape = [1, *(d if d > 0 else 16 for d in spec.inputs[0].shape[1:])]
        height, width = shape[-2:]
        copies = len(occlusion_positions(height, patch, stride)) * len(occlusion_positions(width, patch, stride))
        tensor = triton.InferInput(spec.inputs[0].name, shape, "FP32")
        tensor.set_data_from_numpy(np.random.default_rng(0).random(shape, dtype=np.float32))
        plain = timed(client, model, tensor, requests, None)
        explain = {features.EXPLAIN_PARAMETER: "occlusion", features.PATCH_PARAMETER: patch,
                   features.STRIDE_PARAMETER: stride}  # fmt: skip
        explained = timed(client, model, tensor, requests, explain)
        print(f"model={model} input={shape} patch={patch} stride={stride} copies={copies} "
              f"max_batch_size={spec.max_batch_size} requests={requests}")  # fmt: skip
        for name, ms in (("infer", plain), ("explain", explained)):
            print(f"{name:8s} p50 {np.percentile(ms, 50):7.2f} ms  p90 {np.percentile(ms, 90):7.2f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
