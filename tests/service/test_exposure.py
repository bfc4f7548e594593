"""Hostile clients against a real server with tokens on (issue 26): each attack is sent as a careless or hostile
client would send it, and each test asserts the status it gets and that a token holder is still answered within a
second while it goes on."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from onnx import TensorProto, helper

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from tests import onnx_models
from tests.service.processes import ServerProcess, scrape

TOKEN = "tok-exposure-51f0a9c3"
BEARER = (("authorization", f"Bearer {TOKEN}"),)
ANSWER_WITHIN_S = 1.0


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    onnx_models.write_classifier(root)
    return root


def infer_request() -> pb.ModelInferRequest:
    batch = np.random.default_rng(0).random((1, 1, 4, 4), dtype=np.float32)
    tensor = pb.ModelInferRequest.InferInputTensor(name="images", datatype="FP32", shape=list(batch.shape))
    return pb.ModelInferRequest(model_name="classifier", inputs=[tensor], raw_input_contents=[batch.tobytes()])


def token_holder_answered(address: str) -> float:
    """Seconds a token holder's ModelInfer took, on a connection of its own; fails when it is refused."""
    with grpc.insecure_channel(address) as channel:
        started = time.monotonic()
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer_request(), metadata=BEARER, timeout=10)
        took = time.monotonic() - started
    assert reply.outputs
    return took


