"""The transport-free half of `segment`: a request for a segmenter's boxes (and mask), its reply as detections, and
the picture of both over the input.

The server does the geometry: an image file of any size is padded to the model's stride, the mask comes back
cropped to the file's own size and the boxes clipped to it (cnnserve.contracts.segmentation), so a detection's box
is in the file's pixels as sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.client import images
from cnnserve.client.core import tensors
from cnnserve.contracts import imaging, segmentation

BOX_OUTPUTS = (segmentation.BOXES, segmentation.SCORES, segmentation.CLASSES)


@dataclass(frozen=True)
class Detection:
    label: str
    class_index: int  # the labels' index: 0 is the background, digit k is k + 1 for the digits segmenter
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the image's pixels; x1 and y1 exclusive

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class Segmentation:
    detections: list[Detection]  # best first; padded rows (score 0) dropped
    mask: np.ndarray | None  # uint8 [h, w]: the class index of each pixel of the image; None when not asked
    labels: tuple[str, ...]  # index -> label, 0 the background


def labels(config: pb.ModelConfig) -> tuple[str, ...]:
    """The labels a segmenter's config publishes (LABELS_PARAMETER, a JSON list); () when it publishes none."""
    if segmentation.LABELS_PARAMETER not in config.parameters:
        return ()
    return tuple(str(label) for label in json.loads(config.parameters[segmentation.LABELS_PARAMETER].string_value))


def request(model: str, image: images.ImageLike, input_name: str, with_mask: bool) -> pb.ModelInferRequest:
    """One image as a file (the server pads it and maps the answer back to its pixels), asking for the boxes and,
    with_mask, the mask; never the logits, which would cost classes x the mask's size on the wire. Reads a file."""
    outputs = (*BOX_OUTPUTS, segmentation.MASK) if with_mask else BOX_OUTPUTS
    return tensors.infer_request(model, {input_name: tensors.image_files([image])}, outputs)


def parse(outputs: Mapping[str, np.ndarray], label_names: Sequence[str], min_score: float = 0.0) -> Segmentation:
    """One item's reply (batch axis of 1) -> its detections above min_score (and above the padded rows' 0)."""
    boxes, scores, classes = (outputs[name][0] for name in BOX_OUTPUTS)
    detections = []
    for box, score, index in zip(boxes, scores, classes, strict=True):
        if score <= 0.0 or score < min_score:
            continue
        label = label_names[int(index)] if int(index) < len(label_names) else str(int(index))
        x0, y0, x1, y1 = (float(v) for v in box)
        detections.append(Detection(label, int(index), float(score), (x0, y0, x1, y1)))
    detections.sort(key=lambda d: -d.score)
    mask = outputs.get(segmentation.MASK)
    return Segmentation(detections, None if mask is None else np.asarray(mask[0]), tuple(label_names))


def picture(image: images.ImageLike, result: Segmentation, alpha: float = 0.5, min_side: int = 256) -> Image.Image:
    """The mask's palette blended over the image, with each detection's box and label drawn: what `cnnserve segment
    --out` writes. Without a mask, the boxes over the image. Small images are enlarged (nearest neighbour, by a
    whole factor) until their shorter side reaches min_side, so that 64-pixel scenes and their labels are legible."""
    base = np.asarray(imaging.as_displayed(images.open_image(image)).convert("RGB"))
    if result.mask is not None:
        base = imaging.overlay(result.mask, base, alpha)
    factor = max(1, -(-min_side // max(1, min(base.shape[:2]))))
    drawn = Image.fromarray(base).resize((base.shape[1] * factor, base.shape[0] * factor), Image.Resampling.NEAREST)
    pen = ImageDraw.Draw(drawn)
    for detection in result.detections:
        colour = tuple(int(v) for v in imaging.PALETTE[detection.class_index])
        x0, y0, x1, y1 = (v * factor for v in detection.box)
        pen.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=2)  # x1, y1 exclusive; rectangle() includes it
        pen.text((x0 + 2, max(y0 - 12, 0)), f"{detection.label} {detection.score:.2f}", fill=colour)
    return drawn
