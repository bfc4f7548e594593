"""The HTTP/REST door end to end on a real server: tritonclient.http (binary and JSON), curl, raw HTTP for the
malformed cases, TLS and tokens as on gRPC, and a REST and a gRPC request merged into one batch."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings
from tests.service.certs import Pki, make_pki

TOKEN = "tok-rest-5b2e91c0"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    # A long wait behind an idle model makes the cross-door batching test deterministic.
    onnx_models.write_classifier(
        root, dynamic_batching={"max_queue_delay_us": 300_000, "max_queue_size": 256, "wait_when_idle": True}
    )
    onnx_models.write_classifier(root, name="quick")
    onnx_models.write_conditional_generator(root)
    onnx_models.write_identity(root)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    with ServerThread(loopback_settings(repo, rest_cors_origins=("https://app.example",))) as running:
        yield running


@pytest.fixture(scope="module")
def rest(server: ServerThread) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.rest_address)
    yield client
    client.close()


def images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 4, 4)).astype(np.float32)


def call(
    server: ServerThread, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


# -- health, metadata, config, stats, repository -------------------------------------------------------------------


def test_health_metadata_and_config(rest: triton.InferenceServerClient) -> None:
    assert rest.is_server_live() and rest.is_server_ready()
    assert rest.is_model_ready("quick") and rest.is_model_ready("quick", "1")
    assert not rest.is_model_ready("quick", "7") and not rest.is_model_ready("nothing")
    meta = rest.get_server_metadata()
    assert meta["name"] == "cnnserve" and "classification" in meta["extensions"]
    model = rest.get_model_metadata("cgen")
    assert model["versions"] == ["1"]
    shapes = {t["name"]: (t["datatype"], t["shape"]) for t in [*model["inputs"], *model["outputs"]]}
    assert shapes == {"latent": ("FP32", [-1, 8]), "class": ("INT64", [-1, 1]), "images": ("FP32", [-1, 1, 2, 4])}
    config = rest.get_model_config("classifier")
    assert config["max_batch_size"] == 32 and config["platform"] == "onnxruntime_onnx"
    assert config["input"][0]["dims"] == [1, 4, 4] and config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 300_000


def test_statistics_and_repository_index(rest: triton.InferenceServerClient) -> None:
    batch = images(2)
    inp = triton.InferInput("images", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    before = rest.get_inference_statistics("quick")["model_stats"][0]["inference_count"]
    rest.infer("quick", [inp])
    stats = rest.get_inference_statistics("quick")["model_stats"][0]
    assert stats["inference_count"] == before + 2 and stats["inference_stats"]["success"]["count"] >= 1
    assert {s["name"] for s in rest.get_inference_statistics()["model_stats"]} >= {"quick", "classifier"}
    index = {m["name"]: m for m in rest.get_model_repository_index()}
    assert index["quick"]["state"] == "READY"
    with pytest.raises(InferenceServerException) as refused:  # not explicit mode, as on gRPC
        rest.load_model("quick")
    assert "explicit" in str(refused.value)


def test_explicit_mode_loads_and_unloads_through_rest(repo: Path, start_server: Any) -> None:
    """tritonclient.http's repository calls in explicit mode: a model starts unloaded, loads, serves, unloads."""
    server = start_server(repo, model_control_mode="explicit", startup_models=())
    client = triton.InferenceServerClient(server.rest_address)
    try:
        assert not client.is_model_ready("quick")
        client.load_model("quick")
        assert client.is_model_ready("quick")
        batch = images(1)
        inp = triton.InferInput("images", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        assert client.infer("quick", [inp]).as_numpy("logits").shape == (1, 10)
        client.unload_model("quick")
        assert not client.is_model_ready("quick")
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["quick"]["state"] == "UNAVAILABLE"
        with pytest.raises(InferenceServerException) as missing:
            client.load_model("no-such-model")
        assert "no-such-model" in str(missing.value)
    finally:
        client.close()


# -- inference ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
def test_infer_binary_and_json(rest: triton.InferenceServerClient, binary: bool) -> None:
    batch = images(3)
    inp = triton.InferInput("images", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=binary)
    out = triton.InferRequestedOutput("logits", binary_data=binary)
    result = rest.infer("quick", [inp], outputs=[out], request_id="req-7")
    np.testing.assert_allclose(result.as_numpy("logits"), onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_version"] == "1"


def test_every_json_datatype_round_trips(rest: triton.InferenceServerClient) -> None:
    values = {
        "BOOL": np.array([[True, False, True]]), "UINT8": np.array([[0, 1, 255]], np.uint8),
        "UINT16": np.array([[0, 1, 65535]], np.uint16), "UINT32": np.array([[0, 1, 2**32 - 1]], np.uint32),
        "UINT64": np.array([[0, 1, 2**64 - 1]], np.uint64), "INT8": np.array([[-128, 0, 127]], np.int8),
        "INT16": np.array([[-(2**15), 0, 2**15 - 1]], np.int16), "INT32": np.array([[-(2**31), 0, 7]], np.int32),
        "INT64": np.array([[-(2**62), 0, 2**62]], np.int64), "FP16": np.array([[0.5, -2, 65504]], np.float16),
        "FP32": np.array([[0.5, -1.25, 3.0]], np.float32), "FP64": np.array([[1e-300, 0, 1e300]]),
        "BYTES": np.array([[b"a", b"", "\u00e9t\u00e9".encode()]], dtype=object),
    }  # fmt: skip
    inputs, outputs = [], []
    for datatype, array in values.items():
        inp = triton.InferInput(f"in_{datatype}", list(array.shape), datatype)
        binary = datatype == "FP16"  # no JSON form: binary only, as the spec says
        inp.set_data_from_numpy(array, binary_data=binary)
        inputs.append(inp)
        outputs.append(triton.InferRequestedOutput(f"out_{datatype}", binary_data=binary))
    result = rest.infer("identity", inputs, outputs=outputs)
    for datatype, array in values.items():
        got = result.as_numpy(f"out_{datatype}")
        assert got is not None and got.shape == array.shape, datatype
        if datatype == "BYTES":
            assert [x if isinstance(x, bytes) else x.encode() for x in got.ravel()] == list(array.ravel())
        else:
            np.testing.assert_array_equal(got, array)


def test_fp16_travels_binary_only(server: ServerThread) -> None:
    body = {"inputs": [{"name": "in_FP16", "datatype": "FP16", "shape": [1, 3], "data": [1, 2, 3]}]}
    status, _, reply = call(server, "POST", "/v2/models/identity/infer", json.dumps(body).encode())
    assert status == 400 and "binary" in json.loads(reply)["error"]


def test_nested_json_data_and_classification(rest: triton.InferenceServerClient, server: ServerThread) -> None:
    batch = images(2)
    body = {
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [2, 1, 4, 4], "data": batch.tolist()}],
        "outputs": [{"name": "logits", "parameters": {"classification": 3}}],
        "parameters": {"note": "x"},
    }
    status, _, reply = call(
        server, "POST", "/v2/models/quick/infer", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200
    output = json.loads(reply)["outputs"][0]
    assert output["datatype"] == "BYTES" and output["shape"] == [2, 3]
    best = np.argsort(-onnx_models.classifier_reference(batch), axis=1)[:, 0]
    assert [int(row.split(":")[1]) for row in output["data"][::3]] == list(best)
    assert output["data"][0].split(":")[2] == f"digit-{best[0]}"
    inp = triton.InferInput("images", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    top = rest.infer("quick", [inp], outputs=[triton.InferRequestedOutput("logits", class_count=2)])
    assert top.as_numpy("logits").shape == (2, 2)


def test_generator_answers_a_png_when_asked(server: ServerThread) -> None:
    body = {
        "inputs": [
            {"name": "latent", "datatype": "FP32", "shape": [1, 8], "data": [0.1] * 8},
            {"name": "class", "datatype": "INT64", "shape": [1, 1], "data": [3]},
        ]
    }
    status, headers, reply = call(
        server, "POST", "/v2/models/cgen/infer", json.dumps(body).encode(), {"Accept": "image/png"}
    )
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(reply)).size == (4, 2)


def test_image_body_answers_predictions_best_first(server: ServerThread) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (4, 4), dtype=np.uint8)
    status, _, reply = call(
        server, "POST", "/v2/models/quick/infer?top_k=3", png(pixels), {"Content-Type": "image/png"}
    )
    assert status == 200, reply
    answer = json.loads(reply)
    assert answer["model_name"] == "quick" and len(answer["predictions"]) == 3
    scores = [p["score"] for p in answer["predictions"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
    tensor = (pixels.astype(np.float32)[None, None] / 255 - 0.5) / 0.25  # the classifier's recipe
    assert answer["predictions"][0]["index"] == int(np.argmax(onnx_models.classifier_reference(tensor)))
    assert answer["predictions"][0]["label"] == f"digit-{answer['predictions'][0]['index']}"
    status, _, reply = call(server, "POST", "/v2/models/quick/infer", b"not a png", {"Content-Type": "image/png"})
    assert status == 400 and "error" in json.loads(reply)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_json_and_image_body(server: ServerThread, tmp_path: Path) -> None:
    batch = images(1)
    body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 4, 4], "data": batch.ravel().tolist()}]}
    url = f"{server.rest_url}/v2/models/quick/infer"
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-H", "Content-Type: application/json", "-d", json.dumps(body), url],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    logits = np.array(json.loads(out)["outputs"][0]["data"], np.float32)
    np.testing.assert_allclose(logits, onnx_models.classifier_reference(batch).ravel(), rtol=1e-5, atol=1e-5)
    picture = tmp_path / "digit.png"
    picture.write_bytes(png(np.full((4, 4), 200, np.uint8)))
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail-with-body",
            "-H",
            "Content-Type: image/png",
            "--data-binary",
            f"@{picture}",
            url + "?top_k=2",
        ],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    assert len(json.loads(out)["predictions"]) == 2


