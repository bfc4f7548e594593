"""docker-compose.yml for real on a Docker engine: the CPU server image built and healthy behind the gRPC load
balancer, tritonclient and the CLI through the published port on 127.0.0.1, Prometheus scraping every replica in
the compose network and answering every query of the Grafana dashboard, `--scale server=3` behind one address,
and `docker compose stop server` under load answering every request the server accepted.

Skips, saying why, where no Docker engine answers; scripts/ci_containers.sh starts one in CI.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.client import images as images_sdk
from cnnserve.training.defaults import DEFAULT_MODELS
from tests.deploy.conftest import Stack
from tests.deploy.tools import DEPLOY, run, tool

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]

REST, GRPC, HTTP, PROMETHEUS = 8000, 8001, 8002, 9090
MODELS = DEFAULT_MODELS  # what the stack's repository holds: the defaults, trained on the host
CLASSIFIER = "digits_cnn"
SERVER_IMAGE = "cnnserve-server:latest"


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 16, 16), dtype=np.float32)


def infer_request(batch: np.ndarray) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=CLASSIFIER,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="images", datatype="FP32", shape=list(batch.shape))],
        raw_input_contents=[batch.tobytes()],
    )


def scrape(address: str) -> dict[str, float]:
    """Sums of a server's samples by name, straight from its /metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("outcome", "success") == "success":
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def prometheus(stack: Stack, path: str, **params: str) -> Any:
    url = f"http://{stack.address('prometheus', PROMETHEUS)}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return body["data"]


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float = 90.0, every_s: float = 1.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f}s waiting for {what}"
        time.sleep(every_s)


@contextmanager
def background_load(address: str, every_s: float = 0.05, invalid_every: int = 10) -> Iterator[Counter[str]]:
    """Requests through `address` until the block ends: batches of 1-8, and now and then a malformed one."""
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def loop() -> None:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            i = 0
            while not stop.is_set():
                i += 1
                request = infer_request(images(1 + i % 8, seed=i))
                if i % invalid_every == 0:
                    request.inputs[0].shape[-1] = 15  # wrong shape: INVALID_ARGUMENT, counted as a failure
                try:
                    stub.ModelInfer(request, timeout=10)
                    outcomes["ok"] += 1
                except grpc.RpcError as err:
                    outcomes[err.code().name] += 1
                stop.wait(every_s)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)


# --- the image ---------------------------------------------------------------------------------------------------


def test_server_image_is_non_root_torch_free_and_checks_its_health(stack: Stack) -> None:
    docker = tool("docker")
    assert docker is not None
    inspected = run([docker, "image", "inspect", SERVER_IMAGE], timeout=30)
    assert inspected.returncode == 0, inspected.stderr
    (image,) = json.loads(inspected.stdout)
    config = image["Config"]
    assert config["User"] == "10001:10001"
    assert set(config["ExposedPorts"]) == {f"{REST}/tcp", f"{GRPC}/tcp", f"{HTTP}/tcp"}
    assert set(config["Volumes"]) == {"/models"}
    assert config["Entrypoint"] == ["cnnserve"] and config["Cmd"] == ["serve"]
    assert "cnnserve health" in " ".join(config["Healthcheck"]["Test"])
    probe = "import importlib.util as u; print(u.find_spec('torch') is None, u.find_spec('onnxruntime') is not None)"
    result = run([docker, "run", "--rm", "--entrypoint", "python", SERVER_IMAGE, "-c", probe], timeout=60)
    assert result.stdout.split() == ["True", "True"], result.stdout + result.stderr
    size_mb = image["Size"] / 1e6
    stack.timings["server image size, MB"] = size_mb
    assert size_mb < 700, f"the CPU server image is {size_mb:.0f} MB"


