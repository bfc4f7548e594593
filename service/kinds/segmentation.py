"""The segmentation kind (contracts/segmentation.py): scenes of any size padded to the stride, the answers cropped
back (padding.py), the mask as palette PNG files, blended over the request's own image with the `overlay` parameter,
and detections (boxes, scores, classes) as the REST door's answer to a file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import imaging, segmentation, wire
from cnnserve.service.errors import InferenceFailed, InvalidInput
from cnnserve.service.execution.images import DecodedImages, ImageWorkers
from cnnserve.service.kinds import padding
from cnnserve.service.kinds.base import INFER, PNG_PARAMETERS, FileAnswer, FileRequest, Kind, Plan, first_png
from cnnserve.service.settings import Settings
from cnnserve.service.types import ModelSpec
from cnnserve.service.wire.decode import Array, Buffer, DecodedRequest
from cnnserve.service.wire.encode import OutputTensor
from cnnserve.service.wire.requested import parameter_value

OVERLAY = segmentation.OVERLAY_PARAMETER


class SegmentationKind(Kind):
    name = "segmentation"
    tasks = (segmentation.TASK,)
    precedence = 30
    own_parameters: ClassVar[frozenset[str]] = frozenset({OVERLAY})

    def __init__(self, spec: ModelSpec, config_path: Path, settings: Settings) -> None:
        super().__init__(spec, config_path, settings)
        self.spatial = padding.from_spec(spec, config_path)
        self.mask = self.spatial.mask if self.spatial is not None else None
        if self.png_output is None:  # an image output (the base's) first, else the mask
            self.png_output = self.mask

    @classmethod
    def describes(cls, spec: ModelSpec) -> bool:
        """Outputs in input pixels, among them a mask or boxes."""
        post = spec.postprocessing
        return segmentation.POSTPROCESSING_MASK in post or segmentation.POSTPROCESSING_BOXES in post

    def plan(self, request: pb.ModelInferRequest, raw_inputs: Sequence[Buffer] | None) -> Plan:
        plan = super().plan(request, raw_inputs)
        parameters = request.parameters
        if parameters and OVERLAY in parameters:  # `in` first: indexing a protobuf map inserts the key
            return plan._replace(own=_alpha(parameters[OVERLAY]))
        return plan

    def prepare(self, plan: Plan, decoded: DecodedRequest) -> Plan:
        """An overlay needs the mask as PNG files and files to blend over, whose pixels are then kept."""
        alpha = plan.own or 0.0
        if not alpha:
            return plan
        if self.mask is None:
            raise InvalidInput(f"parameter {OVERLAY!r}: model {self.spec.name!r} has no mask output "
                               "(postprocessing.mask)")  # fmt: skip
        if not any(want.name == self.mask and want.png for want in decoded.requested_outputs):
            raise InvalidInput(f"parameter {OVERLAY!r} blends the mask PNG: ask for output {self.mask!r} as PNG "
                               f"files (parameter {wire.OUTPUT_FORMAT_PARAMETER} \"{wire.PNG}\")")  # fmt: skip
        if not decoded.encoded_images:
            raise InvalidInput(f"parameter {OVERLAY!r}: nothing to blend over; send the image input as PNG/JPEG "
                               "files (BYTES)")  # fmt: skip
        return plan._replace(keep_pixels=True)

    async def finish(self, plan: Plan, outputs: dict[str, Array], decoded: DecodedRequest,
                     images: DecodedImages | None, workers: ImageWorkers) -> dict[str, Array]:  # fmt: skip
        if images is not None and images.size is not None and self.spatial is not None:
            outputs = padding.crop(outputs, self.spatial, images.size)  # padded files: back to their own size
        mask = self.mask
        if mask is None or mask != self.png_output or mask not in outputs:
            return await super().finish(plan, outputs, decoded, images, workers)
        if not any(want.name == mask and want.png for want in decoded.requested_outputs):
            return outputs
        pixels = images.pixels if images is not None else []
        return {**outputs, mask: await workers.run(encode_mask_png, outputs[mask], pixels, plan.own or 0.0)}

    # -- the REST door: a scene's detections, or its mask as a PNG (over the scene with ?overlay=) ---------------------

    def file_request(self, operation: str, query: Mapping[str, str], png: bool) -> FileRequest:
        if operation != INFER:
            return super().file_request(operation, query, png)
        if png:
            if self.mask is None:
                raise InvalidInput(f"model {self.spec.name!r} has no mask output (postprocessing.mask) to send as PNG")
            parameters = dict(PNG_PARAMETERS)
            if OVERLAY in query:
                parameters[OVERLAY] = _overlay_query(query[OVERLAY])
            return FileRequest((self.mask,), parameters)
        names = self.detection_outputs()
        if names is None:
            raise InvalidInput(
                f"model {self.spec.name!r} has no boxes, scores and classes outputs to answer detections; "
                "ask for its mask with Accept: image/png, or send a JSON tensor request"
            )
        return FileRequest(names, {})

    def file_answer(self, operation: str, tensors: Sequence[OutputTensor], query: Mapping[str, str], png: bool
                    ) -> FileAnswer:  # fmt: skip
        if png:
            return first_png(tensors, self.mask)
        boxes, scores, classes = (np.asarray(t.array)[0] for t in tensors)
        return {"detections": detections(boxes, scores, classes, self.spec.labels)}

    def detection_outputs(self) -> tuple[str, str, str] | None:
        """(boxes, scores, classes) by the contract's names; None when the graph lacks one of them."""
        boxes = self.spatial.boxes if self.spatial is not None else None
        names = (boxes, segmentation.SCORES, segmentation.CLASSES)
        if boxes is None or not all(name in self.spec.outputs_by_name for name in names):
            return None
        return boxes, segmentation.SCORES, segmentation.CLASSES


