"""Occlusion explanations of a request (request parameter `explain: "occlusion"`, contracts/features.py): which
model and parameters qualify, and running an item's occluded copies through the model's own batcher.

The copies go in chunks of at most max_batch_size items, one chunk at a time, so they queue and merge like any other
request and a plain request arriving meanwhile runs between two chunks instead of after the whole explanation.
Everything is checked before the first chunk is queued; the copies a request makes are bounded by
max_explain_copies. Refusals are InvalidInput naming the parameter and the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import features, wire
from cnnserve.contracts.scores import softmax
from cnnserve.service.errors import InvalidInput
from cnnserve.service.kinds import heatmap_image
from cnnserve.service.kinds.base import integer_parameter
from cnnserve.service.kinds.occlusion import OcclusionGrid, heatmap, occluded_copies
from cnnserve.service.registry.served import ServedModel
from cnnserve.service.types import ModelSpec
from cnnserve.service.wire.decode import Array, Buffer
from cnnserve.service.wire.encode import OutputTensor
from cnnserve.service.wire.requested import parameter_value, png_files_asked

EXPLANATION_NAMES = (features.EXPLANATION_OUTPUT, features.EXPLAINED_CLASS_OUTPUT)
# The parameters explain reads; taken out before decoding, so the model's own rules (PNG files need an
# image output) do not apply to the explanation's PNG.
OWN_PARAMETERS = (features.EXPLAIN_PARAMETER, features.PATCH_PARAMETER, features.STRIDE_PARAMETER,
                  features.TARGET_CLASS_PARAMETER, wire.OUTPUT_FORMAT_PARAMETER)  # fmt: skip


class ExplainPlan(NamedTuple):
    patch: int
    stride: int
    target_class: int | None
    """None: each item's unoccluded top class."""
    png: bool
    """The explanation as PNG files, BYTES [n] (contracts/wire.py), instead of FP32 [n, H, W]."""
    explanation_only: bool
    """The request named only explanation outputs: the model's own outputs are not computed for it."""
    request: pb.ModelInferRequest
    """The request without explain's parameters and outputs, for the ordinary path to decode."""
    raw_inputs: Sequence[Buffer] | None


def plan_explanation(request: pb.ModelInferRequest, spec: ModelSpec, raw_inputs: Sequence[Buffer] | None
                     ) -> ExplainPlan | None:  # fmt: skip
    """None for a request without the explain parameter; else its plan, checked against the model."""
    parameters = request.parameters
    if not parameters or features.EXPLAIN_PARAMETER not in parameters:  # `in` first: indexing inserts the key
        return None
    method = parameter_value(parameters[features.EXPLAIN_PARAMETER])
    if method not in features.EXPLAIN_METHODS:
        raise InvalidInput(f"parameter 'explain' must be one of {', '.join(map(repr, features.EXPLAIN_METHODS))}; "
                           f"got {method!r}")  # fmt: skip
    classes = _check_classifier(spec)
    patch = integer_parameter(parameters, features.PATCH_PARAMETER, features.DEFAULT_PATCH)
    stride = integer_parameter(parameters, features.STRIDE_PARAMETER, features.DEFAULT_STRIDE)
    if patch < 1 or not 1 <= stride <= patch:
        raise InvalidInput(f"parameters 'patch' and 'patch_stride': patch must be >= 1 and patch_stride in [1, "
                           f"patch] (a longer stride leaves pixels uncovered); got {patch}, {stride}")  # fmt: skip
    target = None
    if features.TARGET_CLASS_PARAMETER in parameters:
        target = integer_parameter(parameters, features.TARGET_CLASS_PARAMETER, 0)
    if target is not None and (target < 0 or 0 < classes <= target):
        raise InvalidInput(f"parameter 'target_class' must be a class index in [0, {classes - 1}], got {target}")
    png = png_files_asked(parameters)
    wanted = [output for output in request.outputs if output.name not in EXPLANATION_NAMES]
    stripped = pb.ModelInferRequest(model_name=request.model_name, model_version=request.model_version,
                                    id=request.id, inputs=request.inputs, outputs=wanted)  # fmt: skip
    for key, value in parameters.items():
        if key not in OWN_PARAMETERS:
            stripped.parameters[key].CopyFrom(value)
    raw = raw_inputs if raw_inputs is not None else list(request.raw_input_contents)
    only = bool(request.outputs) and not wanted
    return ExplainPlan(patch, stride, target, png, only, stripped, raw)


