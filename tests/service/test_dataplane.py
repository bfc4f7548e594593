"""The data plane (service/protocol/dataplane.py) by behaviour on a real server: each operation gives one answer,
whichever door asks, and readiness is one definition for gRPC, REST, the metrics port and the gRPC health service."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from tests import onnx_models
from tests.conftest import ServerThread


def request(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def status_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    code: grpc.StatusCode = info.value.code()
    return code


@pytest.fixture
def stub_for() -> Iterator[Any]:
    channels: list[grpc.Channel] = []

    def make(server: ServerThread) -> tuple[pb_grpc.GRPCInferenceServiceStub, health_pb2_grpc.HealthStub]:
        channel = grpc.insecure_channel(server.grpc_address)
        channels.append(channel)
        return pb_grpc.GRPCInferenceServiceStub(channel), health_pb2_grpc.HealthStub(channel)

    yield make
    for channel in channels:
        channel.close()


def answers(server: ServerThread, stubs: Any, model: str) -> dict[str, bool]:
    """Server and model readiness as each door tells it."""
    stub, health = stubs
    serving = health_pb2.HealthCheckResponse.SERVING
    return {
        "grpc": stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready,
        "rest": request(server.server.rest_port, "GET", "/v2/health/ready")[0] == 200,
        "metrics port": request(server.server.http_port, "GET", "/v2/health/ready")[0] == 200,
        "health": health.Check(health_pb2.HealthCheckRequest(service="ready"), timeout=10).status == serving,
        "health inference": health.Check(
            health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"), timeout=10
        ).status
        == serving,
        "grpc model": stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=10).ready,
        "rest model": request(server.server.rest_port, "GET", f"/v2/models/{model}/ready")[0] == 200,
        "health model": health.Check(health_pb2.HealthCheckRequest(service=model), timeout=10).status == serving,
    }


def test_readiness_is_one_answer_on_every_door(tmp_path: Path, start_server: Any, stub_for: Any) -> None:
    repo = tmp_path / "repo"
    onnx_models.write_classifier(repo)
    onnx_models.write_corrupt(repo)  # meant to load, never loads: the server is not ready, the classifier is
    server = start_server(repo)
    stubs = stub_for(server)
    assert set(answers(server, stubs, "broken").values()) == {False}
    by_door = answers(server, stubs, "classifier")
    assert not any(by_door[door] for door in ("grpc", "rest", "metrics port", "health", "health inference"))
    assert by_door["grpc model"] and by_door["rest model"] and by_door["health model"]

    good = tmp_path / "good"
    onnx_models.write_classifier(good)
    ready = start_server(good)
    assert set(answers(ready, stub_for(ready), "classifier").values()) == {True}
    stub, _ = stub_for(ready)
    assert not stub.ModelReady(pb.ModelReadyRequest(name="nope"), timeout=10).ready
    assert request(ready.server.rest_port, "GET", "/v2/models/nope/ready")[0] == 503


def body_of(port: int, path: str) -> tuple[int, Any]:
    status, body = request(port, "GET", path)
    return status, json.loads(body)


def test_health_answers_carry_kserve_json_bodies(tmp_path: Path, start_server: Any) -> None:
    """The status says it, as Triton's clients read it; the body says it too, as KServe's InferenceRESTClient reads
    it (`response.json().get("ready")`), on the REST port and the metrics port alike."""
    repo = tmp_path / "repo"
    onnx_models.write_classifier(repo)
    onnx_models.write_corrupt(repo)  # meant to load, never loads: the server is not ready
    server = start_server(repo)
    for port in (server.server.rest_port, server.server.http_port):
        assert body_of(port, "/v2/health/live") == (200, {"live": True})
        assert body_of(port, "/v2/health/ready") == (503, {"ready": False})
    rest = server.server.rest_port
    assert body_of(rest, "/v2/models/classifier/ready") == (200, {"name": "classifier", "ready": True})
    assert body_of(rest, "/v2/models/classifier/versions/1/ready") == (200, {"name": "classifier", "ready": True})
    assert body_of(rest, "/v2/models/broken/ready") == (503, {"name": "broken", "ready": False})
    assert body_of(rest, "/v2/models/nope/ready") == (503, {"name": "nope", "ready": False})

    good = tmp_path / "good"
    onnx_models.write_classifier(good)
    ready = start_server(good)
    for port in (ready.server.rest_port, ready.server.http_port):
        assert body_of(port, "/v2/health/ready") == (200, {"ready": True})


KSERVE_CLIENT = """
import asyncio, sys
import numpy as np
from kserve import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest

async def main(url: str) -> None:
    client = InferenceRESTClient(RESTConfig(protocol="v2"))
    try:
        assert await client.is_server_live(url) is True
        assert await client.is_server_ready(url) is True
        assert await client.is_model_ready(url, "classifier") is True
        assert await client.is_model_ready(url, "nope") is False
        batch = np.zeros((2, 1, 4, 4), np.float32)
        for binary in (True, False):
            tensor = InferInput("images", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch, binary_data=binary)
            reply = await client.infer(url, InferRequest("classifier", [tensor]), model_name="classifier")
            assert reply.outputs[0].as_numpy().shape == (2, 10)
    finally:
        await client.close()

