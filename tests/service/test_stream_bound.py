"""A ModelStreamInfer client that writes requests and never reads a reply: the stream's in-flight bound (128) holds,
because a slot is given back only once its reply is written, so the server stops reading that stream instead of
piling up answers in memory; other clients are still answered at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from onnx import TensorProto, helper

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.service.protocol.servicer import STREAM_MAX_IN_FLIGHT
from tests import onnx_models

WIDTH = 16_384  # 64 KiB a reply: HTTP/2's flow-control windows fill after a few unread ones
OFFERED = 3_000


def write_wide_identity(repo: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", WIDTH])],
    )  # fmt: skip
    onnx_models._save(graph, repo / "wide" / "1" / "model.onnx")
    (repo / "wide" / "config.json").write_text('{"max_batch_size": 8}')


def request() -> pb.ModelInferRequest:
    data = np.ones((1, WIDTH), np.float32)
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, WIDTH])
    return pb.ModelInferRequest(model_name="wide", inputs=[tensor], raw_input_contents=[data.tobytes()])


def test_a_stream_that_never_reads_is_held_to_its_bound(tmp_path: Path, start_server: Any) -> None:
    write_wide_identity(tmp_path)
    server = start_server(tmp_path)
    sent = 0
    stop = threading.Event()

    def requests() -> Iterator[pb.ModelInferRequest]:
        nonlocal sent
        message = request()
        while sent < OFFERED and not stop.is_set():
            sent += 1
            yield message

    channel = grpc.insecure_channel(server.grpc_address, options=[("grpc.max_receive_message_length", -1)])
    call = pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests(), timeout=60)  # never read
    try:
        time.sleep(3.0)
        admitted = server.server.gate.admitted
        # What the server took in: the in-flight bound, the replies the flow-control windows hold and the requests
        # in its receive buffers. Without the bound holding it reads all it is offered.
        assert admitted < STREAM_MAX_IN_FLIGHT + 400, (admitted, sent)
        other = grpc.insecure_channel(server.grpc_address, options=[("grpc.max_receive_message_length", -1)])
        started = time.monotonic()
        reply = pb_grpc.GRPCInferenceServiceStub(other).ModelInfer(request(), timeout=5)
        assert time.monotonic() - started < 1.0 and reply.outputs[0].name == "y"
        other.close()
    finally:
        stop.set()
        call.cancel()
        channel.close()
