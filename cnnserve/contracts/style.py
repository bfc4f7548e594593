"""The style-transfer contract, defined once for the trainer that exports a style model and for the server, client
and page that serve and call it: names, the config blocks that make it an image-to-image model, and the style image
kept beside the model.

A style model takes RGB pixels `images` FP32 [n, 3, H, W] in [0, 1] (H and W any multiple of `stride`, config
parameter `stride`, the segmenter's STRIDE_PARAMETER) and answers `stylized` FP32 [n, 3, H, W] in [0, 1]. The
server pads a file of any size bottom / right up to the stride, crops the answer back to the file's size
(postprocessing `spatial`) and sends it as a PNG file on request (postprocessing `output`, request parameter
output_format "png"; REST: Accept: image/png).
"""

from __future__ import annotations

from typing import Any

from cnnserve.contracts.layout import TASK_PARAMETER
from cnnserve.contracts.segmentation import STRIDE_PARAMETER

INPUT = "images"
OUTPUT = "stylized"
TASK = "style_transfer"
"""config parameter `task`."""
STYLE_IMAGE_FILE = "style.png"
"""In the version folder: a copy of the style image the model was trained on."""
STYLE_IMAGE_PARAMETER = "style_image"
"""config parameter naming that file (relative to the version folder)."""


def preprocessing(stride: int, max_pixels: int | None = None) -> dict[str, Any]:
    """The `preprocessing` block: files decoded to RGB [0, 1] pixels at their own size, padded up to `stride`;
    `max_pixels` (width x height): the largest file the server takes for the model (absent: its own limit alone)."""
    block = {"input": INPUT, "input_format": "image", "channels": 3, "layout": "NCHW", "scale": 1.0 / 255.0,
             "resize": "pad", "stride": stride}  # fmt: skip
    return block if max_pixels is None else {**block, "max_pixels": max_pixels}


def postprocessing() -> dict[str, Any]:
    """The `postprocessing` block: `stylized` is pixels in [0, 1] (PNG on request), cropped back after padding."""
    return {"output": OUTPUT, "range": [0.0, 1.0], "spatial": [OUTPUT]}


def parameters(stride: int) -> dict[str, str]:
    return {TASK_PARAMETER: TASK, STRIDE_PARAMETER: str(stride), STYLE_IMAGE_PARAMETER: STYLE_IMAGE_FILE}
