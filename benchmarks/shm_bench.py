"""System shared memory against the network doors, beside in-process ONNX Runtime, in one run: throughput and p50/p99
latency at 1 and 8 clients for a 3x224x224 FP32 ResNet-50, the same input through a graph that costs next to nothing
(rgb224: the transport alone), and the digits CNN (1x16x16), through

    shm    tritonclient.grpc with the input and the output in system shared memory regions (only names cross gRPC)
    grpc   tritonclient.grpc, tensors in raw_input_contents / raw_output_contents
    rest   tritonclient.http, tensors in the binary extension

Each client is its own process (a client never waits on another's GIL) and, like a real one, writes a fresh input
and reads the output back every request: into and out of its regions for shm, set_data_from_numpy and as_numpy for
the others. The in-process column is `cnnserve bench`'s ceiling: one ONNX Runtime session with the model's thread
count running a batch of as many items as there are clients, back to back (items/s; its latency is that batch's).

    python benchmarks/shm_bench.py [--seconds 3] [--warmup-s 1] [--clients 1,8] [--digits DIR]

The server is `cnnserve serve --allow-client-shm` in a subprocess on loopback, over a temporary repository: the
ResNet-50 is the `onnx` package's light_resnet50 (weights made in the graph by ConstantOfShape; its batch axis and
final Reshape opened up here), the digits CNN is copied from --digits (default /work/bench_repo/digits_cnn, else a
small classifier is written). The machine's cores are shared by the server and the clients, as on one host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TRANSPORTS = ("shm", "grpc", "rest")


class Model(NamedTuple):
    name: str
    file: Path
    input: str
    item_shape: tuple[int, ...]
    output: str
    output_items: int  # FP32 values per item
    threads: int  # the config's intra-op threads, which the in-process run uses too


# -- the repository ----------------------------------------------------------------------------------------------


def write_resnet50(repo: Path) -> Model:
    """light_resnet50 (opset 9) with a batch axis: initializers and unused inputs taken out of the inputs, N for the
    first dimension, and the final Reshape's [1, 2048] made [-1, 2048]."""
    source = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"
    model = onnx.load(str(source))
    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    initializers = {t.name for t in kept}
    inputs = [i for i in graph.input if i.name not in initializers and i.name in used]  # also an unused blob queue
    del graph.input[:]
    graph.input.extend(inputs)
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    for index, tensor in enumerate(graph.initializer):
        if tensor.name == "OC2_DUMMY_1":  # the Reshape before the classifier: [1, 2048]
            graph.initializer[index].CopyFrom(numpy_helper.from_array(np.array([-1, 2048], np.int64), tensor.name))
    model.ir_version = 4
    onnx.checker.check_model(model)
    folder = repo / "resnet50"
    (folder / "1").mkdir(parents=True)
    onnx.save(model, str(folder / "1" / "model.onnx"))
    config = {"name": "resnet50", "max_batch_size": 8, "session": {"intra_op_threads": 2}}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return Model("resnet50", folder / "1" / "model.onnx", graph.input[0].name, (3, 224, 224),
                 graph.output[0].name, 1000, 2)  # fmt: skip


def write_rgb224(repo: Path) -> Model:
    """The transport alone: rgb224_model.py's 3x224x224 FP32 input (as ResNet-50's) through a graph that costs next
    to nothing (global average pool, matmul)."""
    weight = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),  # [N,3,1,1]
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),  # [N,3]
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),  # [N,10]
        ],
        "rgb224",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = repo / "rgb224"
    (folder / "1").mkdir(parents=True)
    onnx.save(model, str(folder / "1" / "model.onnx"))
    config = {"name": "rgb224", "max_batch_size": 32, "session": {"intra_op_threads": 1}}
    (folder / "config.json").write_text(json.dumps(config))
    return Model("rgb224", folder / "1" / "model.onnx", "images", (3, 224, 224), "logits", 10, 1)


def write_digits(repo: Path, source: Path) -> Model:
    """The trained digits CNN when `source` holds it, else a train-free stand-in of the same input and output."""
    folder = repo / "digits_cnn"
    if (source / "config.json").is_file():
        shutil.copytree(source, folder)
        config = json.loads((folder / "config.json").read_text())
        if config.get("dynamic_batching"):  # measure the transport, not admission: no refusals by latency budget
            config["dynamic_batching"]["latency_budget_ms"] = 0
            (folder / "config.json").write_text(json.dumps(config, indent=2))
        threads = int(config.get("session", {}).get("intra_op_threads", 1))
        return Model("digits_cnn", folder / "1" / "model.onnx", "images", (1, 16, 16), "logits", 10, threads)
    weight = np.random.default_rng(0).standard_normal((256, 10)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["images"], ["flat"], axis=1),  # [N,256]
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),  # [N,10]
        ],
        "digits_cnn",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (folder / "1").mkdir(parents=True)
    onnx.save(model, str(folder / "1" / "model.onnx"))
    config = {"name": "digits_cnn", "max_batch_size": 128, "session": {"intra_op_threads": 1}}
    (folder / "config.json").write_text(json.dumps(config))
    return Model("digits_cnn", folder / "1" / "model.onnx", "images", (1, 16, 16), "logits", 10, 1)


