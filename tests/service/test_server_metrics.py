"""Prometheus metrics through a real server: each counter moves by exactly what the requests did, each failure moves
only its own outcome, and ModelStatistics (as tritonclient reads it) tells the same story."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from prometheus_client.parser import text_string_to_metric_families

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings

CPU = "CPUExecutionProvider"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("repo")
    onnx_models.write_classifier(repo)
    # 0.1-0.3 s per execution (150 steps: 0.1 s on a fast day, 2026-12-06), one request per batch, room for two
    # waiting: easy to fill, and to outwait.
    onnx_models.write_slow_classifier(
        repo, work=150, max_batch_size=1, dynamic_batching={"max_queue_delay_us": 0, "max_queue_size": 2}
    )
    with ServerThread(loopback_settings(repo)) as running:
        yield running


class Scrape:
    """One /metrics scrape, parsed back with prometheus_client's own parser."""

    def __init__(self, server: ServerThread) -> None:
        with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        self.samples: Samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Sum over every series of `name` whose labels include `labels`."""
        wanted = labels.items()
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= dict(ls).items())

    def series(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for n, labels in self.samples if n == name]


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.get(name, **labels) - before.get(name, **labels)


def outcomes(before: Scrape, after: Scrape) -> dict[tuple[str, str], float]:
    """(model, outcome) -> how many requests ended so between the scrapes, for every model; unmoved ones left out."""
    moved = {}
    for (name, labels), value in after.samples.items():
        if name == "cnnserve_requests_total" and value != before.samples.get((name, labels), 0.0):
            tags = dict(labels)
            moved[(tags["model"], tags["outcome"])] = value - before.samples.get((name, labels), 0.0)
    return moved


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 4, 4)).astype(np.float32)


def infer_request(model: str, batch: np.ndarray, datatype: str = "FP32") -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="images", datatype=datatype, shape=list(batch.shape))],
        raw_input_contents=[batch.tobytes()],
    )


def stats(client: triton.InferenceServerClient, model: str) -> Any:
    """The model's ModelStatistics as tritonclient reads it (its own copy of the protobuf classes)."""
    [one] = client.get_inference_statistics(model).model_stats
    return one


def settled(server: ServerThread, name: str, expected: float, **labels: str) -> Scrape:
    """A scrape once `name` reached `expected`: a client's own deadline can fire before the server records."""
    deadline = time.monotonic() + 10
    while (scrape := Scrape(server)).total(name, **labels) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return scrape


CLASSIFIER = {"model": "classifier", "version": "1"}
SLOW = {"model": "slow", "version": "1"}


def test_successes_move_counters_exactly_and_agree_with_model_statistics(
    server: ServerThread, stub: pb_grpc.GRPCInferenceServiceStub, client: triton.InferenceServerClient
) -> None:
    burst, k = 24, 3
    before, stats_before = Scrape(server), stats(client, "classifier")
    # An idle model runs a lone request at once, so on a slow machine one burst may arrive too thinly to merge:
    # repeat it until batches were shared, so that the counters of batches and of requests differ.
    for bursts in range(1, 6):
        batches = [images(k, seed=i) for i in range(burst)]
        futures = [stub.ModelInfer.future(infer_request("classifier", b), timeout=30) for b in batches]
        for future, batch in zip(futures, batches, strict=True):
            logits = np.frombuffer(future.result().raw_output_contents[0], np.float32).reshape(k, 10)
            np.testing.assert_allclose(logits, onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5)
        executions = stats(client, "classifier").execution_count - stats_before.execution_count
        if executions < burst * bursts:
            break
    after, stats_after = Scrape(server), stats(client, "classifier")

    n = burst * bursts
    executions = stats_after.execution_count - stats_before.execution_count
    assert 1 <= executions < n  # concurrent requests shared batches
    d = {
        name: delta(before, after, name, **CLASSIFIER)
        for name in (
            "cnnserve_inference_items_total",
            "cnnserve_batches_total",
            "cnnserve_batch_size_count",
            "cnnserve_batch_size_sum",
            "cnnserve_request_duration_seconds_count",
            "cnnserve_queue_duration_seconds_count",
            "cnnserve_compute_input_duration_seconds_count",
            "cnnserve_compute_infer_duration_seconds_count",
            "cnnserve_compute_output_duration_seconds_count",
        )
    }
    assert outcomes(before, after) == {("classifier", "success"): n}
    assert d["cnnserve_inference_items_total"] == d["cnnserve_batch_size_sum"] == n * k
    assert d["cnnserve_batches_total"] == d["cnnserve_batch_size_count"] == executions
    assert d["cnnserve_compute_input_duration_seconds_count"] == executions
    assert d["cnnserve_compute_infer_duration_seconds_count"] == executions
    assert d["cnnserve_compute_output_duration_seconds_count"] == executions
    assert d["cnnserve_request_duration_seconds_count"] == d["cnnserve_queue_duration_seconds_count"] == n

    # ModelStatistics, as tritonclient reads it, counts the same requests, items and executions.
    s0, s1 = stats_before.inference_stats, stats_after.inference_stats
    assert s1.success.count - s0.success.count == n
    assert s1.fail.count - s0.fail.count == 0
    assert s1.queue.count - s0.queue.count == n
    assert s1.compute_infer.count - s0.compute_infer.count == n  # per request, as Triton counts it
    assert stats_after.inference_count - stats_before.inference_count == n * k
    per_size_before = {b.batch_size: b.compute_infer.count for b in stats_before.batch_stats}
    per_size = {
        b.batch_size: b.compute_infer.count - per_size_before.get(b.batch_size, 0) for b in stats_after.batch_stats
    }
    assert sum(per_size.values()) == executions
    assert sum(size * count for size, count in per_size.items()) == n * k
    assert all(size % k == 0 and size <= 32 for size, count in per_size.items() if count)

    # Nothing left waiting or in flight; both models loaded, with their provider.
    assert after.get("cnnserve_queue_items", **CLASSIFIER) == 0
    assert after.get("cnnserve_inflight_requests", **CLASSIFIER) == 0
    assert after.get("cnnserve_model_loaded", **CLASSIFIER, provider=CPU) == 1
    assert after.get("cnnserve_model_loaded", **SLOW, provider=CPU) == 1
    assert after.get("cnnserve_models_loaded") == 2