asyncio.run(main(sys.argv[1]))
"""
"""KServe's own client in its own process: its protos and tritonclient's define the same message names, which one
process cannot hold."""


@pytest.mark.slow
def test_kserve_rest_client_reads_health_and_infers(tmp_path: Path, start_server: Any) -> None:
    """KServe's client is no dependency of this project (its install is about 450 MB): .ci/run installs it into a
    venv of its own and names its Python in KSERVE_PYTHON; this venv's own kserve serves too."""
    python = os.environ.get("KSERVE_PYTHON") or (sys.executable if importlib.util.find_spec("kserve") else None)
    if python is None:
        pytest.skip("KServe's client is not installed: set KSERVE_PYTHON to a Python that has kserve")
    repo = tmp_path / "repo"
    onnx_models.write_classifier(repo)
    server = start_server(repo)
    done = subprocess.run([python, "-c", KSERVE_CLIENT, server.rest_url], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()


def test_repository_operations_answer_alike_on_both_doors(tmp_path: Path, start_server: Any, stub_for: Any) -> None:
    repo = tmp_path / "repo"
    onnx_models.write_classifier(repo)
    server = start_server(repo, model_control_mode="explicit", startup_models=())
    stub, _ = stub_for(server)
    port = server.server.rest_port

    assert request(port, "POST", "/v2/repository/models/classifier/load") == (200, b"{}")
    assert stub.ModelReady(pb.ModelReadyRequest(name="classifier"), timeout=10).ready
    grpc_index = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True), timeout=10)
    rest_index = json.loads(request(port, "POST", "/v2/repository/index", b'{"ready": true}')[1])
    assert [(m.name, m.version, m.state) for m in grpc_index.models] == [("classifier", "1", "READY")]
    assert rest_index == [{"name": "classifier", "version": "1", "state": "READY", "reason": ""}]

    stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="classifier"), timeout=10)
    assert request(port, "GET", "/v2/models/classifier/ready")[0] == 503
    assert json.loads(request(port, "POST", "/v2/repository/index", b'{"ready": true}')[1]) == []
    assert request(port, "POST", "/v2/repository/models/nope/load")[0] == 404

    polled = start_server(repo)  # not explicit mode: both doors refuse load and unload alike
    stub, _ = stub_for(polled)
    for action in ("load", "unload"):
        assert request(polled.server.rest_port, "POST", f"/v2/repository/models/classifier/{action}")[0] == 412
    load = lambda: stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="classifier"), timeout=10)  # noqa: E731
    unload = lambda: stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="classifier"), timeout=10)  # noqa: E731
    assert status_of(load) == status_of(unload) == grpc.StatusCode.FAILED_PRECONDITION
    assert polled.server.models.is_ready("classifier")


def test_metadata_config_and_statistics_are_the_same_on_both_doors(
    tmp_path: Path, start_server: Any, stub_for: Any
) -> None:
    repo = tmp_path / "repo"
    onnx_models.write_classifier(repo)
    server = start_server(repo)
    stub, _ = stub_for(server)
    port = server.server.rest_port

    metadata = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
    rest_metadata = json.loads(request(port, "GET", "/v2")[1])
    assert rest_metadata == {
        "name": metadata.name,
        "version": metadata.version,
        "extensions": list(metadata.extensions),
    }
    # Every extension served, and only those (the binary tensor extension is REST's: gRPC tensors are always raw).
    assert set(metadata.extensions) == {
        "binary_tensor_data",
        "classification",
        "logging",
        "model_configuration",
        "model_repository",
        "statistics",
    }

    model = stub.ModelMetadata(pb.ModelMetadataRequest(name="classifier"), timeout=10)
    rest_model = json.loads(request(port, "GET", "/v2/models/classifier")[1])
    assert rest_model["versions"] == list(model.versions) == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in rest_model["inputs"]] == [
        (t.name, t.datatype, list(t.shape)) for t in model.inputs
    ]
    config = stub.ModelConfig(pb.ModelConfigRequest(name="classifier", version="1"), timeout=10).config
    rest_config = json.loads(request(port, "GET", "/v2/models/classifier/versions/1/config")[1])
    assert (rest_config["name"], rest_config["max_batch_size"]) == (config.name, config.max_batch_size)
    assert rest_config["parameters"]["execution_provider"]["string_value"] == "CPUExecutionProvider"

    batch = np.zeros((2, 1, 4, 4), np.float32)
    infer = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [2, 1, 4, 4], "data": batch.ravel().tolist()}]}
    assert request(port, "POST", "/v2/models/classifier/infer", json.dumps(infer).encode())[0] == 200
    [grpc_stats] = stub.ModelStatistics(pb.ModelStatisticsRequest(name="classifier"), timeout=10).model_stats
    [rest_stats] = json.loads(request(port, "GET", "/v2/models/classifier/stats")[1])["model_stats"]
    assert grpc_stats.inference_count == rest_stats["inference_count"] == 2
    assert grpc_stats.inference_stats.success.count == rest_stats["inference_stats"]["success"]["count"] == 1
    for status, path in ((404, "/v2/models/nope/stats"), (404, "/v2/models/classifier/versions/9/stats")):
        assert request(port, "GET", path)[0] == status
    stats = lambda: stub.ModelStatistics(pb.ModelStatisticsRequest(name="nope"), timeout=10)  # noqa: E731
    assert status_of(stats) == grpc.StatusCode.NOT_FOUND