def _check_classifier(spec: ModelSpec) -> int:
    """The number of classes (-1: not fixed); InvalidInput for a model occlusion cannot explain."""
    label = spec.outputs_by_name.get(spec.label_output or "")
    if label is None or len(label.shape) != 2:
        raise InvalidInput(f"parameter 'explain': model {spec.name!r} is not a classifier (explanations need its "
                           "config's label_output to name a [n, classes] output)")  # fmt: skip
    if spec.max_batch_size <= 0:
        raise InvalidInput(f"parameter 'explain': model {spec.name!r} does not batch (max_batch_size 0), and "
                           "explanations run its occluded copies as batches")  # fmt: skip
    image = spec.inputs_by_name.get(spec.image_input.name) if spec.image_input is not None else None
    if image is None and len(spec.inputs) == 1:
        image = spec.inputs[0]
    if len(spec.inputs) != 1 or image is None or len(image.shape) != 4 or image.datatype not in ("FP16", "FP32"):
        raise InvalidInput(f"parameter 'explain': model {spec.name!r} must take one image input, floats "
                           "[n, C, H, W] (or NHWC by its preprocessing layout)")  # fmt: skip
    return label.shape[1]


class Explainer:
    """Explains decoded batches of a model by occlusion, within the server's max_explain_copies."""

    def __init__(self, max_copies: int) -> None:
        self.max_copies = max_copies

    def grid(self, plan: ExplainPlan, spec: ModelSpec, batch: Array) -> OcclusionGrid:
        """The patches' grid for this batch, checked against its image size and the copies limit."""
        height, width = _channels_first(batch, spec).shape[2:]
        if plan.patch > min(height, width):
            raise InvalidInput(f"parameter 'patch' must be at most the image's side, {min(height, width)} "
                               f"({width}x{height} pixels); got {plan.patch}")  # fmt: skip
        grid = OcclusionGrid(height, width, plan.patch, plan.stride)
        copies = grid.count * len(batch)
        if copies > self.max_copies:
            raise InvalidInput(
                f"explaining {len(batch)} item(s) of {width}x{height} pixels with patch {plan.patch} and "
                f"patch_stride {plan.stride} takes {copies} occluded copies, more than max_explain_copies "
                f"{self.max_copies}; use a larger patch_stride or patch, or fewer items per request"
            )
        return grid

    async def explain(self, model: ServedModel, batch: Array, plan: ExplainPlan, grid: OcclusionGrid,
                      deadline: float | None, greys: Sequence[Array] | None = None) -> list[OutputTensor]:  # fmt: skip
        """The two explanation outputs for `batch` (the model's input tensor). `greys`: each item's uint8 pixels
        [h, w], when the request sent files (the PNG blends over them); else they come from the tensor."""
        spec = model.spec
        assert spec.label_output is not None  # plan_explanation checked it
        images = _channels_first(batch, spec)
        logits = await self._scores(model, images, grid, deadline)
        per_item = 1 + grid.count  # the unoccluded item, then its copies
        # float64: small drops in a near-certain class still show
        probabilities = softmax(np.asarray(logits, dtype=np.float64), axis=1).reshape(len(images), per_item, -1)
        classes = np.empty(len(images), dtype=np.int64)
        maps = np.empty((len(images), grid.height, grid.width), dtype=np.float32)
        for index, scores in enumerate(probabilities):
            chosen = plan.target_class if plan.target_class is not None else int(np.argmax(scores[0]))
            if chosen >= scores.shape[1]:
                raise InvalidInput(f"parameter 'target_class' must be a class index in [0, {scores.shape[1] - 1}], "
                                   f"got {chosen}")  # fmt: skip
            classes[index] = chosen
            maps[index] = heatmap(float(scores[0, chosen]), scores[1:, chosen], grid)
        explained = OutputTensor(features.EXPLAINED_CLASS_OUTPUT, "INT64", classes)
        if plan.png:
            pictures = heatmap_image.overlay_pngs(maps, greys if greys is not None else grey_pixels(images, spec))
            return [OutputTensor(features.EXPLANATION_OUTPUT, "BYTES", pictures), explained]
        return [OutputTensor(features.EXPLANATION_OUTPUT, "FP32", maps), explained]

    async def _scores(self, model: ServedModel, images: Array, grid: OcclusionGrid, deadline: float | None
                      ) -> Array:  # fmt: skip
        """The label output's logits for each item and its copies, in that order: [n * (1 + copies), K]."""
        spec = model.spec
        label = frozenset({spec.label_output or ""})
        name = spec.image_input.name if spec.image_input is not None else spec.inputs[0].name
        queue = spec.dynamic_batching.max_queue_size if spec.dynamic_batching is not None else spec.max_batch_size
        chunk = max(1, min(spec.max_batch_size, queue))
        fill = fill_values(spec, images.shape[1], images.dtype)
        per_item = 1 + grid.count
        total = len(images) * per_item
        scores: list[Array] = []
        for start in range(0, total, chunk):
            parts = []
            for item, first, stop in _pieces(start, min(start + chunk, total), per_item):
                if first == 0:  # the unoccluded item leads its copies
                    parts.append(images[item : item + 1])
                    first = 1
                if stop > first:
                    parts.append(occluded_copies(images[item], grid, fill, first - 1, stop - 1))
            inputs = _model_layout(np.concatenate(parts), spec)
            outputs = await model.infer({name: inputs}, outputs=label, deadline=deadline)
            scores.append(np.asarray(outputs[spec.label_output or ""]))
        return np.concatenate(scores)


