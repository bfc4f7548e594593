"""edge.metrics: counters move by exactly what was observed; the exposition parses; GPU collector via a fake NVML."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.trace import SpanContext, TraceFlags
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from cnnserve.service.edge.metrics import DURATION_BUCKETS, GpuCollector, Metrics, wants_openmetrics
from cnnserve.service.scheduling.batcher import BatchRecord
from cnnserve.service.types import ComputeTimes


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, parsed back: (name, labels) -> value."""
    families = text_string_to_metric_families(metrics.render()[0].decode())
    return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, frozenset(labels.items())), 0.0)


def test_request_outcomes_count_exactly_and_only_successes_are_timed() -> None:
    metrics = Metrics(process=False, gpu=False)
    model = metrics.for_model("digits", "1")
    for _ in range(3):
        model.observe_request("success", 0.002)
    model.observe_request("resource_exhausted", 0.0001)
    model.observe_request("deadline_exceeded", 5.0)
    labels = {"model": "digits", "version": "1"}
    assert value(metrics, "cnnserve_requests_total", **labels, outcome="success") == 3
    assert value(metrics, "cnnserve_requests_total", **labels, outcome="resource_exhausted") == 1
    assert value(metrics, "cnnserve_requests_total", **labels, outcome="deadline_exceeded") == 1
    assert value(metrics, "cnnserve_request_duration_seconds_count", **labels) == 3
    assert value(metrics, "cnnserve_request_duration_seconds_sum", **labels) == pytest.approx(0.006)
    assert value(metrics, "cnnserve_request_duration_seconds_bucket", **labels, le="0.0025") == 3


def test_batches_count_items_executions_sizes_and_queue_times() -> None:
    metrics = Metrics(process=False, gpu=False)
    model = metrics.for_model("digits", "2")
    model.observe_batch(BatchRecord(items=5, requests=2, queue_seconds=(0.001, 0.0005), run_seconds=0.01, failed=False))
    model.observe_batch(BatchRecord(items=1, requests=1, queue_seconds=(0.002,), run_seconds=0.01, failed=False))
    model.observe_batch(BatchRecord(items=3, requests=1, queue_seconds=(0.003,), run_seconds=0.0, failed=True))
    labels = {"model": "digits", "version": "2"}
    assert value(metrics, "cnnserve_inference_items_total", **labels) == 6
    assert value(metrics, "cnnserve_batches_total", **labels) == 2
    assert value(metrics, "cnnserve_batch_size_count", **labels) == 2
    assert value(metrics, "cnnserve_batch_size_bucket", **labels, le="4.0") == 1
    assert value(metrics, "cnnserve_batch_size_bucket", **labels, le="8.0") == 2
    assert value(metrics, "cnnserve_queue_duration_seconds_count", **labels) == 4  # every request that waited
    assert value(metrics, "cnnserve_queue_duration_seconds_sum", **labels) == pytest.approx(0.0065)


def test_compute_stages_and_inflight() -> None:
    metrics = Metrics(process=False, gpu=False)
    model = metrics.for_model("gan", "1")
    model.observe_batch(BatchRecord(1, 1, (0.0,), 0.021, False, ComputeTimes(0.0001, 0.02, 0.0002)))
    labels = {"model": "gan", "version": "1"}
    assert value(metrics, "cnnserve_compute_input_duration_seconds_sum", **labels) == pytest.approx(0.0001)
    assert value(metrics, "cnnserve_compute_infer_duration_seconds_sum", **labels) == pytest.approx(0.02)
    assert value(metrics, "cnnserve_compute_output_duration_seconds_count", **labels) == 1
    with model.track_inflight(), model.track_inflight():
        assert value(metrics, "cnnserve_inflight_requests", **labels) == 2
    assert value(metrics, "cnnserve_inflight_requests", **labels) == 0
    with pytest.raises(RuntimeError), model.track_inflight():
        raise RuntimeError("handler failed")
    assert value(metrics, "cnnserve_inflight_requests", **labels) == 0


def test_loaded_gauges_and_queue_depth_pushed() -> None:
    metrics = Metrics(process=False, gpu=False)
    a, b = metrics.for_model("a", "1"), metrics.for_model("b", "3")
    a.set_loaded("CPUExecutionProvider", True)
    b.set_loaded("CUDAExecutionProvider", True)
    a.set_queue_items(7)
    assert value(metrics, "cnnserve_models_loaded") == 2
    assert value(metrics, "cnnserve_model_loaded", model="b", version="3", provider="CUDAExecutionProvider") == 1
    assert value(metrics, "cnnserve_queue_items", model="a", version="1") == 7
    b.set_loaded("CUDAExecutionProvider", False)
    assert value(metrics, "cnnserve_models_loaded") == 1
    assert value(metrics, "cnnserve_model_loaded", model="b", version="3", provider="CUDAExecutionProvider") == 0


@dataclass
class Served:
    name: str
    version: int
    provider: str
    queued_items: int
    refusals: dict[str, int] = field(default_factory=dict)
    batch_time_estimates: dict[int, float] = field(default_factory=dict)


class Registry:
    """The smallest model source: a list of what is served right now."""

    def __init__(self) -> None:
        self.models: list[Served] = []

    def served_models(self) -> list[Served]:
        return self.models


