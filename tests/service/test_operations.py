"""Which operations answer without a token (service/protocol/operations.py), on both doors of a real server: decided
by the operation a method or route performs, never by the shape of a path."""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.service.protocol.operations import ACCESS, GRPC_METHODS, Access, AccessPolicy, Operation
from tests import onnx_models

TOKEN = "tok-operations-7c1d0e42"


def status(port: int, method: str, path: str, token: str | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {})
        reply = connection.getresponse()
        reply.read()
        return reply.status
    finally:
        connection.close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    onnx_models.write_classifier(root)
    return root


def test_every_grpc_method_and_operation_is_in_the_table() -> None:
    services = [
        pb.DESCRIPTOR.services_by_name["GRPCInferenceService"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
    ]
    methods = {f"/{service.full_name}/{method.name}" for service in services for method in service.methods}
    assert methods <= set(GRPC_METHODS)
    assert set(ACCESS) == set(Operation)

    def open_ones(policy: AccessPolicy) -> set[Operation]:
        return {op for op in Operation if not policy.needs_token(op)} - {Operation.PAGE}

    probes = {Operation.LIVE, Operation.READY, Operation.MODEL_READY, Operation.HEALTH}
    assert open_ones(AccessPolicy()) == probes | {Operation.METRICS}  # streams (Watch, reflection) are not probes
    assert open_ones(AccessPolicy(open_metrics=False)) == probes
    assert open_ones(AccessPolicy(open_health=False)) == set()
    assert ACCESS[Operation.PAGE] is Access.PUBLIC and AccessPolicy().needs_token(None)


def test_rest_paths_that_merely_end_in_ready_need_a_token(repo: Path, start_server: Any) -> None:
    port = start_server(repo, auth_tokens=(TOKEN,)).server.rest_port
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/classifier/ready",
                 "/v2/models/classifier/versions/1/ready", "/v2/models/nope/ready"):  # fmt: skip
        assert status(port, "GET", path) in (200, 503), path
    assert status(port, "HEAD", "/v2/health/ready") == 200  # aiohttp answers HEAD for each GET route
    for path in ("/v2/models/classifier/atlas/ready", "/v2/models/classifier/versions/1/atlas/ready",
                 "/v2/models/ready", "/v2/models/classifier/versions/ready"):  # fmt: skip
        assert status(port, "GET", path) == 401, path
        assert status(port, "GET", path, token=TOKEN) != 401, path
    assert status(port, "GET", "/page/ready") == 404  # the page's files are open: no such file
    # No route, no operation: routing's answer for anyone, as gRPC answers an unknown method UNIMPLEMENTED.
    assert status(port, "GET", "/v2/no/such/ready") == 404
    assert status(port, "POST", "/v2/health/ready") == 405

    closed = start_server(repo, auth_tokens=(TOKEN,), auth_open_health=False).server.rest_port
    for path in ("/v2/health/ready", "/v2/models/classifier/ready", "/v2/models/classifier/versions/1/ready"):
        assert status(closed, "GET", path) == 401
        assert status(closed, "GET", path, token=TOKEN) == 200
    assert status(closed, "GET", "/page/page.js") == 200


def test_grpc_methods_are_open_by_their_operation(repo: Path, start_server: Any) -> None:
    server = start_server(repo, auth_tokens=(TOKEN,))
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ModelReady(pb.ModelReadyRequest(name="classifier"), timeout=10).ready
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        for call in (
            lambda: stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10),
            lambda: stub.ModelConfig(pb.ModelConfigRequest(name="classifier"), timeout=10),
            lambda: stub.ModelStatistics(pb.ModelStatisticsRequest(), timeout=10),
            lambda: stub.TraceSetting(pb.TraceSettingRequest(), timeout=10),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        bearer = (("authorization", f"Bearer {TOKEN}"),)
        assert stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=bearer, timeout=10).name