# -- the server --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(repo: Path, log: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """The server, ready; its log in `log`."""
    grpc_port, rest_port = free_port(), free_port()
    command = [sys.executable, "-m", "cnnserve", "serve", "--model-repository", str(repo), "--allow-client-shm",
               "--grpc-port", str(grpc_port), "--rest-port", str(rest_port), "--http-port", "-1",
               "--log-level", "WARNING"]  # fmt: skip
    with log.open("wb") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    import tritonclient.grpc as grpcclient

    deadline = time.monotonic() + 300
    with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
        while True:
            try:
                if client.is_server_ready():
                    break
            except Exception:  # not listening yet
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise SystemExit(f"the server did not become ready:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
    return server, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{rest_port}"


# -- a client process --------------------------------------------------------------------------------------------


def runner(index: int, model: Model, transport: str, grpc_url: str, rest_url: str, cleanup: list[Callable[[], None]]
           ) -> Callable[[], None]:  # fmt: skip
    """One request of `transport` on `model` with a fresh input each time, the output read back."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    import tritonclient.utils.shared_memory as shm

    data = np.random.default_rng(index).random((1, *model.item_shape), dtype=np.float32)
    shape = list(data.shape)
    if transport == "rest":
        rest = httpclient.InferenceServerClient(rest_url)
        cleanup.append(rest.close)
        rest_input = httpclient.InferInput(model.input, shape, "FP32")
        rest_output = httpclient.InferRequestedOutput(model.output, binary_data=True)

        def over_rest() -> None:
            rest_input.set_data_from_numpy(data, binary_data=True)
            rest.infer(model.name, [rest_input], outputs=[rest_output]).as_numpy(model.output)

        return over_rest
    client = grpcclient.InferenceServerClient(grpc_url)
    cleanup.append(client.close)
    tensor = grpcclient.InferInput(model.input, shape, "FP32")
    output = grpcclient.InferRequestedOutput(model.output)
    if transport == "grpc":

        def over_grpc() -> None:
            tensor.set_data_from_numpy(data)
            client.infer(model.name, [tensor], outputs=[output]).as_numpy(model.output)

        return over_grpc
    in_bytes, out_bytes = data.nbytes, model.output_items * 4
    names = [f"bench_{os.getpid()}_{model.name}_{part}" for part in ("in", "out")]
    sizes = (in_bytes, out_bytes)
    handles = [shm.create_shared_memory_region(n, "/" + n, size) for n, size in zip(names, sizes, strict=True)]
    for name, size in zip(names, sizes, strict=True):
        client.register_system_shared_memory(name, "/" + name, size)

    def release() -> None:
        for name, handle in zip(names, handles, strict=True):
            client.unregister_system_shared_memory(name)
            shm.destroy_shared_memory_region(handle)

    cleanup.insert(0, release)  # before the client closes
    tensor.set_shared_memory(names[0], in_bytes)
    output.set_shared_memory(names[1], out_bytes)

    def over_shm() -> None:
        shm.set_shared_memory_region(handles[0], [data])
        answer = client.infer(model.name, [tensor], outputs=[output]).get_output(model.output)
        shm.get_contents_as_numpy(handles[1], np.float32, list(answer.shape)).copy()

    return over_shm


def client_process(index: int, conn: Connection, grpc_url: str, rest_url: str) -> None:
    """Runs cells as the driver sends them: (model, transport, start_at, end_at) -> (latencies in ms of the requests
    started at or after start_at (wall clock, shared by all clients) and answered by end_at, refusals counted)."""
    from tritonclient.utils import InferenceServerException

    runners: dict[tuple[str, str], Callable[[], None]] = {}
    cleanup: list[Callable[[], None]] = []
    while (cell := conn.recv()) is not None:
        model, transport, start_at, end_at = cell
        run = runners.get((model.name, transport))
        if run is None:
            run = runners[(model.name, transport)] = runner(index, model, transport, grpc_url, rest_url, cleanup)
        latencies, errors = [], 0
        while (began := time.time()) < end_at:
            try:
                run()
            except InferenceServerException:
                errors += began >= start_at
                continue
            finished = time.time()
            if began >= start_at and finished <= end_at:
                latencies.append((finished - began) * 1000)
        conn.send((latencies, errors))
    for step in cleanup:
        step()


# -- the run -----------------------------------------------------------------------------------------------------


class Cell(NamedTuple):
    model: str
    clients: int
    transport: str
    items_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int = 0


def in_process_cell(model: Model, clients: int, seconds: float) -> Cell:
    from cnnserve.benchmarks.in_process import in_process

    batch = np.random.default_rng(0).random((clients, *model.item_shape), dtype=np.float32)
    measured = in_process(model.file, {model.input: batch}, seconds, model.threads, allow_spinning=False)
    return Cell(model.name, clients, "in-process", measured.items_per_s, measured.percentile(50),
                measured.percentile(99))  # fmt: skip


def served_cell(model: Model, clients: int, transport: str, pipes: list[Connection], seconds: float,
                warmup_s: float) -> Cell:  # fmt: skip
    start_at = time.time() + warmup_s
    for conn in pipes[:clients]:
        conn.send((model, transport, start_at, start_at + seconds))
    answers = [conn.recv() for conn in pipes[:clients]]
    latencies = [latency for each, _ in answers for latency in each]
    return Cell(model.name, clients, transport, len(latencies) / seconds, float(np.percentile(latencies, 50)),
                float(np.percentile(latencies, 99)), sum(errors for _, errors in answers))  # fmt: skip


def copy_cost_us(nbytes: int) -> float:
    """What the server pays to copy an input out of its region (the read that follows the size check)."""
    with tempfile.TemporaryFile() as backing:
        backing.truncate(nbytes)
        mapping = mmap.mmap(backing.fileno(), nbytes)
        runs = 200
        started = time.perf_counter()
        for _ in range(runs):
            mapping[0:nbytes]
        cost = (time.perf_counter() - started) / runs * 1e6
        mapping.close()
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed window per cell")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="untimed requests before each cell")
    parser.add_argument("--clients", default="1,8", help="comma-separated client counts")
    parser.add_argument("--digits", type=Path, default=Path("/work/bench_repo/digits_cnn"))
    args = parser.parse_args()
    levels = [int(level) for level in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder) / "repo"
        models = [write_resnet50(repo), write_rgb224(repo), write_digits(repo, args.digits)]
        server, grpc_url, rest_url = start_server(repo, Path(folder) / "server.log")
        context = multiprocessing.get_context("spawn")
        pipes, workers = [], []
        try:
            for index in range(max(levels)):
                here, there = context.Pipe()
                worker = context.Process(target=client_process, args=(index, there, grpc_url, rest_url))
                worker.start()
                pipes.append(here)
                workers.append(worker)
            cells = []
            for model in models:
                for clients in levels:
                    cells.append(in_process_cell(model, clients, args.seconds))
                    for transport in TRANSPORTS:
                        cells.append(served_cell(model, clients, transport, pipes, args.seconds, args.warmup_s))
                        print(f"  {cells[-1]}", file=sys.stderr)
        finally:
            for conn in pipes:
                with contextlib.suppress(BrokenPipeError):  # a client that died
                    conn.send(None)  # each client unregisters and removes its regions
            for worker in workers:
                worker.join(30)
            server.terminate()
            server.wait(60)
    window = f"{args.seconds:g} s a cell after {args.warmup_s:g} s of warm-up"
    print(f"cores: {os.cpu_count()}; {window}; x: ratio to in-process")
    print(f"{'model':<11} {'clients':>7} {'transport':<10} {'items/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'x items/s':>9} {'x p50':>7} {'errors':>6}")  # fmt: skip
    for cell in cells:
        base = next(c for c in cells if (c.model, c.clients, c.transport) == (cell.model, cell.clients, "in-process"))
        print(f"{cell.model:<11} {cell.clients:>7} {cell.transport:<10} {cell.items_per_s:>9.1f} {cell.p50_ms:>8.2f} "
              f"{cell.p99_ms:>8.2f} {cell.items_per_s / base.items_per_s:>9.2f} "
              f"{cell.p50_ms / base.p50_ms:>7.2f} {cell.errors:>6}")  # fmt: skip
    for model in models:
        nbytes = int(np.prod(model.item_shape)) * 4
        cost = copy_cost_us(nbytes)
        print(f"the server's copy of one {model.name} input out of its region ({nbytes} bytes): {cost:.1f} us")


if __name__ == "__main__":
    main()