def _pieces(start: int, stop: int, per_item: int) -> list[tuple[int, int, int]]:
    """The rows start..stop-1 of the all-items sequence as (item, first row, stop row) within each item."""
    pieces = []
    while start < stop:
        item, row = divmod(start, per_item)
        end = min(stop - item * per_item, per_item)
        pieces.append((item, row, end))
        start = item * per_item + end
    return pieces


def _nhwc(spec: ModelSpec) -> bool:
    return spec.image_input is not None and spec.image_input.preprocessing.layout == "NHWC"


def _channels_first(batch: Array, spec: ModelSpec) -> Array:
    return batch.transpose(0, 3, 1, 2) if _nhwc(spec) else batch


def _model_layout(batch: Array, spec: ModelSpec) -> Array:
    return np.ascontiguousarray(batch.transpose(0, 2, 3, 1) if _nhwc(spec) else batch)


def fill_values(spec: ModelSpec, channels: int, dtype: np.dtype[np.floating] | type) -> Array:
    """[C]: the tensor value of a DEFAULT_FILL pixel under the model's preprocessing (0 for [0, 1] pixel models; the
    normalised black of models that take normalised tensors); DEFAULT_FILL itself without a recipe."""
    fill = np.full(channels, features.DEFAULT_FILL, dtype=np.float64)
    if spec.image_input is not None:
        recipe = spec.image_input.preprocessing
        pixel = features.DEFAULT_FILL * 255.0 * recipe.scale
        fill = (pixel - np.broadcast_to(recipe.mean, (channels,))) / np.broadcast_to(recipe.std, (channels,))
    return fill.astype(dtype)


def grey_pixels(images: Array, spec: ModelSpec) -> list[Array]:
    """Each item [C, H, W] as uint8 grey [H, W] to draw the heatmap over: the recipe undone (tensor -> pixels) when
    the model has one, else each item stretched to its own range."""
    values = np.asarray(images, dtype=np.float64)
    if spec.image_input is not None:
        recipe = spec.image_input.preprocessing
        channels = values.shape[1]
        mean = np.broadcast_to(recipe.mean, (channels,))[:, None, None]
        std = np.broadcast_to(recipe.std, (channels,))[:, None, None]
        values = (values * std + mean) / recipe.scale
    else:
        low = values.min(axis=(1, 2, 3), keepdims=True)
        span = np.maximum(values.max(axis=(1, 2, 3), keepdims=True) - low, 1e-12)
        values = (values - low) / span * 255.0
    grey = np.clip(np.round(values.mean(axis=1)), 0, 255).astype(np.uint8)
    return list(grey)