def test_a_rest_and_a_grpc_request_share_one_batch(server: ServerThread, rest: triton.InferenceServerClient) -> None:
    """The classifier waits 300 ms behind an idle queue: two requests sent together from both doors must merge."""
    before = rest.get_inference_statistics("classifier")["model_stats"][0]
    a, b = images(1, seed=10), images(2, seed=11)
    results: dict[str, Any] = {}

    def via_rest() -> None:
        client = triton.InferenceServerClient(server.rest_address)
        inp = triton.InferInput("images", list(a.shape), "FP32")
        inp.set_data_from_numpy(a)
        results["rest"] = client.infer("classifier", [inp]).as_numpy("logits")
        client.close()

    def via_grpc() -> None:
        with triton_grpc.InferenceServerClient(server.grpc_address) as client:
            inp = triton_grpc.InferInput("images", list(b.shape), "FP32")
            inp.set_data_from_numpy(b)
            results["grpc"] = client.infer("classifier", [inp]).as_numpy("logits")

    threads = [threading.Thread(target=via_rest), threading.Thread(target=via_grpc)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    np.testing.assert_allclose(results["rest"], onnx_models.classifier_reference(a), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(results["grpc"], onnx_models.classifier_reference(b), rtol=1e-5, atol=1e-5)
    after = rest.get_inference_statistics("classifier")["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 3
    assert after["execution_count"] - before["execution_count"] == 1  # one batch of 3 items from both doors


# -- errors ---------------------------------------------------------------------------------------------------------


def infer_body(shape: list[int], data: Any = None, datatype: str = "FP32") -> bytes:
    count = int(np.prod(shape)) if shape else 1
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": datatype,
                    "shape": shape,
                    "data": [0.0] * count if data is None else data,
                }
            ]
        }
    ).encode()


