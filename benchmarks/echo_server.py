"""The transport's floor: a Python gRPC aio server (uvloop, as cnnserve runs) that answers ModelInfer and
ModelStreamInfer without doing anything, so `cnnserve bench --server-pid` against it measures what the RPC layer
alone costs per call on this machine. No model, no decoding, no batching: replies are the request's own bytes.

    python benchmarks/echo_server.py PORT [INPUT_NAME DATATYPE DIMS]     e.g. 18003 images FP32 -1,1,16,16
"""

from __future__ import annotations

import sys

import grpc
import uvloop

from cnnserve.api import grpc_service_pb2 as pb

SERVICE = "inference.GRPCInferenceService"


def stream_reply(request: bytes) -> bytes:
    """ModelStreamInferResponse{infer_response: <the request's bytes>} written by hand: field 2, length-delimited."""
    size, length = bytearray(), len(request)
    while True:
        size.append((length & 0x7F) | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            return b"\x12" + bytes(size) + request


async def main(port: int, name: str, datatype: str, dims: list[int]) -> None:
    metadata = pb.ModelMetadataResponse(
        name="echo", inputs=[pb.ModelMetadataResponse.TensorMetadata(name=name, datatype=datatype, shape=dims)]
    ).SerializeToString()

    async def infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def stream(requests: object, context: grpc.aio.ServicerContext) -> None:
        async for request in requests:  # type: ignore[attr-defined]
            await context.write(stream_reply(request))

    async def describe(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return metadata

    handlers = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(infer),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(stream),
            "ModelMetadata": grpc.unary_unary_rpc_method_handler(describe),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handlers,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    args = sys.argv[1:] or ["18003"]
    input_name, input_type, input_dims = args[1:4] if len(args) >= 4 else ["images", "FP32", "-1,1,16,16"]
    uvloop.run(main(int(args[0]), input_name, input_type, [int(d) for d in input_dims.split(",")]))
