"""The one request path both doors call: admit -> look up -> decode and validate -> batcher -> select outputs.

gRPC and REST differ only in how a request arrives (a ModelInferRequest; REST builds the same message from its JSON
header and hands its binary tensors over as views) and how the answer is written; everything between is here, so
limits, statistics, metrics and batching are the same for both, and their requests can share a batch.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from typing import NamedTuple

from opentelemetry.trace import Span

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.service import tracing
from cnnserve.service.errors import ServiceError
from cnnserve.service.execution.images import DecodedImages, ImageWorkers
from cnnserve.service.kinds import select
from cnnserve.service.kinds.base import Kind
from cnnserve.service.protocol.trace_settings import TraceSettings
from cnnserve.service.registry.registry import KindFactory, ModelManager
from cnnserve.service.registry.served import ServedModel
from cnnserve.service.scheduling.gate import RequestGate
from cnnserve.service.scheduling.memory import MemoryBudget, Reservation
from cnnserve.service.settings import Settings
from cnnserve.service.types import ModelSpec
from cnnserve.service.wire.decode import Array, Buffer, DecodedRequest, RequestLimits, decode_inputs
from cnnserve.service.wire.encode import OutputTensor, into_shared_memory, select_outputs
from cnnserve.service.wire.shared_memory import SharedMemoryRegions

# A cancellation this close to the deadline is the deadline: the one we hold is late by the moment between reading
# time_remaining() and time.monotonic(), milliseconds on a busy machine.
DEADLINE_SLACK_S = 0.005


class InferResult(NamedTuple):
    model_name: str
    model_version: str
    tensors: list[OutputTensor]
    png: str | None
    """The output whose PNG file the REST door sends as its body when the client accepts image/png."""


def kind_of(model: ServedModel) -> Kind:
    """The kind the registry built for this version (server.py hands it kinds.select.build)."""
    kind = model.kind
    assert isinstance(kind, Kind), f"model {model.name!r} was loaded without a kind"
    return kind


def cancelled_outcome(deadline: float | None) -> str:
    """gRPC cancels the handler itself when the client's deadline passes, often just before the batcher's own timer
    answers DEADLINE_EXCEEDED: that is the deadline expiring, not the client going away."""
    if deadline is not None and time.monotonic() >= deadline - DEADLINE_SLACK_S:
        return "deadline_exceeded"
    return "cancelled"


def kind_factory(settings: Settings) -> KindFactory:
    """What the registry calls to build each loaded version's kind (kinds/select.py chooses it from the config)."""
    return functools.partial(select.build, settings=settings)


class InferencePath:
    def __init__(self, settings: Settings, models: ModelManager, gate: RequestGate, images: ImageWorkers,
                 memory: MemoryBudget, shared_memory: SharedMemoryRegions) -> None:  # fmt: skip
        self._models = models
        self._gate = gate
        self._images = images
        self.memory = memory
        self.shared_memory = shared_memory
        self.limits = RequestLimits(settings.max_elements_per_request, settings.max_request_tensor_bytes)
        self.traces = TraceSettings(settings.trace)
        """Which requests make a trace (the trace extension); the doors ask it before opening a request's span."""

    async def infer(
        self,
        request: pb.ModelInferRequest,
        deadline: float | None,
        raw_inputs: Sequence[Buffer] | None = None,
        held: Reservation | None = None,
        span: Span | None = None,
    ) -> InferResult:
        """`deadline` is a time.monotonic() instant; `raw_inputs` replaces request.raw_input_contents (decode.py);
        `held` is the request's share of the byte budget when its door took one already (REST: the body), else the
        path takes one; `span` is the request's trace span when tracing is on (service/tracing.py), which the door
        opened and ends. The model's kind is asked at each step (kinds/base.py draws them); the path names no kind."""
        started = time.monotonic()
        with self._gate.admit(), held or self.memory.reservation() as reservation:
            model = self._models.get(request.model_name, request.model_version)
            if span is not None:
                tracing.admitted(span, model.name, model.version, model.provider)
                if self.traces.level(model.name) == "TENSORS":
                    tracing.tensors(span, request)
            observer = model.observer
            outcome = "success"
            shared = None
            try:
                with observer.track_inflight():
                    spec = model.spec
                    kind: Kind = model.kind  # type: ignore[assignment]  # always one (kind_factory); no checking call per request
                    shared = self.shared_memory.use(request)  # regions named, ranges checked, held until answered
                    plan = kind.plan(request, raw_inputs)
                    decoded = decode_inputs(plan.request, spec, self.limits, plan.raw_inputs,
                                            png_output=kind.png_output, file_elements=kind.file_elements,
                                            reserve=reservation.hold_at_least, shared=shared)  # fmt: skip
                    if span is not None:
                        span.add_event("decoded")
                    if kind.prepares:
                        plan = kind.prepare(plan, decoded)
                    inputs, images = decoded.inputs, None
                    if decoded.encoded_images:
                        inputs, images = await self._decode_images(decoded, spec, plan.keep_pixels, span)
                    extra = await kind.extra_outputs(plan, model, inputs, images, deadline) if plan.extra else []
                    tensors = []
                    if plan.model_outputs:
                        trace = None
                        if span is not None:
                            trace = tracing.context_of(span)
                            span.set_attribute("cnnserve.request.items", _items(inputs, spec))
                        outputs = await model.infer(inputs, outputs=decoded.compute, deadline=deadline, trace=trace)
                        if kind.finishes:
                            outputs = await kind.finish(plan, outputs, decoded, images, self._images)
                        tensors = select_outputs(spec, outputs, decoded.requested_outputs, spec.labels)
                    if extra:
                        tensors += extra
                    if shared is not None and shared.outputs:
                        tensors = into_shared_memory(tensors, shared)
                    return InferResult(spec.name, str(model.version), tensors, plan.png_reply)
            except ServiceError as err:
                outcome = err.status.name.lower()
                raise
            except asyncio.CancelledError:
                outcome = cancelled_outcome(deadline)
                raise
            except Exception:
                outcome = "internal"
                raise
            finally:
                if shared is not None:
                    shared.release()
                seconds = time.monotonic() - started
                model.observe_request(outcome, seconds, None if span is None else tracing.trace_id(span))

    async def _decode_images(self, decoded: DecodedRequest, spec: ModelSpec, keep_pixels: bool, span: Span | None
                             ) -> tuple[dict[str, Array], DecodedImages]:  # fmt: skip
        target = spec.image_input
        assert target is not None  # decode takes files only for a model's image input
        files = decoded.encoded_images[target.name]
        if span is None:
            images = await self._images.decode(files, target, spec.name, keep_pixels)
        else:
            with tracing.step(span, "image decode") as step:
                step.set_attribute("cnnserve.images", len(files))
                images = await self._images.decode(files, target, spec.name, keep_pixels)
        batch = images.batch
        return {**decoded.inputs, target.name: batch if spec.max_batch_size > 0 else batch[0]}, images


def _items(inputs: dict[str, Array], spec: ModelSpec) -> int:
    """The request's items: its leading dimension where the model batches, else 1."""
    if spec.max_batch_size == 0 or not inputs:
        return 1
    first = next(iter(inputs.values()))
    return int(first.shape[0]) if first.ndim else 1
