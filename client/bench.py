"""`cnnserve bench`: drives a running server with N concurrent clients and compares with in-process ONNX Runtime.

The client is kept lean so it does not starve a server on the same machine: each request is serialized once and
sent as bytes through a raw gRPC method (no protobuf work per call), replies are not parsed, all from one asyncio
loop. Works against any server that speaks the Open Inference Protocol over gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.client.cli import add_connection_flags, connection_options
from cnnserve.client.connection import Connection

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
# A ModelStreamInferResponse that starts with field 1 (error_message, tag 0x0a) carries an error, not a response: told
# apart by one byte, so the client parses no replies.
STREAM_ERROR_TAG = 0x0A
NUMPY_OF = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
            "UINT8": np.uint8, "INT8": np.int8, "BOOL": np.bool_}


@dataclass(frozen=True)
class Measurement:
    label: str
    items_per_s: float
    requests: int
    latencies_ms: tuple[float, ...]

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        return float(np.percentile(self.latencies_ms, q))


def random_inputs(metadata: pb.ModelMetadataResponse, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for tensor in metadata.inputs:
        shape = [batch if i == 0 and d == -1 else (1 if d == -1 else d) for i, d in enumerate(tensor.shape)]
        dtype = NUMPY_OF.get(tensor.datatype)
        if dtype is None:
            raise SystemExit(f"bench: input '{tensor.name}' has datatype {tensor.datatype}, which bench cannot fill")
        if np.issubdtype(dtype, np.integer):
            inputs[tensor.name] = rng.integers(0, 10, shape).astype(dtype)
        else:
            inputs[tensor.name] = rng.standard_normal(shape).astype(dtype)
    return inputs


def serialized_request(model: str, metadata: pb.ModelMetadataResponse, inputs: dict[str, np.ndarray]) -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    for tensor in metadata.inputs:
        values = inputs[tensor.name]
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(values.shape))
        request.raw_input_contents.append(values.tobytes())
    return request.SerializeToString()


UNLIMITED = Connection.build(max_message_bytes=-1)
"""Plaintext, no token, no message size limit."""


async def fetch_metadata(url: str, model: str, connection: Connection = UNLIMITED) -> pb.ModelMetadataResponse:
    async with connection.aio_channel(url) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelMetadata",
            request_serializer=pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=pb.ModelMetadataResponse.FromString,
        )
        return await call(  # type: ignore[no-any-return]
            pb.ModelMetadataRequest(name=model), timeout=10, metadata=connection.metadata
        )


async def drive(url: str, payload: bytes, items_per_request: int, concurrency: int, duration_s: float,
                warmup_s: float, server_pids: Sequence[int] = (),
                connection: Connection = UNLIMITED, streaming: bool = False) -> tuple[Measurement, float]:
    """N workers send the same pre-serialized request back to back; only the timed window counts. streaming: each
    worker keeps one ModelStreamInfer stream and sends its next request when the previous answer arrives."""
    async with connection.aio_channel(url) as channel:
        infer = channel.unary_unary(INFER_METHOD)  # bytes in, bytes out
        latencies: list[float] = []
        failures = 0
        loop = asyncio.get_running_loop()
        start = loop.time() + warmup_s
        end = start + duration_s

        async def stream_worker() -> None:
            nonlocal failures
            stream = channel.stream_stream(STREAM_METHOD)(metadata=connection.metadata)
            while (sent := loop.time()) < end:
                await stream.write(payload)
                reply = await stream.read()
                if not isinstance(reply, bytes) or reply[:1] == bytes([STREAM_ERROR_TAG]):
                    failures += 1
                    if not isinstance(reply, bytes):  # the stream ended: its status says why
                        raise SystemExit(f"bench: stream ended: {await stream.code()} {await stream.details()}")
                elif sent >= start:
                    latencies.append((loop.time() - sent) * 1000)
            await stream.done_writing()

        async def worker() -> None:
            nonlocal failures
            while True:
                sent = loop.time()
                if sent >= end:
                    return
                try:
                    await infer(payload, timeout=30, metadata=connection.metadata)
                except grpc.aio.AioRpcError:
                    failures += 1
                    continue
                if sent >= start:
                    latencies.append((loop.time() - sent) * 1000)

        cpu_window: list[float] = []

        async def sample_cpu() -> None:
            # The server's CPU is read at the edges of the timed window, so warm-up is not charged to it.
            for edge in (start, end):
                await asyncio.sleep(max(0.0, edge - loop.time()))
                cpu_window.append(cpu_seconds(server_pids))

        await asyncio.gather(sample_cpu(), *((stream_worker if streaming else worker)() for _ in range(concurrency)))
        if failures:
            print(f"  warning: {failures} requests failed")
        items = len(latencies) * items_per_request
        measurement = Measurement(f"served c={concurrency}", items / duration_s, len(latencies), tuple(latencies))
        return measurement, cpu_window[1] - cpu_window[0]


def in_process(model_file: Path, inputs: dict[str, np.ndarray], duration_s: float, threads: int,
               allow_spinning: bool, instances: int = 1) -> Measurement:
    """The same model file run directly by ONNX Runtime with the server's thread settings (`instances` sessions of
    `threads` intra-op threads, each running the whole batch back to back in its own thread): the ceiling."""
    import threading

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    sessions = [ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
                for _ in range(instances)]
    batch = next(iter(inputs.values())).shape[0]
    for session in sessions:
        for _ in range(3):
            session.run(None, inputs)
    latencies: list[float] = []
    end = time.perf_counter() + duration_s

    def loop(session: ort.InferenceSession) -> None:
        while (now := time.perf_counter()) < end:
            session.run(None, inputs)
            latencies.append((time.perf_counter() - now) * 1000)  # list.append is atomic under the GIL

    started = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(s,)) for s in sessions]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return Measurement(f"in-process b={batch}", len(latencies) * batch / elapsed, len(latencies), tuple(latencies))


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of the given processes and their children (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnserve bench", description=__doc__)
    p.add_argument("--url", default="127.0.0.1:8001", help="server address HOST:PORT")
    p.add_argument("--model", required=True)
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated concurrency levels")
    p.add_argument("--batch-size", type=int, default=1, help="items per request")
    p.add_argument("--streaming", action="store_true",
                   help="one ModelStreamInfer stream per client instead of a unary call per request")
    p.add_argument("--duration-s", type=float, default=10.0, help="timed window per level")
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--model-file", type=Path, help="the model's ONNX file, for the in-process comparison")
    p.add_argument("--threads", type=int, default=0, help="in-process intra-op threads (match the server's)")
    p.add_argument("--allow-spinning", action="store_true", help="in-process: let ORT threads spin-wait")
    p.add_argument("--instances", type=int, default=1, help="in-process: parallel sessions (match instance_count)")
    p.add_argument("--server-pid", type=int, action="append", default=[],
                   help="server process id(s): report server CPU time per request")
    add_connection_flags(p)
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    levels = [int(c) for c in args.concurrency.split(",") if c]
    connection = Connection.build(max_message_bytes=-1, **connection_options(args))
    metadata = asyncio.run(fetch_metadata(args.url, args.model, connection))
    print(f"model={args.model} url={args.url} batch_size={args.batch_size} duration_s={args.duration_s} "
          f"cpus={os.cpu_count()} calls={'streaming' if args.streaming else 'unary'}")
    header = (f"{'concurrency':>11} {'items/s':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
              f"{'raw b':>6} {'raw items/s':>12} {'raw p50':>8} {'ratio':>6} {'srv cpu ms/req':>15}")
    print(header)
    for concurrency in levels:
        inputs = random_inputs(metadata, args.batch_size)
        payload = serialized_request(args.model, metadata, inputs)
        served, server_cpu_s = asyncio.run(drive(args.url, payload, args.batch_size, concurrency, args.duration_s,
                                                 args.warmup_s, args.server_pid, connection, args.streaming))
        line = (f"{concurrency:>11} {served.items_per_s:>10.1f} {served.percentile(50):>8.2f} "
                f"{served.percentile(90):>8.2f} {served.percentile(99):>8.2f}")
        if args.model_file is not None:
            raw_batch = concurrency * args.batch_size
            raw = in_process(args.model_file, random_inputs(metadata, raw_batch), min(args.duration_s, 5.0),
                             args.threads, args.allow_spinning, args.instances)
            line += (f" {raw_batch:>6} {raw.items_per_s:>12.1f} {raw.percentile(50):>8.2f} "
                     f"{served.items_per_s / raw.items_per_s:>6.2f}")
        else:
            line += f" {'-':>6} {'-':>12} {'-':>8} {'-':>6}"
        if args.server_pid and served.requests:
            per_request = server_cpu_s * 1000 / served.requests
            line += f" {per_request:>15.3f}"
        print(line, flush=True)
    print("ratio = served items/s / in-process items/s at batch = concurrency x batch-size, same thread settings")
    return 0
