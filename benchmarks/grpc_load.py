"""The gRPC load side of `cnnserve bench`: N concurrent clients drive a running server (bench.py compares).

The client is kept lean so it does not starve a server on the same machine: each request is serialized once and
sent as bytes through a raw gRPC method (no protobuf work per call), replies are not parsed, all from one asyncio
loop. Works against any server that speaks the Open Inference Protocol over gRPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.benchmarks.measurement import Measurement, cpu_seconds
from cnnserve.client.connection import Connection
from cnnserve.contracts.datatypes import DATATYPES

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
# A ModelStreamInferResponse that starts with field 1 (error_message, tag 0x0a) carries an error, not a response: told
# apart by one byte, so the client parses no replies.
STREAM_ERROR_TAG = 0x0A
FILLABLE = frozenset(name for name, info in DATATYPES.items() if info.numpy.kind in "fiub")  # not BYTES


def random_inputs(
    metadata: pb.ModelMetadataResponse, batch: int, seed: int = 0, sizes: Sequence[int] = ()
) -> dict[str, np.ndarray]:
    """Random values for every input, `batch` items; `sizes` fill each input's variable dimensions after the batch
    axis in order (a segmenter's height and width), 1 past them."""
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for tensor in metadata.inputs:
        free = iter(sizes)
        shape = [batch if i == 0 and d == -1 else (next(free, 1) if d == -1 else d) for i, d in enumerate(tensor.shape)]
        dtype = DATATYPES[tensor.datatype].numpy if tensor.datatype in FILLABLE else None
        if dtype is None:
            raise SystemExit(f"bench: input '{tensor.name}' has datatype {tensor.datatype}, which bench cannot fill")
        if np.issubdtype(dtype, np.integer):
            inputs[tensor.name] = rng.integers(0, 10, shape).astype(dtype)
        else:
            inputs[tensor.name] = rng.standard_normal(shape).astype(dtype)
    return inputs


def serialized_request(
    model: str, metadata: pb.ModelMetadataResponse, inputs: dict[str, np.ndarray], outputs: Sequence[str] = ()
) -> bytes:
    """outputs: the ones to ask for (all the model answers by default when empty)."""
    request = pb.ModelInferRequest(model_name=model)
    for tensor in metadata.inputs:
        values = inputs[tensor.name]
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(values.shape))
        request.raw_input_contents.append(values.tobytes())
    for name in outputs:
        request.outputs.add(name=name)
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


async def fetch_optional_outputs(url: str, model: str, connection: Connection = UNLIMITED) -> frozenset[str]:
    """The outputs the model's config marks optional (parameter optional_outputs): a request naming none omits
    them, so the in-process comparison must not fetch them either."""
    async with connection.aio_channel(url) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelConfig",
            request_serializer=pb.ModelConfigRequest.SerializeToString,
            response_deserializer=pb.ModelConfigResponse.FromString,
        )
        try:
            reply = await call(pb.ModelConfigRequest(name=model), timeout=10, metadata=connection.metadata)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            return frozenset()  # a server without ModelConfig (benchmarks/echo_server.py) marks nothing optional
    listed = reply.config.parameters["optional_outputs"].string_value if "optional_outputs" in \
        reply.config.parameters else ""  # fmt: skip
    return frozenset(name.strip() for name in listed.split(",") if name.strip())


async def drive(
    url: str,
    payload: bytes,
    items_per_request: int,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    server_pids: Sequence[int] = (),
    connection: Connection = UNLIMITED,
    streaming: bool = False,
) -> tuple[Measurement, float]:
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
