"""Prometheus metrics for one server instance: its own registry, per-model handles, process and (NVML) GPU metrics.

Push side: a loaded version's observer is its `ModelMetrics`: the version passes each request's outcome to
`observe_request` and each batch (with its compute phases) to `observe_batch`, after the statistics have taken them,
and the servicer calls `track_inflight`. Pull side: gauges
that mirror state (queue depth, loaded models) are refreshed from an attached model source at scrape time, so the
hot path never writes them. docs/metrics.md maps every metric to Triton's.

Exemplars: a request whose trace span was sampled leaves its trace id on the request- and queue-duration bucket it
fell in (the latest such per bucket); only the OpenMetrics exposition carries them, served when the scraper's Accept
asks for it (`render`). Untraced requests take the plain path, unchanged.

The per-model counters and histograms are plain numbers owned by the event loop (every observation and every scrape
runs on it), turned into metric families at scrape time: prometheus_client's own take a lock and walk the buckets in
Python on each of the ~10 observations a request makes (about 10 us of CPU per request, 7% of the in-process request
path for the digits CNN).
"""

from __future__ import annotations

import bisect
import importlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Exemplar, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from cnnserve.service import tracing
from cnnserve.service.scheduling.batcher import BatchRecord

logger = logging.getLogger(__name__)

# 50 us .. 10 s: a small CNN on a GPU at the low end, a deep queue on 2 CPU cores at the high end.
DURATION_BUCKETS = (
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(10))  # 1, 2, 4, ..., 512
SUCCESS = "success"  # the other outcomes are lower-case gRPC status names: resource_exhausted, internal, ...
MODEL_LABELS = ("model", "version")


class ServedModelView(Protocol):
    """What the scrape-time refresh reads from each loaded model version."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> object: ...  # rendered with str()
    @property
    def provider(self) -> str: ...
    @property
    def queued_items(self) -> int: ...
    @property
    def refusals(self) -> Mapping[str, int]: ...
    @property
    def batch_time_estimates(self) -> Mapping[int, float]: ...


class ModelSource(Protocol):
    def served_models(self) -> Iterable[ServedModelView]: ...


class Metrics:
    """All metrics of one server instance, in a registry of its own (several servers can share a process)."""

    content_type = CONTENT_TYPE_LATEST
    openmetrics_type = openmetrics.CONTENT_TYPE_LATEST

    def __init__(self, *, process: bool = True, gpu: bool = True) -> None:
        self.registry = r = CollectorRegistry()
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        if gpu and (nvml := _load_nvml()) is not None:
            r.register(GpuCollector(nvml))
        self._models: dict[tuple[str, str], ModelMetrics] = {}
        r.register(_ModelFamilies(self._models))
        self.model_loaded = Gauge(
            "cnnserve_model_loaded",
            "1 while the model version is loaded and serving, else 0.",
            (*MODEL_LABELS, "provider"),
            registry=r,
        )
        self._loaded: dict[tuple[str, str], str] = {}  # (model, version) -> provider, for the versions serving
        self.models_loaded = Gauge("cnnserve_models_loaded", "Model versions loaded and serving.", registry=r)
        self.unauthenticated = Counter(
            "cnnserve_unauthenticated_requests_total", "Calls refused for a missing or invalid token.", registry=r
        )
        self.models_loaded.set_function(lambda: len(self._loaded))
        self._source: ModelSource | None = None

    def attach_memory(self, held: Callable[[], int], refused: Callable[[], int]) -> None:
        """Read the byte budget's use (scheduling/memory.py) at every scrape."""
        self.registry.register(_MemoryFamilies(held, refused))

    def for_model(self, model: str, version: str) -> ModelMetrics:
        key = (model, version)
        if key not in self._models:
            self._models[key] = ModelMetrics(self, model, version)
        return self._models[key]

    def attach_models(self, source: ModelSource) -> None:
        """Read queue depth and loaded state from `source` at every scrape (instead of pushing them)."""
        self._source = source

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """Everything, and its content type: OpenMetrics (with exemplars) when the `accept` header names
        application/openmetrics-text, as Prometheus's does, else the classic text format. Runs on the event loop (a
        refresh reads live model state)."""
        if self._source is not None:
            self._refresh(self._source)
        if wants_openmetrics(accept):
            return openmetrics.generate_latest(self.registry), self.openmetrics_type  # type: ignore[no-untyped-call]
        return generate_latest(self.registry), self.content_type

    def set_loaded(self, model: str, version: str, provider: str, loaded: bool) -> None:
        self.model_loaded.labels(model, version, provider).set(1 if loaded else 0)
        if loaded:
            self._loaded[(model, version)] = provider
        elif self._loaded.get((model, version)) == provider:
            del self._loaded[(model, version)]

    def _refresh(self, source: ModelSource) -> None:
        served: dict[tuple[str, str], str] = {}
        for view in source.served_models():
            handle = self.for_model(view.name, str(view.version))
            handle.set_queue_items(view.queued_items)
            handle.refusals, handle.batch_time_estimates = dict(view.refusals), dict(view.batch_time_estimates)
            served[(handle.model, handle.version)] = view.provider
        for (model, version), provider in list(self._loaded.items()):
            if served.get((model, version)) != provider:
                self.set_loaded(model, version, provider, False)
                self.for_model(model, version).set_queue_items(0)
        for (model, version), provider in served.items():
            self.set_loaded(model, version, provider, True)


