"""`cnnserve bench`: drives a running server with N concurrent clients (grpc_load.py, rest_load.py) and compares it
with the same model file run in-process by ONNX Runtime (in_process.py), in the same run, as a ratio.

It lives with the benchmarks rather than in the client: the SDK must not need onnxruntime, the comparison does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.benchmarks.grpc_load import (
    drive,
    fetch_metadata,
    fetch_optional_outputs,
    random_inputs,
    serialized_request,
)
from cnnserve.benchmarks.in_process import in_process, paced_in_process
from cnnserve.benchmarks.rest_load import drive_rest, rest_request
from cnnserve.client.cli import add_connection_flags, connection_options
from cnnserve.client.connection import Connection


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnserve bench", description=__doc__)
    p.add_argument("--url", default="127.0.0.1:8001", help="server address HOST:PORT")
    p.add_argument("--model", required=True)
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated concurrency levels")
    p.add_argument("--batch-size", type=int, default=1, help="items per request")
    p.add_argument(
        "--sizes",
        default="",
        help="comma-separated sizes of the inputs' variable dimensions after the "
        "batch axis, in order: 64,64 for a segmenter's height and width (default 1 each)",
    )
    p.add_argument(
        "--outputs",
        default="",
        help="comma-separated outputs to ask for (default: what the model "
        "answers unasked); several sets separated by ';' run one after another at each level, compared "
        "with the first: 'boxes,scores,classes;boxes,scores,classes,mask'",
    )
    p.add_argument(
        "--streaming",
        action="store_true",
        help="one ModelStreamInfer stream per client instead of a unary call per request",
    )
    p.add_argument("--duration-s", type=float, default=10.0, help="timed window per level")
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--model-file", type=Path, help="the model's ONNX file, for the in-process comparison")
    p.add_argument("--threads", type=int, default=0, help="in-process intra-op threads (match the server's)")
    p.add_argument("--allow-spinning", action="store_true", help="in-process: let ORT threads spin-wait")
    p.add_argument("--instances", type=int, default=1, help="in-process: parallel sessions (match instance_count)")
    p.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="server process id(s): report server CPU time per request",
    )
    p.add_argument(
        "--protocol",
        choices=("grpc", "http"),
        default="grpc",
        help="http: REST binary and JSON beside gRPC unary at each level, in one run (needs --rest-url)",
    )
    p.add_argument("--rest-url", default="127.0.0.1:8000", help="the server's HTTP/REST address HOST:PORT")
    add_connection_flags(p)
    return p


def json_decode_ms(
    model: str, metadata: pb.ModelMetadataResponse, inputs: dict[str, np.ndarray], repeat: int = 5
) -> float:
    """Best of `repeat`: the server's own REST codec turning one JSON request into validated numpy inputs (orjson,
    np.asarray, decode.py's checks), in this process, so nothing else is timed."""
    from cnnserve.service.protocol import rest_codec
    from cnnserve.service.types import ModelSpec, TensorSpec
    from cnnserve.service.wire.decode import RequestLimits, decode_inputs

    spec = ModelSpec(model, "onnxruntime_onnx", 1 << 20,
                     tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in metadata.inputs),
                     tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in metadata.outputs))  # fmt: skip
    request = rest_request("x", model, metadata, inputs, binary=False)
    body = request.split(b"\r\n\r\n", 1)[1]
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        parsed = rest_codec.parse_infer(body, None, model, "", RequestLimits(1 << 30, 1 << 34))
        decode_inputs(parsed.request, spec, RequestLimits(1 << 30, 1 << 34), parsed.raw_inputs)
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def compare_http(
    args: argparse.Namespace, levels: Sequence[int], metadata: pb.ModelMetadataResponse, connection: Connection
) -> int:
    """gRPC unary, REST binary and REST JSON at each level, one after another in the same run."""
    inputs = random_inputs(metadata, args.batch_size, sizes=[int(v) for v in args.sizes.split(",") if v])
    shape = "x".join(str(d) for d in next(iter(inputs.values())).shape)
    decode_ms = json_decode_ms(args.model, metadata, inputs)
    print(f"one JSON request [{shape}] decoded by the server's codec in {decode_ms:.2f} ms")
    print(
        f"{'protocol':>9} {'concurrency':>11} {'items/s':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'srv cpu ms/req':>15} {'x grpc items/s':>15} {'x grpc cpu':>11}"
    )
    grpc_payload = serialized_request(args.model, metadata, inputs)
    token = next((value.split(" ", 1)[1] for key, value in connection.metadata if key == "authorization"), None)
    for concurrency in levels:
        base: tuple[float, float] | None = None
        for protocol in ("grpc", "rest-bin", "rest-json"):
            if protocol == "grpc":
                served, cpu_s = asyncio.run(
                    drive(
                        args.url,
                        grpc_payload,
                        args.batch_size,
                        concurrency,
                        args.duration_s,
                        args.warmup_s,
                        args.server_pid,
                        connection,
                    )
                )
            else:
                request = rest_request(args.rest_url, args.model, metadata, inputs, protocol == "rest-bin", token)
                served, cpu_s = asyncio.run(
                    drive_rest(
                        args.rest_url,
                        request,
                        args.batch_size,
                        concurrency,
                        args.duration_s,
                        args.warmup_s,
                        args.server_pid,
                    )
                )
            per_request = cpu_s * 1000 / served.requests if args.server_pid and served.requests else float("nan")
            base = base or (served.items_per_s, per_request)
            print(
                f"{protocol:>9} {concurrency:>11} {served.items_per_s:>10.1f} {served.percentile(50):>8.2f} "
                f"{served.percentile(90):>8.2f} {served.percentile(99):>8.2f} {per_request:>15.3f} "
                f"{served.items_per_s / base[0]:>15.2f} {per_request / base[1]:>11.2f}",
                flush=True,
            )
    return 0


