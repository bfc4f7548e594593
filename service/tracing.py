"""Request traces (OpenTelemetry): the switch the hot path reads, and the spans each layer records.

Off (the default), `tracer` is None and nothing here runs: each door reads that one module attribute per request, and
no span object is made. edge/tracing.py sets it at start and clears it at stop. A request's span is handed down as an
argument, never through OpenTelemetry's ambient context (a context variable), and the batcher carries only each
request's SpanContext, opaque to it, into the BatchRecord its observer turns into the queue and run spans.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cnnserve.service.errors import ServiceError

tracer: trace.Tracer | None = None
"""The server's tracer while tracing is on; None while it is off."""

CARRIER_KEYS = ("traceparent", "tracestate")  # W3C Trace Context: the caller's span, in metadata or headers
_propagator = TraceContextTextMapPropagator()


class Batch(Protocol):
    """What the observer learns of a batch (scheduling/batcher.BatchRecord), as far as traces need it."""

    @property
    def items(self) -> int: ...
    @property
    def requests(self) -> int: ...
    @property
    def started(self) -> float: ...
    @property
    def run_seconds(self) -> float: ...
    @property
    def failed(self) -> bool: ...
    @property
    def queue_seconds(self) -> tuple[float, ...]: ...
    @property
    def traces(self) -> tuple[object, ...]: ...


class Named(Protocol):
    @property
    def name(self) -> str: ...


class InputTensor(Named, Protocol):
    @property
    def datatype(self) -> str: ...
    @property
    def shape(self) -> Sequence[int]: ...


class RequestTensors(Protocol):
    """What a ModelInferRequest says of its tensors, as far as traces record them."""

    @property
    def inputs(self) -> Sequence[InputTensor]: ...
    @property
    def outputs(self) -> Sequence[Named]: ...


@contextmanager
def request(name: str, carrier: Mapping[str, str], attributes: Mapping[str, str]) -> Iterator[Span]:
    """One request's SERVER span, a child of the caller's span when `carrier` holds a valid `traceparent`. An error
    leaving it sets the status to ERROR; a refusal adds an event saying why."""
    assert tracer is not None  # the door checked
    span = tracer.start_span(name, context=_propagator.extract(carrier), kind=SpanKind.SERVER, attributes=attributes)
    try:
        yield span
    except BaseException as exc:
        failed(span, exc)
        raise
    else:
        span.set_attribute("cnnserve.outcome", "success")
    finally:
        span.end()


def failed(span: Span, exc: BaseException) -> None:
    """The outcome as the metrics name it: the status in lower case, `cancelled`, or `internal` for a bug; a REST
    refusal by aiohttp's own exceptions (413, 405) as `http_<status>`."""
    http_status = getattr(exc, "status_code", None)
    if isinstance(exc, ServiceError):
        outcome = exc.status.name.lower()
    elif isinstance(http_status, int):
        outcome = f"http_{http_status}"
    else:
        outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "internal"
    span.set_attribute("cnnserve.outcome", outcome)
    refusal = exc.refusal if isinstance(exc, ServiceError) else None
    if refusal is not None:
        span.add_event("refused", {"reason": refusal, "message": str(exc)})
    span.set_status(StatusCode.ERROR, outcome)


@contextmanager
def step(parent: Span, name: str) -> Iterator[Span]:
    """A child span of one request's, around a step: image decode."""
    assert tracer is not None
    span = tracer.start_span(name, context=trace.set_span_in_context(parent))
    try:
        yield span
    except BaseException as exc:
        span.set_status(StatusCode.ERROR, type(exc).__name__)
        raise
    finally:
        span.end()


def admitted(span: Span, model: str, version: int, provider: str) -> None:
    """The request passed the gate and the byte budget, and found its model."""
    span.add_event("admitted")
    span.set_attributes({
        "cnnserve.model.name": model,
        "cnnserve.model.version": str(version),
        "cnnserve.execution_provider": provider,
    })  # fmt: skip


def tensors(span: Span, request: RequestTensors) -> None:
    """trace_level TENSORS: the request's inputs (name, datatype, shape) and the outputs it asked for."""
    span.set_attribute("cnnserve.request.inputs", [f"{t.name} {t.datatype} {list(t.shape)}" for t in request.inputs])
    span.set_attribute("cnnserve.request.outputs", [t.name for t in request.outputs])


def context_of(span: Span | None) -> SpanContext | None:
    """What the batcher carries for a request: its span's context when the span is sampled, else None."""
    if span is None:
        return None
    context = span.get_span_context()
    return context if context.trace_flags.sampled else None


def trace_id(span: Span | SpanContext | object) -> str | None:
    """A sampled span's (or span context's) trace id in 32 hex digits, as exemplars and trace back ends write it;
    None when not sampled. Takes the opaque objects BatchRecord.traces carries too."""
    context = span.get_span_context() if isinstance(span, Span) else span
    if isinstance(context, SpanContext) and context.trace_flags.sampled:
        return format(context.trace_id, "032x")
    return None


def record_batch(batch: Batch, model: str, version: int, provider: str) -> None:
    """One span for the batch run, linked to every request it served (and the child of the first, so a sampler that
    follows the parent keeps it with that trace); one `queue wait` span under each request, ending as the run starts."""
    if tracer is None:
        return
    contexts = [c for c in batch.traces if isinstance(c, SpanContext)]
    if not contexts:
        return
    offset_ns = time.time_ns() - time.monotonic_ns()  # the batcher times by time.monotonic(); spans by the epoch
    started_ns = int(batch.started * 1e9) + offset_ns
    for context, queued in zip(batch.traces, batch.queue_seconds, strict=False):
        if isinstance(context, SpanContext):
            wait = tracer.start_span("queue wait", context=_under(context), start_time=started_ns - int(queued * 1e9),
                                     attributes={"cnnserve.batch.items": batch.items})  # fmt: skip
            wait.end(end_time=started_ns)
    run = tracer.start_span(
        "batch run",
        context=_under(contexts[0]),
        links=[Link(c) for c in contexts],
        start_time=started_ns,
        attributes={
            "cnnserve.model.name": model,
            "cnnserve.model.version": str(version),
            "cnnserve.batch.items": batch.items,
            "cnnserve.batch.requests": batch.requests,
            "cnnserve.execution_provider": provider,
        },
    )
    if batch.failed:
        run.set_status(StatusCode.ERROR, "batch failed")
    run.end(end_time=started_ns + int(batch.run_seconds * 1e9))


def _under(context: SpanContext) -> Context:
    return trace.set_span_in_context(NonRecordingSpan(context))
