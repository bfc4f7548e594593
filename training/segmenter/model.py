"""A small fully convolutional U-Net (total stride 8) with a CenterNet-style localisation head at stride 4, and
`ExportedSegmenter`, the graph that is served: boxes, scores, classes, mask and logits as
cnnserve.contracts.segmentation defines them, from plain ONNX ops (MaxPool, TopK, Gather, ArgMax).

Why a centre heatmap and not boxes from the mask: two digits of one class in one scene stay two boxes (the mask
would need connected components, which ONNX lacks), the outputs have a fixed size K, and the backbone is shared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from cnnserve.contracts.segmentation import MAX_BOXES

STRIDE = 8  # three 2x2 max-pools: inputs must have H and W divisible by it
HEAT_STRIDE = 4  # the heatmap's cell, in input pixels: digits >= 10 px keep their centres in separate cells


@dataclass(frozen=True)
class SegmenterConfig:
    in_channels: int = 1
    num_classes: int = 11  # mask classes, background (index 0) included; the heatmap has num_classes - 1
    widths: tuple[int, int, int, int] = (8, 24, 48, 64)  # channels at strides 1, 2, 4, 8
    max_boxes: int = MAX_BOXES  # K, rows of boxes / scores / classes per item
    score_threshold: float = 0.3  # detections below it are padded rows (score 0, class 0, box 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _block(c_in: int, c_out: int, layers: int = 2) -> nn.Sequential:
    """`layers` conv-BN-ReLU layers; padding keeps H and W."""
    return nn.Sequential(*_conv(c_in, c_out), *(m for _ in range(layers - 1) for m in _conv(c_out, c_out)))


class Segmenter(nn.Module):
    """images [N, C, H, W] -> (logits [N, classes, H, W], heat logits [N, classes - 1, H/4, W/4],
    size [N, 2, H/4, W/4] (box width, height in SIZE_UNIT_PX), offset [N, 2, H/4, W/4] (centre in its cell, 0..1)).

    Full resolution gets one conv layer each way and few channels: it is where CPU time goes (a 3x3 conv there
    costs 16x one at stride 4) and it only needs to place the edges. Which digit a pixel belongs to comes from
    stride 2 (`class_head`, upsampled and added): with a 1/1 head alone, 8 channels carried 11 classes badly
    (test mIoU 0.34 while the heatmap at stride 4 found 98% of the digits).
    """

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        self.config = config
        w1, w2, w4, w8 = config.widths
        self.enc1 = _block(config.in_channels, w1, layers=1)
        self.enc2 = _block(w1, w2)
        self.enc4 = _block(w2, w4)
        self.bottom = _block(w4, w8)
        self.up4 = nn.ConvTranspose2d(w8, w4, 2, stride=2)
        self.dec4 = _block(2 * w4, w4)
        self.up2 = nn.ConvTranspose2d(w4, w2, 2, stride=2)
        self.dec2 = _block(2 * w2, w2)
        self.up1 = nn.ConvTranspose2d(w2, w1, 2, stride=2)
        self.dec1 = _block(2 * w1, w1, layers=1)
        self.pixel_head = nn.Conv2d(w1, config.num_classes, 1)
        self.class_head = nn.Conv2d(w2, config.num_classes, 1)
        self.digit_head = nn.Conv2d(w4, config.num_classes, 1)
        centre_out = nn.Conv2d(w4, config.num_classes - 1 + 4, 1)  # heat per class, then size (2), offset (2)
        # CenterNet's prior: every cell starts at sigmoid ~0.01, so the focal loss starts calm
        centre_out.bias = nn.Parameter(torch.cat([torch.full((config.num_classes - 1,), -4.6), torch.zeros(4)]))
        self.heat_head = nn.Sequential(nn.Conv2d(w4, w4, 3, padding=1), nn.ReLU(inplace=True), centre_out)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        s1 = self.enc1(images)  # [N, w1, H, W]
        s2 = self.enc2(functional.max_pool2d(s1, 2))  # [N, w2, H/2, W/2]
        s4 = self.enc4(functional.max_pool2d(s2, 2))  # [N, w4, H/4, W/4]
        b = self.bottom(functional.max_pool2d(s4, 2))  # [N, w8, H/8, W/8]
        d4 = self.dec4(torch.cat([self.up4(b), s4], 1))  # [N, w4, H/4, W/4]
        d2 = self.dec2(torch.cat([self.up2(d4), s2], 1))  # [N, w2, H/2, W/2]
        d1 = self.dec1(torch.cat([self.up1(d2), s1], 1))  # [N, w1, H, W]
        logits = (self.pixel_head(d1) + _upsample(self.class_head(d2), 2)
                  + _upsample(self.digit_head(d4), 4))  # fmt: skip  # [N, classes, H, W]
        head = self.heat_head(d4)  # [N, classes - 1 + 4, H/4, W/4]
        k = self.config.num_classes - 1
        heat, size, offset = head[:, :k], head[:, k : k + 2], torch.sigmoid(head[:, k + 2 :])
        return logits, heat, size, offset


def _upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    return functional.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)


SIZE_UNIT_PX = 16.0
"""The size head answers box width and height in units of 16 px: targets near 1 train faster than raw pixels."""


class ExportedSegmenter(nn.Module):
    """The served graph: pixels [N, C, H, W] in [0, 1] -> boxes [N, K, 4], scores [N, K], classes [N, K] (int64),
    mask [N, H, W] (uint8), logits [N, classes, H, W]."""

    def __init__(self, segmenter: Segmenter) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, heat, size, offset = self.segmenter(images)
        boxes, scores, classes = decode_boxes(heat, size, offset, self.segmenter.config, images.shape[-2:])
        mask = logits.argmax(dim=1).to(torch.uint8)  # [N, H, W]
        return boxes, scores, classes, mask, logits


def decode_boxes(
    heat: torch.Tensor, size: torch.Tensor, offset: torch.Tensor, config: SegmenterConfig, image_hw: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Peaks of the heatmap, the best K over classes and cells, boxes in input pixels clipped to the image; rows
    below the score threshold are zero (class 0).

    A peak is its cell's best class and the best of its 3x3 neighbourhood over all classes (max-pool equality):
    per-class peaks let one unsure digit answer twice (an 8 and a 9 on the same spot). TopK still runs over
    classes x cells, so K <= (classes - 1) * H/4 * W/4 holds from 8 x 8 up.
    """
    n, k, h, w = heat.shape
    prob = torch.sigmoid(heat)  # [N, k, h, w]
    best = prob.amax(dim=1, keepdim=True)  # [N, 1, h, w]
    is_peak = (functional.max_pool2d(best, 3, stride=1, padding=1) == best) & (prob == best)  # [N, k, h, w]
    peaks = prob * is_peak.to(prob.dtype)
    scores, index = peaks.reshape(n, k * h * w).topk(config.max_boxes, dim=1)  # [N, K], best first
    # floor division and subtraction, not %: the dynamo exporter cannot convert remainder by a symbolic size
    channel = index.div(h * w, rounding_mode="floor")  # [N, K]
    cell = index - channel * (h * w)  # [N, K] position in the h x w grid
    classes = channel + 1  # heat channel c is mask class c + 1 (0 is background)
    row = cell.div(w, rounding_mode="floor")
    cy, cx = row.to(prob.dtype), (cell - row * w).to(prob.dtype)
    gather = cell[:, None, :].expand(n, 2, config.max_boxes)
    wh = size.reshape(n, 2, h * w).gather(2, gather).clamp_min(0.0) * SIZE_UNIT_PX  # [N, 2, K] pixels
    off = offset.reshape(n, 2, h * w).gather(2, gather)  # [N, 2, K] within the cell
    centre_x, centre_y = (cx + off[:, 0]) * HEAT_STRIDE, (cy + off[:, 1]) * HEAT_STRIDE
    height, width = image_hw[0], image_hw[1]
    x0 = (centre_x - wh[:, 0] / 2).clamp(min=0.0).minimum(torch.full_like(centre_x, 1.0) * width)
    x1 = (centre_x + wh[:, 0] / 2).clamp(min=0.0).minimum(torch.full_like(centre_x, 1.0) * width)
    y0 = (centre_y - wh[:, 1] / 2).clamp(min=0.0).minimum(torch.full_like(centre_y, 1.0) * height)
    y1 = (centre_y + wh[:, 1] / 2).clamp(min=0.0).minimum(torch.full_like(centre_y, 1.0) * height)
    keep = scores >= config.score_threshold  # [N, K]
    boxes = torch.stack([x0, y0, x1, y1], dim=2) * keep[:, :, None].to(prob.dtype)  # [N, K, 4]
    return boxes, scores * keep.to(prob.dtype), classes * keep.to(classes.dtype)
