"""How many Python function calls one ModelInfer costs on the event loop's thread, from the servicer's handler to its
reply (gRPC's own C++ and the session thread not counted): once for a request that runs inline, once for one that
goes through the batcher's queue to a session thread. cProfile counts calls, not time, so the figure is the same on
a busy and an idle machine.

    python benchmarks/call_count.py MODEL_REPOSITORY MODEL [REQUESTS]

Works on older checkouts of the tree too, so two trees can be compared (run it with each tree's own python).
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import pstats
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.service.edge.server import InferenceServer
from cnnserve.service.protocol.servicer import InferenceServicer
from cnnserve.service.settings import Settings


class NoDeadline:
    """What the handler asks of its gRPC context on the accepting path: the time remaining (none)."""

    def time_remaining(self) -> None:
        return None


def copy_model(source: Path, target: Path, model: str, inline: bool) -> None:
    """The model's newest version, copied (the repository refuses links that lead outside it), with a config that
    lets runs go inline (as published) or never."""
    folder = target / model
    versions = sorted(int(p.name) for p in (source / model).iterdir() if p.name.isdigit())
    (folder / str(versions[-1])).mkdir(parents=True)
    shutil.copy(source / model / str(versions[-1]) / "model.onnx", folder / str(versions[-1]) / "model.onnx")
    config = json.loads((source / model / "config.json").read_text())
    config.setdefault("session", {})["inline_run_max_us"] = config.get("session", {}).get("inline_run_max_us", 400)
    if not inline:
        config["session"]["inline_run_max_us"] = 0
    config.pop("labels_file", None)
    (folder / "config.json").write_text(json.dumps(config))


def request(server: InferenceServer, model: str) -> pb.ModelInferRequest:
    spec = server.models.get(model).spec
    message = pb.ModelInferRequest(model_name=model)
    for tensor in spec.inputs:
        shape = [1 if d == -1 else d for d in tensor.shape]
        message.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=shape)
        dtype = np.float32 if tensor.datatype == "FP32" else np.int64
        message.raw_input_contents.append(np.zeros(shape, dtype).tobytes())
    return message


async def count(repository: Path, model: str, requests: int) -> int:
    server = InferenceServer(Settings(model_repository=repository, host="127.0.0.1", grpc_port=0, http_port=-1,
                                      rest_port=-1, execution_providers=("cpu",)))  # fmt: skip
    await server.start()
    try:
        try:
            servicer = InferenceServicer(server.plane)  # type: ignore[call-arg, attr-defined]
        except (TypeError, AttributeError):  # the tree before the data plane
            servicer = InferenceServicer(server.settings, server.models, server.gate, server.path)  # type: ignore[arg-type,call-arg]
        message, context = request(server, model), NoDeadline()
        for _ in range(50):  # warm: pruned sessions, estimates, the inline gate's history
            await servicer.ModelInfer(message, context)
            await asyncio.sleep(0.002)  # a client's round trip: the model is idle at the next arrival
        profile = cProfile.Profile()
        total = 0
        for _ in range(requests):
            await asyncio.sleep(0.002)
            profile.enable()
            await servicer.ModelInfer(message, context)
            profile.disable()
        total = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
        return int(total) // requests
    finally:
        await server.stop(1.0)


def main() -> None:
    repository, model = Path(sys.argv[1]), sys.argv[2]
    requests = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    for label, inline in (("inline", True), ("queued", False)):
        with tempfile.TemporaryDirectory() as folder:
            copy_model(repository, Path(folder), model, inline)
            calls: Any = asyncio.run(count(Path(folder), model, requests))
            print(f"{model} {label}: {calls} Python calls per request on the loop's thread")
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
