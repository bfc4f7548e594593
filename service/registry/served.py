"""One loaded, warm model version: its batcher in front of its runtime, and the one observer of its batches.

It is also where Triton's reshape happens (TensorSpec.model_shape): request tensors arrive in the shapes clients
send and leave in the shapes they get; the batcher and the runtime see the graph's.

A request goes in once (`infer` -> the batcher -> the runtime) and its answer comes back the same way; the batcher
reports each batch, with the phases its run returned, to `_observe_batch`, and the door that timed the request
reports its outcome to `observe_request`: each feeds both the version's statistics (ModelStatistics) and its
observer (Prometheus metrics), so the two count the same requests by the same clock. With tracing on, each batch
also becomes its trace spans there (service/tracing.py: one run span, a queue wait span under each request).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

from cnnserve.service import tracing
from cnnserve.service.errors import InferenceFailed
from cnnserve.service.execution.runtime import Runtime, Tensors, check_text
from cnnserve.service.scheduling.batcher import Batcher, BatchRecord
from cnnserve.service.scheduling.placement import Placement
from cnnserve.service.types import DynamicBatching, ModelSpec, TensorSpec, reshaped


class VersionObserver(Protocol):
    """What a loaded version reports to (Prometheus metrics implement it; tests may pass their own)."""

    def observe_batch(self, record: BatchRecord) -> None: ...
    def observe_request(self, outcome: str, seconds: float, trace_id: str | None = None) -> None: ...
    def track_inflight(self) -> AbstractContextManager[None]: ...


class NoObserver:
    def observe_batch(self, record: BatchRecord) -> None:
        pass

    def observe_request(self, outcome: str, seconds: float, trace_id: str | None = None) -> None:
        pass

    def track_inflight(self) -> AbstractContextManager[None]:
        return nullcontext()


@dataclass
class Duration:
    count: int = 0
    ns: int = 0


@dataclass
class BatchStats:
    """Per batch size: executions and their compute phases (Triton's InferBatchStatistics)."""

    count: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0


@dataclass
class ModelStats:
    """Triton's ModelStatistics for one version. success/fail/queue/compute_* count requests; as in Triton, each
    request of a batch is charged the whole batch's compute time."""

    success: Duration = field(default_factory=Duration)  # ns: the request's handling, as its door timed it
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0  # items (batch rows) of successful batches
    execution_count: int = 0  # successful batches
    last_inference_ms: int = 0  # ms since the epoch of the last success
    batch_stats: dict[int, BatchStats] = field(default_factory=dict)  # batch size (items) -> stats

    def record_request(self, seconds: float, *, ok: bool) -> None:
        duration = self.success if ok else self.fail
        duration.count += 1
        duration.ns += int(seconds * 1e9)
        if ok:
            self.last_inference_ms = int(time.time() * 1000)

    def record_batch(self, record: BatchRecord) -> None:
        self.queue.count += record.requests
        self.queue.ns += int(sum(record.queue_seconds) * 1e9)
        if record.failed:
            return
        self.inference_count += record.items
        self.execution_count += 1
        if (times := record.compute) is None:
            return
        phases = int(times.input_s * 1e9), int(times.infer_s * 1e9), int(times.output_s * 1e9)
        for duration, ns in zip((self.compute_input, self.compute_infer, self.compute_output), phases, strict=True):
            duration.count += record.requests
            duration.ns += ns * record.requests
        batch = self.batch_stats.setdefault(record.items, BatchStats())
        batch.count += 1
        batch.compute_input_ns += phases[0]
        batch.compute_infer_ns += phases[1]
        batch.compute_output_ns += phases[2]


class ServedModel:
    """One loaded, warm version. The protocol layer reports each request's outcome to `observe_request`, and counts
    requests in flight with `observer.track_inflight()`."""

    def __init__(self, spec: ModelSpec, version: int, runtime: Runtime, observer: VersionObserver | None = None,
                 kind: object = None) -> None:  # fmt: skip
        self.name, self.version, self.spec = spec.name, version, spec
        self.kind = kind
        """What the layer above made of the model's kind (kinds/base.Kind); the registry only keeps it."""
        self.provider = runtime.provider
        self.stats = ModelStats()
        self.observer: VersionObserver = observer or NoObserver()
        self._runtime = runtime
        self._failed_at_model = 0  # infer calls that raised, whose requests' outcomes are not observed yet
        self._to_graph = _reshapes(spec.inputs, to_graph=True)
        self._to_client = _reshapes(spec.outputs, to_graph=False)
        self._batched = spec.max_batch_size > 0
        self._text_inputs = tuple(t.name for t in spec.inputs if t.datatype == "BYTES")
        merging = spec.max_batch_size > 0 and spec.dynamic_batching is not None
        batching = spec.dynamic_batching or DynamicBatching(max_queue_delay_us=0)
        placement = Placement(runtime.run_on_loop, runtime.loop_ready, inline_run_max_us=spec.session.inline_run_max_us)
        for size, seconds in runtime.warm_up_times.items():  # first estimates, until batches run
            placement.times.observe(size, seconds)
        self._batcher = Batcher(
            runtime.run_on_thread,
            max_batch_size=spec.max_batch_size,
            merge=merging,
            max_queue_delay_us=batching.max_queue_delay_us,
            preferred_batch_sizes=batching.preferred_batch_sizes if merging else (),
            max_queue_size=batching.max_queue_size,
            concurrency=runtime.instance_count,
            observer=self._observe_batch,
            name=spec.name,
            wait_when_idle=batching.wait_when_idle,
            placement=placement,
            latency_budget_s=batching.latency_budget_ms / 1000 if merging and batching.latency_budget_ms else None,
        )

    @property
    def pruned_nodes(self) -> dict[frozenset[str], tuple[int, int]]:
        """Per output set pruned so far: (nodes kept, nodes in the graph)."""
        return self._runtime.pruned_nodes

    @property
    def queued_items(self) -> int:
        return self._batcher.queued_items

    @property
    def refusals(self) -> dict[str, int]:
        """Requests refused on arrival, by reason (batcher.REFUSAL_REASONS)."""
        return self._batcher.refusals

    @property
    def batch_time_estimates(self) -> dict[int, float]:
        """The running estimate of seconds per batch, by batch size (items), that admission and the inline gate read."""
        return self._batcher.placement.times.snapshot()

    @property
    def in_flight_requests(self) -> int:
        return self._batcher.in_flight_requests

    async def infer(self, inputs: Tensors, *, outputs: frozenset[str] | None = None, deadline: float | None = None,
                    trace: object = None) -> Tensors:  # fmt: skip
        """The outputs one request asks for (None: all), computed only those where the graph allows.
        `deadline` is a time.monotonic() value; `trace` the request's span context (tracing.context_of), or None.
        The request's outcome is for its caller to report (observe_request)."""
        for name in self._text_inputs:  # refused here, before the queue, rather than splitting a batch it joined
            text = inputs.get(name)
            if text is not None:
                check_text(name, text)
        try:
            if self._to_graph:
                inputs = self._reshape("input", inputs, self._to_graph)
            answer = await self._batcher.submit(inputs, outputs=outputs, deadline=deadline, trace=trace)
            return self._reshape("output", answer, self._to_client) if self._to_client else answer
        except (Exception, asyncio.CancelledError):  # a request cancelled while queued failed too (as in Triton)
            self._failed_at_model += 1
            raise

    def _reshape(self, kind: str, tensors: Tensors, shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]
                 ) -> Tensors:  # fmt: skip
        """Views of `tensors` in the other side's shapes (no copy: a reshape of a contiguous array)."""
        out = dict(tensors)
        for name, (source, target) in shapes.items():
            array = tensors.get(name)
            if array is None:
                continue
            try:
                out[name] = array.reshape(reshaped(array.shape, source, target, self._batched))
            except ValueError:  # a graph output the config fixed, which came back another size
                raise InferenceFailed(
                    f"model {self.name!r}: {kind} {name!r} came as {list(array.shape)}, which the config's reshape "
                    f"{list(source)} -> {list(target)} does not take"
                ) from None
        return out

    def observe_request(self, outcome: str, seconds: float, trace_id: str | None = None) -> None:
        """One request's outcome ("success", or its status name in lower case) and how long its door took over it:
        the one per-request record, for ModelStatistics and the observer alike; `trace_id` (32 hex digits) when the
        request's span was sampled, for the observer's exemplars.

        ModelStatistics counts what reached the model, as Triton's does: a success, or a failure that came out of
        `infer` (refused by the queue or the budget, late, cancelled, or failed in its batch). A request refused
        before it, by validation, counts in the observer's outcomes only. Failures are matched to requests by count,
        not identity: two failing at once may swap durations, never counts."""
        if outcome == "success":
            self.stats.record_request(seconds, ok=True)
        elif self._failed_at_model:
            self._failed_at_model -= 1
            self.stats.record_request(seconds, ok=False)
        self.observer.observe_request(outcome, seconds, trace_id)

    async def close(self, *, drain: bool = True) -> None:
        """Refuse new requests, finish (drain) or fail the queued ones, then release the sessions."""
        await self._batcher.close(drain=drain)
        await asyncio.to_thread(self._runtime.close)

    def _observe_batch(self, record: BatchRecord) -> None:
        self.stats.record_batch(record)
        self.observer.observe_batch(record)
        if tracing.tracer is not None:
            tracing.record_batch(record, self.name, self.version, self.provider)


def _reshapes(tensors: tuple[TensorSpec, ...], *, to_graph: bool) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """(from, to) shapes of the tensors whose graph shape differs from what clients see."""
    return {
        t.name: (t.shape, t.model_shape) if to_graph else (t.model_shape, t.shape)
        for t in tensors
        if t.model_shape is not None
    }