def _alpha(parameter: Any) -> float:
    """true: the default weight (imaging.OVERLAY_ALPHA); a number in (0, 1]: that weight; false: none."""
    kind = parameter.WhichOneof("parameter_choice")
    value = parameter_value(parameter)
    if kind == "bool_param":
        return imaging.OVERLAY_ALPHA if value else 0.0
    if kind in ("double_param", "int64_param", "uint64_param") and 0 < float(value) <= 1:  # type: ignore[arg-type]
        return float(value)  # type: ignore[arg-type]
    raise InvalidInput(
        f"parameter {OVERLAY!r} must be true, false or the palette's weight, a number in (0, 1]; got {value!r}"
    )


def _overlay_query(text: str) -> float:
    try:
        alpha = float(text)
    except ValueError:
        alpha = -1.0
    if not 0 < alpha <= 1:
        raise InvalidInput(f"query parameter {OVERLAY} must be the palette's weight, a number in (0, 1]; got {text!r}")
    return alpha


def encode_mask_png(masks: npt.NDArray[Any], pixels: Sequence[npt.NDArray[np.uint8]], alpha: float
                    ) -> npt.NDArray[Any]:  # fmt: skip
    """Masks [n, h, w] -> object array [n] of palette PNG files; with `pixels` (one image per item) and alpha > 0,
    RGB PNG files of the palette blended over them (imaging.overlay)."""
    files = np.empty(len(masks), dtype=object)
    for index, mask in enumerate(np.asarray(masks)):
        try:
            if alpha and pixels:
                files[index] = imaging.png(imaging.overlay(mask, pixels[index], alpha))
            else:
                files[index] = imaging.palette_png(mask)
        except ValueError as err:  # the model's mask is not the image's size, or holds indices past 255
            raise InferenceFailed(f"mask item {index} cannot be sent as PNG: {err}") from None
    return files


def detections(boxes: Array, scores: Array, classes: Array, labels: Sequence[str]) -> list[dict[str, Any]]:
    """One segmented item's detections, best first; padded rows (score 0) left out."""
    found: list[tuple[float, dict[str, Any]]] = []
    for box, score, index in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(scores).reshape(-1),
                                 np.asarray(classes).reshape(-1), strict=True):  # fmt: skip
        if score <= 0:
            continue
        i = int(index)
        label = labels[i] if 0 <= i < len(labels) else str(i)
        found.append((-float(score), {"label": label, "class": i, "score": float(score),
                                      "box": [round(float(v), 2) for v in box]}))  # fmt: skip
    return [detection for _, detection in sorted(found, key=lambda pair: pair[0])]
