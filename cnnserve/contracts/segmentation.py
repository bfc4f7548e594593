"""The segmentation and localisation contract, defined once for the trainer that exports a segmenter and for the
server and client that serve and read it: output names, their meaning, the box layout, and the config keys that
tell a server which outputs are spatial and which hold boxes.

A segmenter takes image pixels [n, C, H, W] in [0, 1] (H and W any multiple of `stride`, config parameter
`stride`) and answers, per item:
- `boxes` FP32 [n, K, 4]: (x0, y0, x1, y1) in input pixels, x1 and y1 exclusive; rows past the detections are 0;
- `scores` FP32 [n, K]: confidence in [0, 1], best first; 0 marks a padded row;
- `classes` INT64 [n, K]: the class index (the labels file's line; 0 is background, used for padded rows);
- `mask` UINT8 [n, H, W]: the class index of each pixel (the argmax of `logits`);
- `logits` FP32 [n, classes, H, W]: the per-pixel class scores. Optional (config parameter `optional_outputs`): a
  request gets it only when it names it, since it is `classes` times the mask's size in floats.

Index 0 of the labels is the background, so the mask and `classes` index one labels file, which the server
publishes as the ModelConfig parameter LABELS_PARAMETER.
"""

from __future__ import annotations

from cnnserve.contracts.layout import (  # any model may mark outputs optional or publish labels; a segmenter does
    LABELS_PARAMETER,
    OPTIONAL_OUTPUTS_PARAMETER,
    optional_outputs,
    optional_outputs_parameter,
)

__all__ = ["LABELS_PARAMETER", "OPTIONAL_OUTPUTS_PARAMETER", "optional_outputs", "optional_outputs_parameter"]

BOXES = "boxes"
SCORES = "scores"
CLASSES = "classes"
MASK = "mask"
LOGITS = "logits"
OUTPUTS = (BOXES, SCORES, CLASSES, MASK, LOGITS)
"""The order the graph lists them in (and ModelMetadata reports them)."""

BACKGROUND = "background"
"""Label 0 of every segmenter."""
MAX_BOXES = 8
"""K: box rows per item when the exporter is not told otherwise."""
TASK = "segmentation"
"""config parameter `task`."""

# config.json parameters (strings, as the protocol's parameters are) a segmenter publishes
STRIDE_PARAMETER = "stride"
"""The total stride: input height and width must be multiples of it (the server pads files up to it)."""
MAX_BOXES_PARAMETER = "max_boxes"
SCORE_THRESHOLD_PARAMETER = "score_threshold"
"""Detections below it are padded rows (score 0) in the graph itself."""
OVERLAY_PARAMETER = "overlay"
"""Request parameter: the mask PNG blended over the request's own image (true, or the palette's weight in (0, 1])."""
# config.json `postprocessing` keys of a segmenter (the server reads them to map outputs back to a file's pixels)
POSTPROCESSING_MASK = "mask"
"""The output holding a class index per pixel [n, H, W]: may be sent as a palette PNG."""
POSTPROCESSING_BOXES = "boxes"
"""The output holding boxes [n, K, 4] in input pixels: clipped to the original image when the server pads it."""
POSTPROCESSING_SPATIAL = "spatial"
"""Outputs whose last two axes are the input's H and W: cropped to the original image when the server pads it."""


def postprocessing() -> dict[str, object]:
    """The `postprocessing` block an exported segmenter publishes."""
    return {POSTPROCESSING_MASK: MASK, POSTPROCESSING_BOXES: BOXES, POSTPROCESSING_SPATIAL: [MASK, LOGITS]}