def test_invalid_input_moves_only_invalid_argument(
    server: ServerThread, stub: pb_grpc.GRPCInferenceServiceStub, client: triton.InferenceServerClient
) -> None:
    before, stats_before = Scrape(server), stats(client, "classifier")
    bad = infer_request("classifier", images(2, seed=1).view(np.int32), datatype="INT32")
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(bad, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after, stats_after = Scrape(server), stats(client, "classifier")
    assert outcomes(before, after) == {("classifier", "invalid_argument"): 1}
    for name in (
        "cnnserve_inference_items_total",
        "cnnserve_batches_total",
        "cnnserve_request_duration_seconds_count",
        "cnnserve_queue_duration_seconds_count",
    ):
        assert delta(before, after, name, **CLASSIFIER) == 0, name
    # Refused before it reached the model: ModelStatistics, which counts what the model's queue saw, is unmoved.
    assert stats_after.inference_stats == stats_before.inference_stats


def test_unknown_models_and_versions_leave_no_series(
    server: ServerThread, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    """NOT_FOUND is not recorded per model: strangers' names would otherwise become label values."""
    before = Scrape(server)
    for request in (
        infer_request("no-such-model", images(1, seed=2)),
        pb.ModelInferRequest(model_name="classifier", model_version="9"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    after = Scrape(server)
    assert outcomes(before, after) == {}
    labelled = [dict(labels) for _, labels in after.samples]
    assert not [labels for labels in labelled if labels.get("model") == "no-such-model" or labels.get("version") == "9"]
    assert not [s for s in after.series("cnnserve_requests_total") if s["outcome"] == "not_found"]


def test_queue_full_moves_only_resource_exhausted(
    server: ServerThread, stub: pb_grpc.GRPCInferenceServiceStub, client: triton.InferenceServerClient
) -> None:
    before, stats_before = Scrape(server), stats(client, "slow")
    futures = [stub.ModelInfer.future(infer_request("slow", images(1, seed=i)), timeout=30) for i in range(8)]
    codes = []
    for future in futures:
        try:
            future.result()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as err:
            codes.append(err.code())
    refused, answered = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED), codes.count(grpc.StatusCode.OK)
    assert refused + answered == len(codes)
    assert refused >= 1 and answered >= 3  # one running and two waiting were accepted at the peak
    after, stats_after = Scrape(server), stats(client, "slow")
    assert outcomes(before, after) == {("slow", "resource_exhausted"): refused, ("slow", "success"): answered}
    assert delta(before, after, "cnnserve_batches_total", **SLOW) == answered  # max_batch_size 1
    assert delta(before, after, "cnnserve_inference_items_total", **SLOW) == answered
    assert stats_after.inference_stats.fail.count - stats_before.inference_stats.fail.count == refused
    assert stats_after.inference_stats.success.count - stats_before.inference_stats.success.count == answered
    assert stats_after.execution_count - stats_before.execution_count == answered
    assert after.get("cnnserve_queue_items", **SLOW) == 0


def test_deadline_moves_only_deadline_exceeded(
    server: ServerThread, stub: pb_grpc.GRPCInferenceServiceStub, client: triton.InferenceServerClient
) -> None:
    before, stats_before = Scrape(server), stats(client, "slow")
    running = stub.ModelInfer.future(infer_request("slow", images(1, seed=1)), timeout=30)
    time.sleep(0.02)  # let it reach the executor, so the next one has to wait ~0.1 s in the queue
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(infer_request("slow", images(1, seed=2)), timeout=0.03)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    running.result()
    after = settled(server, "cnnserve_requests_total", before.total("cnnserve_requests_total") + 2)
    stats_after = stats(client, "slow")
    assert outcomes(before, after) == {("slow", "deadline_exceeded"): 1, ("slow", "success"): 1}
    assert delta(before, after, "cnnserve_batches_total", **SLOW) == 1  # the late request never ran
    assert stats_after.inference_stats.fail.count - stats_before.inference_stats.fail.count == 1
    assert stats_after.execution_count - stats_before.execution_count == 1
    assert after.get("cnnserve_queue_items", **SLOW) == 0


def test_client_cancel_moves_only_cancelled(
    server: ServerThread, stub: pb_grpc.GRPCInferenceServiceStub, client: triton.InferenceServerClient
) -> None:
    before, stats_before = Scrape(server), stats(client, "slow")
    running = stub.ModelInfer.future(infer_request("slow", images(1, seed=1)), timeout=30)
    time.sleep(0.02)
    waiting = stub.ModelInfer.future(infer_request("slow", images(1, seed=2)), timeout=30)
    time.sleep(0.02)  # queued behind the running one
    assert waiting.cancel()
    running.result()
    after = settled(server, "cnnserve_requests_total", before.total("cnnserve_requests_total") + 2)
    stats_after = stats(client, "slow")
    assert outcomes(before, after) == {("slow", "cancelled"): 1, ("slow", "success"): 1}
    assert delta(before, after, "cnnserve_batches_total", **SLOW) == 1  # the cancelled request never ran
    assert stats_after.inference_stats.fail.count - stats_before.inference_stats.fail.count == 1
    assert after.get("cnnserve_queue_items", **SLOW) == 0