@pytest.fixture
def token_server(repo: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server process of its own (its CPU is not the attacker's), tokens on, health checks open."""
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    server = ServerProcess(repo, extra_args=["--auth-token-file", str(tokens), "--max-concurrent-streams", "1024"])
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def test_streams_without_a_token_end_at_once_and_take_no_capacity(token_server: ServerProcess) -> None:
    """1,100 health Watch streams held open with no token once took every concurrent-call slot (1,024), so a token
    holder got RESOURCE_EXHAUSTED. Watch and reflection are streams, held as long as their caller likes: they need
    the token, and end at once without one."""
    server = token_server
    opened = threading.Event()

    async def hold(streams: int) -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(server.grpc_address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            calls = [health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30) for _ in range(streams)]

            async def outcome(call: Any) -> grpc.StatusCode:
                try:
                    async for _ in call:
                        pass
                except grpc.aio.AioRpcError as err:
                    return err.code()
                return grpc.StatusCode.OK

            return await asyncio.gather(*(outcome(call) for call in calls))

    async def connections() -> list[grpc.StatusCode]:
        outcomes = asyncio.gather(*(hold(220) for _ in range(5)))
        await asyncio.sleep(0.2)
        opened.set()
        return [code for codes in await outcomes for code in codes]

    codes: list[grpc.StatusCode] = []
    attacker = threading.Thread(target=lambda: codes.extend(asyncio.run(connections())))
    attacker.start()
    try:
        opened.wait(10)
        assert token_holder_answered(server.grpc_address) < ANSWER_WITHIN_S
    finally:
        attacker.join(60)
    # Every stream ended at once: refused for want of a token, or by gRPC itself (REFUSED_STREAM: UNAVAILABLE)
    # while more arrived at once than its pending-call queue takes. None was served, none stayed open.
    assert len(codes) == 1_100 and set(codes) <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE}
    assert grpc.StatusCode.UNAUTHENTICATED in codes
    assert token_holder_answered(server.grpc_address) < ANSWER_WITHIN_S

    with grpc.insecure_channel(server.grpc_address) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        asked = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        with pytest.raises(grpc.RpcError) as refused:
            list(reflection.ServerReflectionInfo(asked, timeout=10))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        asked = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        [listing] = list(reflection.ServerReflectionInfo(asked, metadata=BEARER, timeout=10))
        assert listing.list_services_response.service
        health = health_pb2_grpc.HealthStub(channel)  # probes call Check, which stays open
        assert health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
        watched = health.Watch(health_pb2.HealthCheckRequest(service=""), metadata=BEARER, timeout=10)
        assert next(watched).status == health_pb2.HealthCheckResponse.SERVING
        watched.cancel()


def test_one_connection_cannot_take_the_servers_calls(repo: Path, start_server: Any) -> None:
    """Past max_streams_per_connection a connection's next stream is refused, so with a server-wide limit of 10
    calls a client holding streams on one connection leaves room for everyone else."""
    server = start_server(repo, auth_tokens=(TOKEN,), max_concurrent_streams=10, max_streams_per_connection=4)
    holder = grpc.insecure_channel(server.grpc_address)
    health = health_pb2_grpc.HealthStub(holder)

    def watch() -> Any:
        return health.Watch(health_pb2.HealthCheckRequest(service=""), metadata=BEARER, timeout=30)

    watches = [watch() for _ in range(4)]
    try:
        for held in watches:  # each stream is open at the server
            assert next(held).status == health_pb2.HealthCheckResponse.SERVING
        for _ in range(3):
            refused = watch()
            watches.append(refused)
            with pytest.raises(grpc.RpcError) as error:
                next(refused)
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_streams_per_connection" in (error.value.details() or "")
        assert token_holder_answered(server.grpc_address) < ANSWER_WITHIN_S
        watches.pop(0).cancel()  # a slot comes back when a stream ends
        time.sleep(0.2)
        again = watch()
        watches.append(again)
        assert next(again).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        for held in watches:
            held.cancel()
        holder.close()


def test_an_idle_connection_is_closed(repo: Path, start_server: Any) -> None:
    """grpc_connection_idle_s: a connection with no call open is sent GOAWAY; the client reconnects on its next call."""
    server = start_server(repo, grpc_connection_idle_s=0.5)
    states: list[grpc.ChannelConnectivity] = []
    with grpc.insecure_channel(server.grpc_address) as channel:
        channel.subscribe(states.append)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        deadline = time.monotonic() + 10
        while not (states and states[-1] is grpc.ChannelConnectivity.IDLE) and time.monotonic() < deadline:
            time.sleep(0.05)  # the callbacks come from gRPC's own thread, the first one at some point after subscribe
        assert grpc.ChannelConnectivity.READY in states and states[-1] is grpc.ChannelConnectivity.IDLE
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live


def test_metrics_follow_the_token_rule_when_asked(repo: Path, start_server: Any) -> None:
    def status(url: str, token: str | None = None) -> int:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as err:
            return err.code

    open_server = start_server(repo, auth_tokens=(TOKEN,))
    assert status(f"{open_server.http_url}/metrics") == 200
    closed = start_server(repo, auth_tokens=(TOKEN,), auth_metrics=True)
    assert status(f"{closed.http_url}/metrics") == 401
    assert status(f"{closed.http_url}/metrics", TOKEN) == 200
    assert status(f"{closed.http_url}/v2/health/ready") == 200  # the probes stay open


def rest(port: int, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


INFER = b'{"inputs":[{"name":"images","datatype":"FP32","shape":[1,1,4,4],"data":[' + b",".join([b"0.5"] * 16) + b"]}]}"


def test_a_web_page_cannot_make_a_browser_run_inference(repo: Path, start_server: Any) -> None:
    """Forms and text/plain bodies cross sites without a preflight; so does a body with no type. A POST body must
    say what it is (415 otherwise), and a POST from another site's page is refused (403) unless listed for CORS."""
    port = start_server(repo).server.rest_port
    path = "/v2/models/classifier/infer"
    evil = "https://evil.example"
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, body = rest(port, "POST", path, INFER, Content_Type=content_type, Origin=evil)
        assert status == 415 and content_type.split(";")[0].encode() in body, content_type
    for content_type in ("text/plain", "multipart/form-data; boundary=x"):
        assert rest(port, "POST", path, INFER, Content_Type=content_type)[0] == 415, content_type
    # libcurl's default type, which Triton's C++ client (perf_analyzer's) sends; no browser omits the Origin
    assert rest(port, "POST", path, INFER, Content_Type="application/x-www-form-urlencoded")[0] == 200
    assert rest(port, "POST", path, INFER, Origin=evil)[0] == 403  # no type at all: the origin decides
    status, body = rest(port, "POST", path, INFER, Origin=evil, Content_Type="application/json")
    assert status == 403 and b"evil.example" in body
    assert rest(port, "GET", "/v2/models/classifier", Origin=evil)[0] == 200  # reading needs CORS, which says no
    assert rest(port, "POST", path, INFER)[0] == 200  # tritonclient.http and perf_analyzer send no type, no origin
    assert rest(port, "POST", path, INFER, Content_Type="application/json")[0] == 200
    own = f"http://127.0.0.1:{port}"  # the server's own page
    assert rest(port, "POST", path, INFER, Origin=own, Content_Type="application/json")[0] == 200
    listed = start_server(repo, rest_cors_origins=(evil,)).server.rest_port
    assert rest(listed, "POST", path, INFER, Origin=evil, Content_Type="application/json")[0] == 200


def test_a_rebound_name_cannot_reach_a_loopback_server(repo: Path, start_server: Any) -> None:
    """DNS rebinding: a page on evil.example, whose name now resolves to 127.0.0.1, is same-origin with the server
    in the browser's eyes. The server bound to loopback answers only loopback names, on both HTTP ports."""
    server = start_server(repo)
    for port in (server.server.rest_port, server.server.http_port):
        status, body = rest(port, "GET", "/v2/health/ready", Host="evil.example:8000")
        assert status == 400 and b"evil.example" in body
        for name in ("127.0.0.1", "localhost:8000", "[::1]:8000"):
            assert rest(port, "GET", "/v2/health/ready", Host=name)[0] == 200, name
    status, _ = rest(server.server.rest_port, "POST", "/v2/models/classifier/infer", INFER, Host="evil.example")
    assert status == 400
    named = start_server(repo, rest_allowed_hosts=("models.internal",)).server.rest_port
    assert rest(named, "GET", "/v2/health/ready", Host="models.internal:8000")[0] == 200
    assert rest(named, "GET", "/v2/health/ready", Host="evil.example")[0] == 400


WIDE = 256 * 1024  # FP32 elements an item: 1 MiB


def write_wide(repo: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", WIDE])],
    )  # fmt: skip
    onnx_models._save(graph, repo / "wide" / "1" / "model.onnx")
    (repo / "wide" / "config.json").write_text('{"max_batch_size": 4}')


def wide_request(items: int) -> pb.ModelInferRequest:
    data = np.ones((items, WIDE), np.float32)
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=list(data.shape))
    return pb.ModelInferRequest(model_name="wide", inputs=[tensor], raw_input_contents=[data.tobytes()])


def held_rest_body(port: int, length: int) -> socket.socket:
    """A REST request whose head says `length` bytes of body, of which it sends a few: read and held by the server."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    header = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,%d],"parameters":{"binary_data_size":%d}}]}' % (
        WIDE, WIDE * 4)  # fmt: skip
    head = (b"POST /v2/models/wide/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(header), length))  # fmt: skip
    sock.sendall(head + header)
    return sock


def test_one_byte_budget_covers_both_doors(tmp_path: Path, start_server: Any) -> None:
    """Bodies being read on the REST door and tensors on gRPC share max_inflight_bytes: past it, the next request is
    refused at once (429 / RESOURCE_EXHAUSTED, before its body is read), and a request that fits is still served."""
    write_wide(tmp_path)
    mib = 1024 * 1024
    running = start_server(tmp_path, max_request_tensor_bytes=4 * mib, max_inflight_bytes=8 * mib)
    budget = running.server.memory
    holders = [held_rest_body(running.server.rest_port, 3 * mib) for _ in range(2)]
    try:
        deadline = time.monotonic() + 5
        while budget.held < 6 * mib and time.monotonic() < deadline:
            time.sleep(0.01)
        assert budget.held == 6 * mib  # each body reserved as declared, before it arrived
        with grpc.insecure_channel(running.grpc_address, options=[("grpc.max_receive_message_length", -1)]) as chan:
            stub = pb_grpc.GRPCInferenceServiceStub(chan)
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(wide_request(3), timeout=10)
            assert time.monotonic() - started < ANSWER_WITHIN_S
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_inflight_bytes" in (refused.value.details() or "")
            started = time.monotonic()
            assert stub.ModelInfer(wide_request(1), timeout=10).outputs  # 1 MiB fits beside the held 6
            assert time.monotonic() - started < ANSWER_WITHIN_S
            third = held_rest_body(running.server.rest_port, 3 * mib)
            holders.append(third)
            reply = third.recv(4096)  # answered from the head alone
            assert reply.startswith(b"HTTP/1.1 429 ") and b"max_inflight_bytes" in reply
            assert scrape(running.http_url, "cnnserve_inflight_bytes") == 6 * mib
            assert scrape(running.http_url, "cnnserve_inflight_bytes_refusals_total") == 2
            for sock in holders:
                sock.close()
            deadline = time.monotonic() + 5
            while budget.held and time.monotonic() < deadline:
                time.sleep(0.01)
            assert budget.held == 0  # a client that went away gave its share back
            assert stub.ModelInfer(wide_request(3), timeout=10).outputs
    finally:
        for sock in holders:
            sock.close()
    assert budget.held == 0


def test_large_json_is_refused_before_it_is_read_or_parsed(repo: Path, start_server: Any) -> None:
    """Eight 60 MB JSON bodies at once once held a token holder 9.2 s: JSON is parsed on the event loop. Past
    max_rest_json_bytes (4 MiB) a JSON body is 413 from its head alone."""
    server = start_server(repo)
    port = server.server.rest_port
    socks = []
    try:
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            head = (b"POST /v2/models/classifier/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                    b"application/json\r\nContent-Length: 60000000\r\n\r\n")  # fmt: skip
            sock.sendall(head + b'{"inputs":[' + b" " * 65536)
            socks.append(sock)
        for sock in socks:
            reply = sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 413 ") and b"max_rest_json_bytes" in reply
        assert token_holder_answered(server.grpc_address) < ANSWER_WITHIN_S
    finally:
        for sock in socks:
            sock.close()
    status, body = rest(port, "POST", "/v2/models/classifier/infer", INFER, Content_Type="application/json")
    assert status == 200, body


def closed_after(sock: socket.socket, trickle: bytes, limit_s: float) -> float | None:
    """Sends `trickle` a byte every 0.1 s; seconds until the server hung up, None if it did not within `limit_s`."""
    started = time.monotonic()
    sock.settimeout(0.1)
    for byte in trickle * 1000:
        if time.monotonic() - started > limit_s:
            return None
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:  # reset: hung up
            return time.monotonic() - started
    return None


def test_slow_heads_are_cut_off(repo: Path, start_server: Any) -> None:
    """A head trickled a byte at a time (slowloris) is cut at rest_head_timeout_s, on a new connection and on a
    kept-alive one; a token holder is answered meanwhile, on both HTTP ports."""
    server = start_server(repo, rest_head_timeout_s=1.0, auth_tokens=(TOKEN,))
    for port in (server.server.rest_port, server.server.http_port):
        crowd = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(100)]
        try:
            for sock in crowd:
                sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\n")
            fresh = socket.create_connection(("127.0.0.1", port), timeout=10)
            took = closed_after(fresh, b"X-Slow: a\r\n", limit_s=5.0)
            assert took is not None and took < 2.0, (port, took)
            assert token_holder_answered(server.grpc_address) < ANSWER_WITHIN_S
            assert rest(port, "GET", "/v2/health/ready")[0] == 200
            kept = socket.create_connection(("127.0.0.1", port), timeout=10)
            kept.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert kept.recv(4096).startswith(b"HTTP/1.1 200 ")
            took = closed_after(kept, b"GET /v2/health/live HTTP/1.1\r\nX: y\r\n", limit_s=5.0)
            assert took is not None and took < 2.0, (port, took)
            for sock in crowd:  # every trickler was cut too
                sock.settimeout(5)
                assert sock.recv(4096) == b""
        finally:
            for sock in crowd:
                sock.close()