def test_attached_models_are_read_at_scrape_time() -> None:
    metrics = Metrics(process=False, gpu=False)
    registry = Registry()
    metrics.attach_models(registry)
    registry.models = [Served("a", 1, "CPUExecutionProvider", 4), Served("b", 2, "CPUExecutionProvider", 0)]
    assert value(metrics, "cnnserve_models_loaded") == 2
    assert value(metrics, "cnnserve_queue_items", model="a", version="1") == 4
    registry.models[0].queued_items = 9
    registry.models.pop()  # b unloads
    assert value(metrics, "cnnserve_queue_items", model="a", version="1") == 9
    assert value(metrics, "cnnserve_models_loaded") == 1
    assert value(metrics, "cnnserve_model_loaded", model="b", version="2", provider="CPUExecutionProvider") == 0
    registry.models[0].refusals = {"queue_full": 3, "budget": 5, "deadline": 0}
    registry.models[0].batch_time_estimates = {1: 0.002, 8: 0.009}
    assert value(metrics, "cnnserve_refused_requests_total", model="a", version="1", reason="budget") == 5
    assert value(metrics, "cnnserve_refused_requests_total", model="a", version="1", reason="queue_full") == 3
    assert value(metrics, "cnnserve_batch_time_estimate_seconds", model="a", version="1", batch_size="8") == 0.009


def test_two_instances_do_not_share_a_registry_and_process_metrics_are_there() -> None:
    first, second = Metrics(gpu=False), Metrics(gpu=False)
    first.for_model("m", "1").observe_request("success", 0.1)
    assert value(first, "cnnserve_requests_total", model="m", version="1", outcome="success") == 1
    assert value(second, "cnnserve_requests_total", model="m", version="1", outcome="success") == 0
    names = {name for name, _ in samples(first)}
    assert {"process_cpu_seconds_total", "python_info"} <= names


class FakeNvml:
    """Two GPUs as NVML reports them; the second fails to answer, as a fallen-off-the-bus GPU does."""

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index == 1:
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=37, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(used=3 * 2**30, total=80 * 2**30, free=77 * 2**30)


def test_gpu_collector_reports_each_answering_gpu() -> None:
    metrics = Metrics(process=False, gpu=False)
    metrics.registry.register(GpuCollector(FakeNvml()))
    assert value(metrics, "cnnserve_gpu_utilization_ratio", gpu="0") == pytest.approx(0.37)
    assert value(metrics, "cnnserve_gpu_memory_used_bytes", gpu="0") == 3 * 2**30
    assert value(metrics, "cnnserve_gpu_memory_total_bytes", gpu="0") == 80 * 2**30
    assert ("cnnserve_gpu_utilization_ratio", frozenset({("gpu", "1")})) not in samples(metrics)


@pytest.mark.skipif(importlib.util.find_spec("pynvml") is not None, reason="pynvml is installed")
def test_without_nvml_the_gpu_metrics_are_simply_absent() -> None:
    names = {name for name, _ in samples(Metrics(process=False))}
    assert not any(n.startswith("cnnserve_gpu_") for n in names)


def test_content_type_is_prometheus_text() -> None:
    assert Metrics.content_type.startswith("text/plain; version=")


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        ("", False),
        ("text/plain;version=0.0.4", False),
        ("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2", True),
        ("Application/OpenMetrics-Text", True),
        ("application/openmetrics-text;q=0, text/plain", False),
    ],
)
def test_openmetrics_is_served_when_the_scraper_asks_for_it(accept: str, openmetrics: bool) -> None:
    assert wants_openmetrics(accept) is openmetrics
    _, content_type = Metrics(process=False, gpu=False).render(accept)
    assert content_type.startswith("application/openmetrics-text" if openmetrics else "text/plain")


def test_a_traced_observation_is_its_buckets_exemplar_in_openmetrics_only() -> None:
    metrics = Metrics(process=False, gpu=False)
    model = metrics.for_model("digits", "1")
    model.observe_request("success", 0.002, "ab" * 16)
    model.observe_request("success", 0.003)  # same bucket, untraced: the exemplar stays
    sampled = SpanContext(0xCD, 0x1, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    unsampled = SpanContext(0xEF, 0x2, is_remote=False)
    model.observe_batch(BatchRecord(3, 3, (0.0004, 0.02, 0.3), 0.001, False, traces=(None, sampled, unsampled)))
    body, _ = metrics.render("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(body.decode())}
    found = [(s.labels["le"], s.exemplar) for s in families["cnnserve_request_duration_seconds"].samples
             if s.exemplar is not None]  # fmt: skip
    assert [(le, e.labels, e.value) for le, e in found] == [("0.0025", {"trace_id": "ab" * 16}, 0.002)]
    queue = [(s.labels["le"], s.exemplar.labels) for s in families["cnnserve_queue_duration_seconds"].samples
             if s.exemplar is not None]  # fmt: skip
    assert queue == [("0.025", {"trace_id": f"{0xCD:032x}"})]
    assert value(metrics, "cnnserve_request_duration_seconds_count", model="digits", version="1") == 2
    assert value(metrics, "cnnserve_queue_duration_seconds_count", model="digits", version="1") == 3
    assert "trace_id" not in metrics.render()[0].decode()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=40))
def test_loop_histogram_buckets_agree_with_prometheus_client(values: list[float]) -> None:
    """The lock-free histogram the hot path uses exposes what prometheus_client's own would, bound for bound."""
    metrics = Metrics(process=False, gpu=False)
    model = metrics.for_model("m", "1")
    reference = Histogram("reference_seconds", "", buckets=DURATION_BUCKETS, registry=CollectorRegistry())
    for v in values:
        model.observe_batch(BatchRecord(1, 1, (), v, False, ComputeTimes(0.0, v, 0.0)))
        reference.observe(v)
    ours = {
        labels["le"]: count
        for (name, labels_set), count in samples(metrics).items()
        if name == "cnnserve_compute_infer_duration_seconds_bucket"
        for labels in [dict(labels_set)]
    }
    family = next(iter(reference.collect()))
    expected = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert ours == expected
    total = value(metrics, "cnnserve_compute_infer_duration_seconds_sum", model="m", version="1")
    assert total == pytest.approx(sum(values))