def one_client_shares(args: argparse.Namespace, metadata: pb.ModelMetadataResponse, sizes: Sequence[int],
                      served_p50_ms: float, raw_p50_ms: float, server_cpu_ms: float | None,
                      outputs: Sequence[str]) -> str:  # fmt: skip
    """The model's own share of a one-client request: in-process runs paced as that client's requests arrive (a
    pause of the served p50 less a run between them), so the model finds its caches as cold as the server does."""
    pause_s = max(served_p50_ms - raw_p50_ms, 0.0) / 1000
    paced = paced_in_process(
        args.model_file,
        random_inputs(metadata, args.batch_size, sizes=sizes),
        min(args.duration_s, 3.0),
        args.threads,
        args.allow_spinning,
        pause_s,
        outputs,
    )
    line = (
        f"{'':>11} paced in-process (a run every {pause_s * 1e3:.2f} ms, as one client's arrive): "
        f"p50 {paced.p50_ms:.3f} ms, cpu {paced.cpu_ms_per_run:.3f} ms/run; served p50 less it "
        f"{served_p50_ms - paced.p50_ms:.3f} ms"
    )
    if server_cpu_ms is not None:
        line += f", server cpu less it {server_cpu_ms - paced.cpu_ms_per_run:.3f} ms/req"
    return line


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    levels = [int(c) for c in args.concurrency.split(",") if c]
    connection = Connection.build(max_message_bytes=-1, **connection_options(args))
    metadata = asyncio.run(fetch_metadata(args.url, args.model, connection))
    if args.protocol == "http":
        print(
            f"model={args.model} grpc={args.url} rest={args.rest_url} batch_size={args.batch_size} "
            f"duration_s={args.duration_s} cpus={os.cpu_count()}"
        )
        return compare_http(args, levels, metadata, connection)
    print(
        f"model={args.model} url={args.url} batch_size={args.batch_size} duration_s={args.duration_s} "
        f"cpus={os.cpu_count()} calls={'streaming' if args.streaming else 'unary'}"
    )
    sizes = [int(v) for v in args.sizes.split(",") if v]
    output_sets = [[name for name in chosen.split(",") if name] for chosen in args.outputs.split(";")]
    optional = asyncio.run(fetch_optional_outputs(args.url, args.model, connection))
    unnamed = [o.name for o in metadata.outputs if o.name not in optional]  # what a request naming none gets
    several = len(output_sets) > 1
    header = (
        f"{'concurrency':>11} {'items/s':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'raw b':>6} {'raw items/s':>12} {'raw p50':>8} {'ratio':>6} {'srv cpu ms/req':>15}"
    )
    print(header + (f" {'x first':>8}  outputs" if several else ""))
    for concurrency in levels:
        first: float | None = None
        for outputs in output_sets:
            inputs = random_inputs(metadata, args.batch_size, sizes=sizes)
            payload = serialized_request(args.model, metadata, inputs, outputs)
            served, server_cpu_s = asyncio.run(
                drive(
                    args.url,
                    payload,
                    args.batch_size,
                    concurrency,
                    args.duration_s,
                    args.warmup_s,
                    args.server_pid,
                    connection,
                    args.streaming,
                )
            )
            line = (
                f"{concurrency:>11} {served.items_per_s:>10.1f} {served.percentile(50):>8.2f} "
                f"{served.percentile(90):>8.2f} {served.percentile(99):>8.2f}"
            )
            if args.model_file is not None:
                raw_batch = concurrency * args.batch_size
                raw = in_process(
                    args.model_file,
                    random_inputs(metadata, raw_batch, sizes=sizes),
                    min(args.duration_s, 5.0),
                    args.threads,
                    args.allow_spinning,
                    args.instances,
                    outputs or unnamed,
                )
                line += (
                    f" {raw_batch:>6} {raw.items_per_s:>12.1f} {raw.percentile(50):>8.2f} "
                    f"{served.items_per_s / raw.items_per_s:>6.2f}"
                )
            else:
                line += f" {'-':>6} {'-':>12} {'-':>8} {'-':>6}"
            per_request = server_cpu_s * 1000 / served.requests if args.server_pid and served.requests else None
            line += f" {per_request:>15.3f}" if per_request is not None else f" {'-':>15}"
            if several:
                first = first or served.items_per_s
                line += f" {served.items_per_s / first:>8.2f}  {','.join(outputs) or '(unnamed)'}"
            print(line, flush=True)
            if args.model_file is not None and concurrency == 1 and not several:
                print(
                    one_client_shares(
                        args,
                        metadata,
                        sizes,
                        served.percentile(50),
                        raw.percentile(50),
                        per_request,
                        outputs or unnamed,
                    ),
                    flush=True,
                )
    print("ratio = served items/s / in-process items/s at batch = concurrency x batch-size, same thread settings")
    if several:
        print("x first = served items/s / the first output set's at the same level")
    return 0
