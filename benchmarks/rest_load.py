"""The REST load side of `cnnserve bench --protocol http`: N keep-alive HTTP/1.1 connections, each sending one
pre-built request (head and body bytes, built once) back to back; replies are read by Content-Length, not parsed.

Plain asyncio streams, so the client needs no HTTP library and costs the machine little beside the server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.benchmarks.measurement import Measurement, cpu_seconds

HEADER_LENGTH = "Inference-Header-Content-Length"


def rest_request(
    url: str,
    model: str,
    metadata: pb.ModelMetadataResponse,
    inputs: dict[str, np.ndarray],
    binary: bool,
    token: str | None = None,
) -> bytes:
    """The whole HTTP request: binary tensors (tritonclient.http's default) or JSON data; outputs alike."""
    entries: list[dict[str, object]] = []
    blobs: list[bytes] = []
    for tensor in metadata.inputs:
        values = inputs[tensor.name]
        entry: dict[str, object] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(values.shape)}
        if binary:
            blob = np.ascontiguousarray(values).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = values.ravel().tolist()
        entries.append(entry)
    outputs = [{"name": t.name, "parameters": {"binary_data": binary}} for t in metadata.outputs]
    header = json.dumps({"inputs": entries, "outputs": outputs}).encode()
    body = header + b"".join(blobs)
    lines = [f"POST /v2/models/{model}/infer HTTP/1.1", f"Host: {url}", f"Content-Length: {len(body)}"]
    if binary:
        lines += ["Content-Type: application/octet-stream", f"{HEADER_LENGTH}: {len(header)}"]
    else:
        lines.append("Content-Type: application/json")
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Sends one request on a kept-alive connection; returns the reply's status after reading its body."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def drive_rest(
    url: str,
    request: bytes,
    items_per_request: int,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    server_pids: Sequence[int] = (),
) -> tuple[Measurement, float]:
    """As grpc_load.drive, over HTTP/1.1: one connection per worker, requests back to back."""
    host, _, port = url.rpartition(":")
    latencies: list[float] = []
    failures = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup_s
    end = start + duration_s

    async def worker() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(host, int(port), limit=2**24)
        try:
            while (sent := loop.time()) < end:
                if await _exchange(reader, writer, request) != 200:
                    failures += 1
                elif sent >= start:
                    latencies.append((loop.time() - sent) * 1000)
        finally:
            writer.close()

    cpu_window: list[float] = []

    async def sample_cpu() -> None:
        for edge in (start, end):  # warm-up is not charged to the server
            await asyncio.sleep(max(0.0, edge - loop.time()))
            cpu_window.append(cpu_seconds(server_pids))

    await asyncio.gather(sample_cpu(), *(worker() for _ in range(concurrency)))
    if failures:
        print(f"  warning: {failures} requests failed")
    items = len(latencies) * items_per_request
    return Measurement(f"rest c={concurrency}", items / duration_s, len(latencies), tuple(latencies)), cpu_window[
        1
    ] - cpu_window[0]