def test_trainer_filled_the_volume_once_and_the_server_is_healthy(stack: Stack) -> None:
    (trainer,) = stack.containers("trainer", all_states=True)
    assert trainer["State"] == "exited" and trainer["ExitCode"] == 0, trainer
    assert "trainer: copied" in stack.logs("trainer")
    (server,) = stack.containers("server")
    assert server["State"] == "running" and server["Health"] == "healthy", server
    # The server itself is PID 1 (exec form, no shell in between), as the non-root user, on a read-only root.
    pid1 = stack.check("exec", "-T", "server", "cat", "/proc/1/cmdline").split("\0")
    assert pid1[-3:-1] == ["/opt/venv/bin/cnnserve", "serve"], pid1
    assert stack.check("exec", "-T", "server", "id", "-u").strip() == "10001"
    docker = tool("docker")
    assert docker is not None
    inspected = run([docker, "container", "inspect", server["ID"]], timeout=30)
    (container,) = json.loads(inspected.stdout)
    assert container["HostConfig"]["ReadonlyRootfs"] is True
    mounts = {m["Destination"]: m for m in container["Mounts"]}
    assert mounts["/models"]["Type"] == "volume" and mounts["/models"]["RW"] is False


# --- clients through the published port ---------------------------------------------------------------------------


