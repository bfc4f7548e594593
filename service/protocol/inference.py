"""The one request path both doors call: admit -> look up -> decode and validate -> batcher -> select outputs.

gRPC and REST differ only in how a request arrives (a ModelInferRequest; REST builds the same message from its JSON
header and hands its binary tensors over as views) and how the answer is written; everything between is here, so
limits, statistics, metrics and batching are the same for both, and their requests can share a batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.service.errors import ServiceError
from cnnserve.service.execution import segmentation
from cnnserve.service.execution.images import DecodedImages, ImageWorkers
from cnnserve.service.protocol.decode import Array, Buffer, DecodedRequest, RequestLimits, decode_inputs
from cnnserve.service.protocol.encode import OutputTensor, select_outputs
from cnnserve.service.protocol.explain import Explainer, ExplainPlan, plan_explanation
from cnnserve.service.protocol.truncation import truncate_latents
from cnnserve.service.registry.registry import ModelManager
from cnnserve.service.registry.served import ServedModel
from cnnserve.service.scheduling.gate import RequestGate
from cnnserve.service.settings import Settings
from cnnserve.service.types import ModelSpec

# A cancellation this close to the deadline is the deadline: the one we hold is late by the moment between reading
# time_remaining() and time.monotonic(), milliseconds on a busy machine.
DEADLINE_SLACK_S = 0.005


class InferResult(NamedTuple):
    model_name: str
    model_version: str
    tensors: list[OutputTensor]
    spec: ModelSpec


def cancelled_outcome(deadline: float | None) -> str:
    """gRPC cancels the handler itself when the client's deadline passes, often just before the batcher's own timer
    answers DEADLINE_EXCEEDED: that is the deadline expiring, not the client going away."""
    if deadline is not None and time.monotonic() >= deadline - DEADLINE_SLACK_S:
        return "deadline_exceeded"
    return "cancelled"


class InferencePath:
    def __init__(self, settings: Settings, models: ModelManager, gate: RequestGate, images: ImageWorkers) -> None:
        self._models = models
        self._gate = gate
        self._images = images
        self.limits = RequestLimits(settings.max_elements_per_request, settings.max_request_tensor_bytes)
        self._explainer = Explainer(settings.max_explain_copies)

    def spec(self, name: str, version: str) -> ModelSpec:
        """The spec of the version a request would reach (REST reads it to parse a body before infer)."""
        return self._models.get(name, version).spec

    async def infer(
        self, request: pb.ModelInferRequest, deadline: float | None, raw_inputs: Sequence[Buffer] | None = None
    ) -> InferResult:
        """`deadline` is a time.monotonic() instant; `raw_inputs` replaces request.raw_input_contents (decode.py)."""
        started = time.monotonic()
        with self._gate.admit():
            model = self._models.get(request.model_name, request.model_version)
            observer = model.observer
            outcome = "success"
            try:
                with observer.track_inflight():
                    spec = model.spec
                    explain = plan_explanation(request, spec, raw_inputs)  # None: a plain request
                    if explain is not None:
                        request, raw_inputs = explain.request, explain.raw_inputs
                    decoded = decode_inputs(request, spec, self.limits, raw_inputs)
                    inputs, images = truncate_latents(request.parameters, spec, decoded.inputs), None
                    if decoded.encoded_images:
                        keep = decoded.overlay > 0 or (explain is not None and explain.png)
                        inputs, images = await self._decode_images(decoded, spec, keep)
                    explanation: list[OutputTensor] = []
                    if explain is not None:
                        explanation = await self._explain(model, explain, inputs, images, deadline)
                        if explain.explanation_only:
                            return InferResult(spec.name, str(model.version), explanation, spec)
                    outputs = await model.infer(inputs, outputs=decoded.compute, deadline=deadline)
                    if images is not None and images.size is not None and spec.spatial is not None:
                        outputs = segmentation.crop(outputs, spec.spatial, images.size)  # padded files: their size
                    if spec.png_output is not None:
                        outputs = await self._encode_images(outputs, decoded, spec, images)
                    tensors = select_outputs(spec, outputs, decoded.requested_outputs, spec.labels)
                    tensors += explanation
                    return InferResult(model.spec.name, str(model.version), tensors, model.spec)
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
                model.observe_request(outcome, time.monotonic() - started)

    async def _decode_images(self, decoded: DecodedRequest, spec: ModelSpec, keep_pixels: bool
                             ) -> tuple[dict[str, Array], DecodedImages]:  # fmt: skip
        target = spec.image_input
        assert target is not None  # decode takes files only for a model's image input
        images = await self._images.decode(decoded.encoded_images[target.name], target, keep_pixels=keep_pixels)
        batch = images.batch
        return {**decoded.inputs, target.name: batch if spec.max_batch_size > 0 else batch[0]}, images

    async def _explain(self, model: ServedModel, plan: ExplainPlan, inputs: dict[str, Array],
                       images: DecodedImages | None, deadline: float | None) -> list[OutputTensor]:  # fmt: skip
        spec = model.spec
        target = spec.image_input.name if spec.image_input is not None else spec.inputs[0].name
        grid = self._explainer.grid(plan, spec, inputs[target])  # its refusals come before any copy is queued
        greys = None
        if images is not None and images.pixels and images.size is None:  # files, unpadded: blend over them
            greys = [np.round(pixels.mean(axis=-1)).astype(np.uint8) for pixels in images.pixels]
        return await self._explainer.explain(model, inputs[target], plan, grid, deadline, greys)

    async def _encode_images(self, outputs: dict[str, Array], decoded: DecodedRequest, spec: ModelSpec,
                             images: DecodedImages | None) -> dict[str, Array]:  # fmt: skip
        """The image output or the mask as PNG files when the request asked for them (RequestedOutput.png); the
        mask blended over the request's own images when it asked for an overlay."""
        name = spec.png_output
        asked = any(want.png for want in decoded.requested_outputs)
        if not asked or name is None or name not in outputs:  # a missing output is named by select_outputs
            return outputs
        if spec.image_output is not None:
            return {**outputs, name: await self._images.encode_png(outputs[name], spec.image_output)}
        pixels = images.pixels if images is not None else []
        return {**outputs, name: await self._images.encode_mask(outputs[name], pixels, decoded.overlay)}
