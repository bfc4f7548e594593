"""The style model's report card, on bundled photos it was never trained on, by measures that need no pretrained net:

- style distance: the Gram distance to the style image in an independent random conv net (MEASURE_NET_SEED, not
  the loss's seed), as a ratio to the unstyled photo's own distance; at most MAX_STYLE_RATIO;
- structure kept: the correlation of Sobel edge magnitudes (grey) between output and input; at least MIN_EDGE_CORR.

And the before/after grid of those photos beside the style image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional

from cnnserve.training.report import Check, check, check_at_most
from cnnserve.training.style.data import fit_short_side, to_tensor
from cnnserve.training.style.losses import MEASURE_NET_SEED, RandomFeatures, gram_distance, style_grams
from cnnserve.training.style.model import STRIDE

MAX_STYLE_RATIO = 0.3
MIN_EDGE_CORR = 0.15
JUDGED_SIDE = 256  # held-out photos are judged with their shorter side at this size
GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights


@dataclass(frozen=True)
class PhotoScore:
    name: str
    style_ratio: float  # Gram distance of the output / Gram distance of the photo itself, to the style image
    edge_correlation: float  # Pearson correlation of the Sobel magnitudes of output and photo (grey)


def judged_photo(pixels: np.ndarray, side: int = JUDGED_SIDE) -> torch.Tensor:
    """uint8 [H, W, 3] -> [1, 3, h, w] in [0, 1], shorter side `side`, cropped to multiples of STRIDE."""
    image = fit_short_side(to_tensor(pixels), side)
    h, w = image.shape[-2:]
    return image[..., : h - h % STRIDE, : w - w % STRIDE].contiguous()


def sobel_magnitude(pixels: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> [N, H-2, W-2]: the gradient magnitude of the grey image (valid positions only)."""
    grey = (pixels * torch.tensor(GREY, dtype=pixels.dtype)[None, :, None, None]).sum(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=pixels.dtype)
    kernels = torch.stack([kx, kx.t()])[:, None]  # [2, 1, 3, 3]: d/dx, d/dy
    gradients = functional.conv2d(grey, kernels)
    return gradients.pow(2).sum(1).sqrt()


def edge_correlation(output: torch.Tensor, photo: torch.Tensor) -> float:
    a, b = sobel_magnitude(output).flatten(), sobel_magnitude(photo).flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


@torch.no_grad()
def score_photos(model: nn.Module, photos: dict[str, np.ndarray], style: torch.Tensor, side: int = JUDGED_SIDE
                 ) -> list[PhotoScore]:  # fmt: skip
    """Each held-out photo (shorter side `side`) through `model` (eval mode), measured against `style`."""
    model.eval()
    measure = RandomFeatures(MEASURE_NET_SEED)
    targets = style_grams(measure, style)
    scores = []
    for name, pixels in photos.items():
        photo = judged_photo(pixels, side)
        output = model(photo)
        before = float(gram_distance(measure(photo), targets)[0])
        after = float(gram_distance(measure(output), targets)[0])
        scores.append(PhotoScore(name, after / max(before, 1e-12), edge_correlation(output, photo)))
    return scores


def style_checks(scores: list[PhotoScore], side: int = JUDGED_SIDE) -> tuple[list[Check], dict[str, Any]]:
    """The floors on the means over the held-out photos; each photo's figures beside them."""
    ratio = float(np.mean([s.style_ratio for s in scores]))
    edges = float(np.mean([s.edge_correlation for s in scores]))
    checks = [check_at_most("held_out_style_ratio", ratio, MAX_STYLE_RATIO),
              check("held_out_edge_correlation", edges, MIN_EDGE_CORR)]  # fmt: skip
    metrics: dict[str, Any] = {
        "held_out": {s.name: {"style_ratio": round(s.style_ratio, 4), "edge_correlation": round(s.edge_correlation, 4)}
                     for s in scores},
        "measure_net_seed": MEASURE_NET_SEED, "judged_side": side,
    }  # fmt: skip
    return checks, metrics


@torch.no_grad()
def save_before_after(model: nn.Module, photos: dict[str, np.ndarray], style: torch.Tensor, path: Path,
                      side: int = JUDGED_SIDE, gap: int = 4) -> None:  # fmt: skip
    """One row per photo: the photo, then the model's output; the style image heads the first column."""
    model.eval()
    rows = []
    for pixels in photos.values():
        photo = judged_photo(pixels, side)
        rows.append((_uint8(photo), _uint8(model(photo))))
    style_tile = _uint8(fit_short_side(style, side))[:side, :side]
    width = max(a.shape[1] for a, _ in rows)
    canvas_w = 2 * width + 3 * gap
    canvas_h = style_tile.shape[0] + sum(a.shape[0] for a, _ in rows) + (len(rows) + 2) * gap
    canvas = np.full((canvas_h, canvas_w, 3), 255, np.uint8)
    canvas[gap : gap + style_tile.shape[0], gap : gap + style_tile.shape[1]] = style_tile
    y = style_tile.shape[0] + 2 * gap
    for before, after in rows:
        h, w = before.shape[:2]
        canvas[y : y + h, gap : gap + w] = before
        canvas[y : y + h, 2 * gap + width : 2 * gap + width + w] = after
        y += h + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)


def _uint8(pixels: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] in [0, 1] -> uint8 [H, W, 3]."""
    return np.asarray((pixels[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