@pytest.mark.parametrize(("path", "body", "headers", "status"), [
    ("/v2/models/nothing/infer", infer_body([1, 1, 4, 4]), {}, 404),
    ("/v2/models/quick/versions/9/infer", infer_body([1, 1, 4, 4]), {}, 404),
    ("/v2/models/quick/infer", infer_body([1, 1, 4, 5]), {}, 400),  # wrong shape
    ("/v2/models/quick/infer", infer_body([1, 1, 4, 4], data=[1.0] * 3), {}, 400),  # too few values
    ("/v2/models/quick/infer", infer_body([1, 1, 4, 4], datatype="INT64"), {}, 400),
    ("/v2/models/quick/infer", b"{not json", {}, 400),
    ("/v2/models/quick/infer", b"[" * 5000 + b"]" * 5000, {}, 400),  # nesting too deep
    ("/v2/models/quick/infer", b'{"inputs": []}', {}, 400),
    ("/v2/models/quick/infer", infer_body([1, 1, 4, 4]), {"Inference-Header-Content-Length": "99999"}, 400),
    ("/v2/models/quick/infer", infer_body([1, 1, 4, 4]), {"Inference-Header-Content-Length": "x"}, 400),
    ("/v2/models/quick/infer", infer_body([10**9, 1, 4, 4], data=[]), {}, 400),  # element count over the limit
])  # fmt: skip
def test_errors_are_json_with_the_grpc_status(
    server: ServerThread, path: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    got, reply_headers, reply = call(server, "POST", path, body, headers)
    assert got == status, reply
    assert reply_headers["Content-Type"].startswith("application/json") and json.loads(reply)["error"]


def test_binary_sizes_that_do_not_add_up_are_refused(server: ServerThread) -> None:
    header = json.dumps(
        {
            "inputs": [
                {"name": "images", "datatype": "FP32", "shape": [1, 1, 4, 4], "parameters": {"binary_data_size": 64}}
            ]
        }
    ).encode()
    for tail in (b"\0" * 10, b"\0" * 80):  # short; left over
        status, _, reply = call(
            server,
            "POST",
            "/v2/models/quick/infer",
            header + tail,
            {"Inference-Header-Content-Length": str(len(header))},
        )
        assert status == 400 and json.loads(reply)["error"]
    status, _, _ = call(
        server,
        "POST",
        "/v2/models/quick/infer",
        header + b"\0" * 64,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 200


def test_body_over_the_limit_is_413(repo: Path, start_server: Any) -> None:
    small = start_server(repo, max_message_bytes=4096)
    status, _, reply = call(small, "POST", "/v2/models/quick/infer", infer_body([1, 1, 4, 4], data=[0.0] * 2000))
    assert status == 413 and json.loads(reply)["error"]


def test_unknown_routes_and_methods(server: ServerThread) -> None:
    assert call(server, "GET", "/v2/nowhere")[0] == 404
    assert call(server, "DELETE", "/v2/models/quick")[0] == 405


def test_cors_only_for_the_listed_origin(server: ServerThread) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    status, headers, _ = call(server, "OPTIONS", "/v2/models/quick/infer", headers=preflight)
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "https://app.example"
    _, headers, _ = call(server, "GET", "/v2/health/live", headers={"Origin": "https://app.example"})
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    _, headers, _ = call(server, "GET", "/v2/health/live", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in headers


# -- security: the same settings as gRPC ----------------------------------------------------------------------------


def test_tokens_guard_the_rest_door_and_health_stays_open(repo: Path, start_server: Any) -> None:
    guarded = start_server(repo, auth_tokens=(TOKEN,))
    assert call(guarded, "GET", "/v2/health/ready")[0] == 200
    assert call(guarded, "GET", "/v2/models/quick/ready")[0] == 200
    status, headers, reply = call(guarded, "GET", "/v2/models/quick")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer" and json.loads(reply)["error"]
    assert (
        call(guarded, "POST", "/v2/models/quick/infer", infer_body([1, 1, 4, 4]), {"Authorization": "Bearer wrong"})[0]
        == 401
    )
    assert (
        call(guarded, "POST", "/v2/models/quick/infer", infer_body([1, 1, 4, 4]), {"Authorization": f"Bearer {TOKEN}"})[
            0
        ]
        == 200
    )
    closed = start_server(repo, auth_tokens=(TOKEN,), auth_open_health=False)
    assert call(closed, "GET", "/v2/health/ready")[0] == 401


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_tls_and_mutual_tls(repo: Path, pki: Pki, start_server: Any) -> None:
    mutual = start_server(repo, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, tls_client_ca_file=pki.ca)
    context = ssl.create_default_context(cafile=pki.ca)
    context.load_cert_chain(pki.client_cert, pki.client_key)
    connection = http.client.HTTPSConnection("127.0.0.1", mutual.server.rest_port, context=context, timeout=10)
    connection.request("GET", "/v2/health/ready")
    assert connection.getresponse().status == 200
    connection.close()
    client = triton.InferenceServerClient(
        mutual.rest_address,
        ssl=True,
        ssl_options={"ca_certs": str(pki.ca), "certfile": str(pki.client_cert), "keyfile": str(pki.client_key)},
    )
    assert client.is_server_ready()
    client.close()
    anonymous = http.client.HTTPSConnection(
        "127.0.0.1", mutual.server.rest_port, timeout=10, context=ssl.create_default_context(cafile=pki.ca)
    )
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        anonymous.request("GET", "/v2/health/ready")
        anonymous.getresponse()
    anonymous.close()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):  # plaintext to a TLS port
        call(mutual, "GET", "/v2/health/ready")


# -- the connection: keep-alive, bounded heads, slow clients --------------------------------------------------------


def raw_exchange(port: int, data: bytes, timeout_s: float = 5.0) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_keep_alive_serves_several_requests_on_one_connection(server: ServerThread) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=10)
    connection.request("GET", "/v2/health/live")
    connection.getresponse().read()
    first = connection.sock
    connection.request("GET", "/v2")
    assert connection.getresponse().status == 200 and connection.sock is first
    connection.close()


def test_malformed_and_oversized_heads_are_refused_as_json(server: ServerThread) -> None:
    port = server.server.rest_port
    reply = raw_exchange(port, b"NONSENSE\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ") and b'{"error":' in reply
    reply = raw_exchange(port, b"GET /v2 HTTP/1.1\r\nX-Padding: " + b"a" * 9000 + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431 ") and b"aaaa" not in reply
    assert call(server, "GET", "/v2/health/live")[0] == 200  # still serving


def test_a_client_that_trickles_its_body_is_cut_off(repo: Path, start_server: Any) -> None:
    strict = start_server(repo, rest_timeout_s=0.5)
    head = (
        b"POST /v2/models/quick/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"inputs"'
    )
    reply = raw_exchange(strict.server.rest_port, head)
    assert reply.startswith(b"HTTP/1.1 408 ") and b'{"error":' in reply


# -- overload and deadlines: 429 with Retry-After, 504 ----------------------------------------------------------------


def test_full_queue_is_429_with_retry_after_and_a_passed_deadline_504(tmp_path: Path, start_server: Any) -> None:
    onnx_models.write_slow_classifier(
        tmp_path, work=300, max_batch_size=1, dynamic_batching={"max_queue_delay_us": 0, "max_queue_size": 2}
    )
    slow = start_server(tmp_path)
    body = infer_body([1, 1, 4, 4])
    results: list[tuple[int, dict[str, str], bytes]] = []

    def send(extra: bytes = b"") -> None:
        results.append(call(slow, "POST", "/v2/models/slow/infer", extra or body))

    blocker = threading.Thread(target=send)
    blocker.start()
    while slow.server.models.get("slow").in_flight_requests == 0:  # the blocker runs (or waits) first
        threading.Event().wait(0.005)
    late = json.dumps(
        {
            "inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 4, 4], "data": [0.0] * 16}],
            "parameters": {"timeout": 1000},
        }
    ).encode()  # 1 ms: passes while queued behind the blocker
    status, _, reply = call(slow, "POST", "/v2/models/slow/infer", late)
    assert status == 504 and json.loads(reply)["error"]
    burst = [threading.Thread(target=send) for _ in range(6)]
    for thread in [*burst]:
        thread.start()
    for thread in [blocker, *burst]:
        thread.join(60)
    refused = [headers for status, headers, _ in results if status == 429]
    assert refused and all(headers["Retry-After"] == "1" for headers in refused)
    assert {status for status, _, _ in results} <= {200, 429} and any(s == 200 for s, _, _ in results)


def test_a_request_that_would_miss_the_latency_budget_is_429_at_once(tmp_path: Path, start_server: Any) -> None:
    onnx_models.write_slow_classifier(tmp_path, work=150, max_batch_size=1,
                                      dynamic_batching={"max_queue_delay_us": 0, "latency_budget_ms": 50})  # fmt: skip
    slow = start_server(tmp_path)
    body = infer_body([1, 1, 4, 4])
    results: list[tuple[int, dict[str, str], bytes]] = []
    blocker = threading.Thread(target=lambda: results.append(call(slow, "POST", "/v2/models/slow/infer", body)))
    blocker.start()
    while slow.server.models.get("slow").in_flight_requests == 0:  # an idle model admits whatever its budget
        threading.Event().wait(0.005)
    started = time.monotonic()
    status, headers, reply = call(slow, "POST", "/v2/models/slow/infer", body)
    refused_in = time.monotonic() - started
    blocker.join(60)
    assert status == 429 and headers["Retry-After"] == "1"
    assert "over its latency budget of 50 ms" in json.loads(reply)["error"]
    assert refused_in < 0.1  # at once, not after the running batch (~200 ms)
    assert results and results[0][0] == 200