def test_tritonclient_classifies_through_the_load_balancer(stack: Stack) -> None:
    address = stack.address("lb", GRPC)
    client = triton.InferenceServerClient(address)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert all(client.is_model_ready(name) for name in MODELS)
        metadata = client.get_model_metadata(CLASSIFIER)
        (input_meta,), output_meta = metadata.inputs, metadata.outputs[0]  # the logits; feature maps follow
        assert all(o.name.startswith("features.") for o in metadata.outputs[1:])
        batch = images(5, seed=1)
        tensor = triton.InferInput(input_meta.name, list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        logits = client.infer(CLASSIFIER, [tensor]).as_numpy(output_meta.name)
        top3 = client.infer(
            CLASSIFIER, [tensor], outputs=[triton.InferRequestedOutput(output_meta.name, class_count=3)]
        ).as_numpy(output_meta.name)
    finally:
        client.close()
    # The same model file on the host's ONNX Runtime gives the same answer as the container.
    session = ort.InferenceSession(
        str(stack.seed / CLASSIFIER / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    expected = session.run([output_meta.name], {input_meta.name: batch})[0]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    labels = (stack.seed / CLASSIFIER / "labels.txt").read_text().split()
    for row, ranking in zip(expected, top3, strict=True):
        score, index, label = ranking[0].decode().split(":")
        assert int(index) == int(np.argmax(row)) and label == labels[int(index)]
        assert math.isclose(float(score), float(row.max()), rel_tol=1e-4)


def test_cli_checks_health_lists_models_and_generates_through_the_load_balancer(stack: Stack, tmp_path: Path) -> None:
    url = stack.address("lb", GRPC)
    cnnserve = tool("cnnserve")
    assert cnnserve is not None
    health = run([cnnserve, "health", "--url", url], timeout=30)
    assert health.returncode == 0, health.stdout + health.stderr
    models = run([cnnserve, "models", "--url", url, "--json"], timeout=30)
    assert {m["name"] for m in json.loads(models.stdout)} >= set(MODELS), models.stderr
    grid = tmp_path / "sevens.png"
    generate = run(
        [cnnserve, "generate", "--url", url, "--model", "cdcgan_digits", "--label", "7", "-n", "4", "--out", str(grid)],
        timeout=60,
    )
    assert generate.returncode == 0, generate.stderr
    assert Image.open(grid).size[0] > 0


def test_cli_classifies_through_the_load_balancer(stack: Stack, tmp_path: Path) -> None:
    url = stack.address("lb", GRPC)
    cnnserve = tool("cnnserve")
    assert cnnserve is not None
    digits = [tmp_path / f"{i}.png" for i in range(2)]
    for i, path in enumerate(digits):
        Image.fromarray((images(1, seed=i)[0, 0] * 255).astype(np.uint8)).save(path)
    classify = run([cnnserve, "classify", "--url", url, "--model", CLASSIFIER, "--json", *map(str, digits)], timeout=60)
    assert classify.returncode == 0, classify.stderr
    labels = set((stack.seed / CLASSIFIER / "labels.txt").read_text().split())
    answers = json.loads(classify.stdout)
    assert [a["file"] for a in answers] == [str(p) for p in digits]
    assert all(len(a["top"]) == 3 and {t["label"] for t in a["top"]} <= labels for a in answers)


def test_curl_infers_through_the_published_rest_port(stack: Stack) -> None:
    """One JSON inference and one PNG body with curl, through the balancer's published HTTP/REST port."""
    curl = tool("curl")
    assert curl is not None, "curl is needed for this check"
    url = f"http://{stack.address('lb', REST)}/v2/models/{CLASSIFIER}/infer"
    batch = images(1, seed=3)
    body = json.dumps(
        {"inputs": [{"name": "images", "datatype": "FP32", "shape": list(batch.shape), "data": batch.ravel().tolist()}]}
    )
    answer = run([curl, "-sS", "--fail-with-body", "-H", "Content-Type: application/json", "-d", body, url], timeout=60)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    (output,) = json.loads(answer.stdout)["outputs"]
    session = ort.InferenceSession(
        str(stack.seed / CLASSIFIER / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    expected = session.run(None, {"images": batch})[0]
    np.testing.assert_allclose(np.array(output["data"], np.float32), expected.ravel(), rtol=1e-4, atol=1e-5)
    seven = DEPLOY.parent / "examples" / "digits" / "7.png"
    answer = run(
        [
            curl,
            "-sS",
            "--fail-with-body",
            "-H",
            "Content-Type: image/png",
            "--data-binary",
            f"@{seven}",
            url + "?top_k=3",
        ],
        timeout=60,
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr
    predictions = json.loads(answer.stdout)["predictions"]
    # The stack's models are --dry-run trained (one batch): the ranking, not the digit, is what can be checked. It
    # must be what the same file gives in-process through the one image recipe.
    config = json.loads((stack.seed / CLASSIFIER / "config.json").read_text())
    pixels = images_sdk.load([seven], config["preprocessing"])
    logits = session.run(None, {"images": pixels})[0][0]
    top = np.argsort(-logits)[:3]
    assert [p["index"] for p in predictions] == top.tolist()
    scores = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose([p["score"] for p in predictions], scores[top], rtol=1e-4, atol=1e-6)


# --- Prometheus and the dashboard ---------------------------------------------------------------------------------


def test_prometheus_scrapes_the_server_inside_the_compose_network(stack: Stack) -> None:
    check = stack.compose("exec", "-T", "prometheus", "promtool", "check", "config", "/etc/prometheus/prometheus.yml")
    assert check.returncode == 0, check.stdout + check.stderr

    def targets() -> list[dict[str, Any]]:
        active = prometheus(stack, "/api/v1/targets", state="active")["activeTargets"]
        return [t for t in active if t["labels"]["job"] == "cnnserve"]

    wait_for("Prometheus to scrape the server", lambda: any(t["health"] == "up" for t in targets()))
    (target,) = targets()
    assert target["discoveredLabels"]["__meta_dns_name"] == "server", "found by the compose service name"
    assert target["scrapeUrl"].endswith(f":{HTTP}/metrics") and "127.0.0.1" not in target["scrapeUrl"]


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "cnnserve.json").read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "1m").replace("$model", ".*"))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def test_every_dashboard_query_parses_and_returns_data(stack: Stack) -> None:
    queries = dashboard_queries()
    gpu = {expr for title, expr in queries if title.startswith("GPU")}  # NVML only: no series on the CPU image
    results: dict[str, list[dict[str, Any]]] = {}

    def all_answered() -> bool:
        for _, expr in queries:
            results[expr] = prometheus(stack, "/api/v1/query", query=expr)["result"]  # a parse error fails here
        latency = results[next(e for t, e in queries if t.startswith("Request latency"))]
        finite = any(math.isfinite(float(r["value"][1])) for r in latency)
        return finite and all(results[expr] for _, expr in queries if expr not in gpu)

    with background_load(stack.address("lb", GRPC)) as outcomes:
        wait_for("every dashboard query to return data", all_answered, timeout_s=120, every_s=3)
    assert outcomes["ok"] > 0 and set(outcomes) == {"ok", "INVALID_ARGUMENT"}, outcomes
    assert all(results[expr] == [] for expr in gpu)
    failures = results[next(e for t, e in queries if t == "Failures by reason")]
    assert {r["metric"]["outcome"] for r in failures} == {"invalid_argument"}
    values = prometheus(stack, "/api/v1/label/model/values", **{"match[]": "cnnserve_model_loaded"})
    assert set(values) == set(MODELS), "the dashboard's $model variable"


# --- scaling out and stopping -------------------------------------------------------------------------------------


def test_scaled_servers_share_one_address(stack: Stack) -> None:
    started = time.monotonic()
    stack.check(
        "up", "--detach", "--pull", "never", "--wait", "--wait-timeout", "300", "--scale", "server=3",
        "server", "lb", "prometheus", timeout=400,
    )  # fmt: skip
    stack.timings["scale to 3 replicas"] = time.monotonic() - started
    try:
        assert "already filled" in stack.logs("trainer"), "the trainer leaves a filled volume alone"
        metrics = [stack.address("server", HTTP, index=i) for i in (1, 2, 3)]
        before = [scrape(a).get("cnnserve_requests_total", 0.0) for a in metrics]
        lb = stack.address("lb", GRPC)

        def every_replica_served() -> bool:
            with grpc.insecure_channel(lb) as channel:  # one client connection, as a real client keeps
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                for i in range(30):
                    stub.ModelInfer(infer_request(images(1, seed=i)), timeout=10)
            after = [scrape(a).get("cnnserve_requests_total", 0.0) for a in metrics]
            return all(b > a for a, b in zip(before, after, strict=True))

        wait_for("requests from one client connection to reach all 3 replicas", every_replica_served, 60)

        def three_targets_up() -> bool:
            query = prometheus(stack, "/api/v1/query", query='count(up{job="cnnserve"} == 1)')["result"]
            return bool(query) and query[0]["value"][1] == "3"

        wait_for("Prometheus to discover and scrape 3 replicas", three_targets_up)
    finally:
        stack.check(
            "up", "--detach", "--pull", "never", "--wait", "--wait-timeout", "300", "--scale", "server=1",
            "server", "lb", "prometheus", timeout=400,
        )  # fmt: skip
    assert len(stack.containers("server")) == 1


def test_compose_stop_server_under_load_answers_every_accepted_request(stack: Stack) -> None:
    """Clients call the server's own port in closed loops; `docker compose stop server` sends SIGTERM. Every reply
    is OK until the client is refused, no request fails any other way, and the server exits 0 after draining every
    request it admitted (`drained=True`), well before Docker's SIGKILL.

    Refused means UNAVAILABLE (the server's own refusal while draining, or no server left), or CANCELLED for a call
    that reaches gRPC in the few milliseconds between the end of the drain and the listener's stop: gRPC's shutdown
    cancels calls it never handed to the server (seen about once in five runs through docker-proxy's extra hop)."""
    address = stack.address("server", GRPC)
    replies: list[list[str]] = [[] for _ in range(4)]
    stopping = threading.Event()

    def client(log: list[str]) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            deadline = time.monotonic() + 120
            i = 0
            while time.monotonic() < deadline:
                i += 1
                try:
                    stub.ModelInfer(infer_request(images(8, seed=i)), timeout=30)
                except grpc.RpcError as err:
                    log.append(f"{err.code().name}: {err.details()}")
                    return  # a refused client stops; after a refusal the server may be gone
                log.append("OK-after-stop" if stopping.is_set() else "OK")

    threads = [threading.Thread(target=client, args=(log,), daemon=True) for log in replies]
    for thread in threads:
        thread.start()
    wait_for("load to run", lambda: all(len(log) >= 20 for log in replies), timeout_s=30, every_s=0.1)
    stopping.set()
    started = time.monotonic()
    stack.check("stop", "server", timeout=120)
    stop_s = stack.timings["compose stop server"] = time.monotonic() - started
    for thread in threads:
        thread.join(60)

    logs = stack.logs("server")
    outcomes = Counter(outcome.split(":")[0] for log in replies for outcome in log)
    refusals = [log[-1] for log in replies]
    assert all(o in {"OK", "OK-after-stop"} for log in replies for o in log[:-1]), f"{outcomes}\n{logs[-3000:]}"
    assert all(r.split(":")[0] in {"UNAVAILABLE", "CANCELLED"} for r in refusals), f"{refusals}\n{logs[-3000:]}"
    assert outcomes["OK-after-stop"] > 0, "the load ran on while the server was being stopped"
    (server,) = stack.containers("server", all_states=True)
    assert server["State"] == "exited" and server["ExitCode"] == 0, server
    assert "event=signal action=drain" in logs and "event=stopped drained=True" in logs, logs[-3000:]
    assert stop_s < 30, f"docker compose stop took {stop_s:.1f}s: the drain should end long before SIGKILL"