def wants_openmetrics(accept: str) -> bool:
    """Whether an Accept header lists application/openmetrics-text (any version) with a q above 0."""
    for entry in accept.split(","):
        kind, *params = (part.strip() for part in entry.split(";"))
        if kind.lower() != "application/openmetrics-text":
            continue
        q = next((p.partition("=")[2] for p in params if p.lower().startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            continue
    return False


class LoopHistogram:
    """A histogram for one thread (the event loop's): an observation is a bisect and two additions, no lock."""

    __slots__ = ("bounds", "counts", "exemplars", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0
        self.exemplars: dict[int, Exemplar] = {}  # bucket index -> the latest traced observation in it

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # bucket `le` holds values <= its bound
        self.sum += value

    def observe_traced(self, value: float, trace_id: str) -> None:
        """`observe`, and the observation kept as its bucket's exemplar, naming the request's trace."""
        index = bisect.bisect_left(self.bounds, value)
        self.counts[index] += 1
        self.sum += value
        self.exemplars[index] = Exemplar({"trace_id": trace_id}, value, time.time())

    def cumulative(self) -> list[tuple[str, float] | tuple[str, float, Exemplar]]:
        running, buckets = 0, []
        bounds = (*self.bounds, float("inf"))
        for index, (bound, count) in enumerate(zip(bounds, self.counts, strict=True)):
            running += count
            le = "+Inf" if bound == float("inf") else repr(float(bound))
            exemplar = self.exemplars.get(index)
            buckets.append((le, float(running)) if exemplar is None else (le, float(running), exemplar))
        return buckets


class ModelMetrics:
    """The metrics of one model version: plain numbers updated on the event loop, read at scrape time."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self.model, self.version, self._metrics = model, version, metrics
        self.outcomes: dict[str, int] = {SUCCESS: 0}
        self.items = self.batches = self.inflight = self.queue_items = 0
        self.request_seconds = LoopHistogram(DURATION_BUCKETS)
        self.queue_seconds = LoopHistogram(DURATION_BUCKETS)
        self.input_seconds = LoopHistogram(DURATION_BUCKETS)
        self.infer_seconds = LoopHistogram(DURATION_BUCKETS)
        self.output_seconds = LoopHistogram(DURATION_BUCKETS)
        self.batch_size = LoopHistogram(BATCH_SIZE_BUCKETS)
        self.refusals: dict[str, int] = {}  # read from the batcher at scrape time, as the queue depth is
        self.batch_time_estimates: dict[int, float] = {}

    def observe_request(self, outcome: str, seconds: float, trace_id: str | None = None) -> None:
        """One finished request; `outcome` is "success" or a lower-case gRPC status name. Only successes are
        timed (as Triton does), so fast refusals do not flatter the latency histogram. `trace_id`: the request's
        sampled trace, kept as an exemplar."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if outcome == SUCCESS:
            if trace_id is None:
                self.request_seconds.observe(seconds)
            else:
                self.request_seconds.observe_traced(seconds, trace_id)

    def observe_batch(self, record: BatchRecord) -> None:
        """Queue times of every request; items, executions, size and compute phases of good batches."""
        if any(record.traces):  # a sampled request's span context; all None with tracing off or unsampled
            for seconds, trace in zip(record.queue_seconds, record.traces, strict=False):
                if (trace_id := tracing.trace_id(trace)) is None:
                    self.queue_seconds.observe(seconds)
                else:
                    self.queue_seconds.observe_traced(seconds, trace_id)
        else:
            for seconds in record.queue_seconds:
                self.queue_seconds.observe(seconds)
        if record.failed:
            return
        self.items += record.items
        self.batches += 1
        self.batch_size.observe(record.items)
        if (times := record.compute) is not None:
            self.input_seconds.observe(times.input_s)
            self.infer_seconds.observe(times.infer_s)
            self.output_seconds.observe(times.output_s)

    def track_inflight(self) -> ModelMetrics:
        """`with metrics.track_inflight():` counts a request in flight; no generator, as it runs per request."""
        return self

    def __enter__(self) -> None:
        self.inflight += 1

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
                 ) -> None:  # fmt: skip
        self.inflight -= 1

    def set_queue_items(self, n: int) -> None:
        self.queue_items = n

    def set_loaded(self, provider: str, loaded: bool) -> None:
        self._metrics.set_loaded(self.model, self.version, provider, loaded)


class _ModelFamilies(Collector):
    """Every model version's numbers as metric families, built at scrape time."""

    HISTOGRAMS = (
        ("cnnserve_request_duration_seconds", "End-to-end time of successful requests.", "request_seconds"),
        ("cnnserve_queue_duration_seconds", "Time requests waited for their batch.", "queue_seconds"),
        ("cnnserve_compute_input_duration_seconds", "Time per batch spent preparing model inputs.", "input_seconds"),
        ("cnnserve_compute_infer_duration_seconds", "Time per batch in the model.", "infer_seconds"),
        (
            "cnnserve_compute_output_duration_seconds",
            "Time per batch spent collecting model outputs.",
            "output_seconds",
        ),
        ("cnnserve_batch_size", "Items per executed batch.", "batch_size"),
    )

    def __init__(self, models: dict[tuple[str, str], ModelMetrics]) -> None:
        self._models = models

    def describe(self) -> Iterable[Metric]:
        return self.collect()  # the names alone: no model has numbers before the registry exists

    def collect(self) -> Iterable[Metric]:
        labels = list(MODEL_LABELS)
        requests = CounterMetricFamily(
            "cnnserve_requests",
            "Inference requests by outcome: success, or the failure's lower-case gRPC status name.",
            labels=[*labels, "outcome"],
        )
        items = CounterMetricFamily("cnnserve_inference_items", "Items inferred (batch rows).", labels=labels)
        batches = CounterMetricFamily("cnnserve_batches", "Batches executed successfully.", labels=labels)
        queue_items = GaugeMetricFamily("cnnserve_queue_items", "Items waiting for a batch.", labels=labels)
        inflight = GaugeMetricFamily(
            "cnnserve_inflight_requests", "Requests being handled (decode to reply).", labels=labels
        )
        refused = CounterMetricFamily(
            "cnnserve_refused_requests",
            "Requests refused on arrival, by reason: queue_full, budget (the latency budget would be missed) or "
            "deadline (the request's own deadline would be).",
            labels=[*labels, "reason"],
        )
        estimate = GaugeMetricFamily(
            "cnnserve_batch_time_estimate_seconds",
            "The batcher's running estimate (EMA of measured runs) of one batch's time, by batch size.",
            labels=[*labels, "batch_size"],
        )
        histograms = [HistogramMetricFamily(name, doc, labels=labels) for name, doc, _ in self.HISTOGRAMS]
        for (model, version), m in list(self._models.items()):
            values = [model, version]
            for outcome, count in m.outcomes.items():
                requests.add_metric([*values, outcome], count)
            items.add_metric(values, m.items)
            batches.add_metric(values, m.batches)
            queue_items.add_metric(values, m.queue_items)
            inflight.add_metric(values, m.inflight)
            for reason, count in m.refusals.items():
                refused.add_metric([*values, reason], count)
            for size, seconds in sorted(m.batch_time_estimates.items()):
                estimate.add_metric([*values, str(size)], seconds)
            for family, (_, _, attribute) in zip(histograms, self.HISTOGRAMS, strict=True):
                histogram: LoopHistogram = getattr(m, attribute)
                family.add_metric(values, histogram.cumulative(), histogram.sum)
        return [requests, items, batches, queue_items, inflight, refused, estimate, *histograms]


class GpuCollector(Collector):
    """GPU utilisation and memory, read through NVML at scrape time; a GPU that fails to answer is left out."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        utilization, used, total = families
        try:
            count = self._nvml.nvmlDeviceGetCount()
        except Exception:
            logger.warning("event=nvml_failed call=nvmlDeviceGetCount", exc_info=True)
            return families
        for index in range(count):
            try:
                handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
                rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception:
                logger.warning("event=nvml_failed gpu=%d", index, exc_info=True)
                continue
            utilization.add_metric([str(index)], rates.gpu / 100.0)
            used.add_metric([str(index)], float(memory.used))
            total.add_metric([str(index)], float(memory.total))
        return families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        gpu = ["gpu"]
        return [
            GaugeMetricFamily("cnnserve_gpu_utilization_ratio", "GPU busy share of NVML's last period.", labels=gpu),
            GaugeMetricFamily("cnnserve_gpu_memory_used_bytes", "GPU memory in use.", labels=gpu),
            GaugeMetricFamily("cnnserve_gpu_memory_total_bytes", "GPU memory installed.", labels=gpu),
        ]


def _load_nvml() -> Any | None:
    """pynvml (package nvidia-ml-py) when installed and a driver answers; otherwise None, quietly."""
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
    except Exception:
        return None
    return nvml


class _MemoryFamilies:
    """The byte budget for requests in flight: what is held now, and how many requests it refused."""

    def __init__(self, held: Callable[[], int], refused: Callable[[], int]) -> None:
        self._held, self._refused = held, refused

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "cnnserve_inflight_bytes", "Bytes that requests in progress hold of max_inflight_bytes.", value=self._held()
        )
        yield CounterMetricFamily(
            "cnnserve_inflight_bytes_refusals", "Requests refused because max_inflight_bytes was in use.",
            value=self._refused(),
        )  # fmt: skip
