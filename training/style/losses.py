"""The style loss network without pretrained weights: a fixed, randomly initialised multi-scale conv net whose
Gram matrices carry texture and colour (Ustyuzhaninov et al. 2016, texture synthesis with random shallow nets), and
the losses and distances built on it. One seed makes the training loss's net; the report measures with another.

Why random filters work: a Gram matrix of many random ReLU features is a rich set of second-order statistics of local
patches (colour co-occurrence, edge orientation and density at each scale), which is what "style" means here; no
ImageNet semantics are needed for that. Content is kept by matching the features themselves at a middle scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

LOSS_NET_SEED = 1234  # the training loss's net (recorded in the report)
MEASURE_NET_SEED = 98765  # the report's independent net: never the loss's, so the figure is not the loss itself


@dataclass(frozen=True)
class FeatureNetConfig:
    widths: tuple[int, ...] = (32, 64, 128, 128)  # channels of each stage; stage k sees the image at 1/2^k scale
    content_stage: int = 2  # the stage whose features the content loss matches (receptive field ~ 22 px)


class RandomFeatures(nn.Module):
    """pixels [N, 3, H, W] in [0, 1] -> one ReLU feature map per stage: [N, w_k, H/2^k, W/2^k]. Frozen."""

    def __init__(self, seed: int, config: FeatureNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or FeatureNetConfig()
        generator = torch.Generator().manual_seed(seed)
        convs = []
        c_in = 3
        for width in self.config.widths:
            conv = nn.Conv2d(c_in, width, 3, padding=1, padding_mode="reflect", bias=False)
            with torch.no_grad():  # Kaiming-normal from our own generator: the net depends on `seed` alone
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2.0 / (9 * c_in)) ** 0.5)
            convs.append(conv)
            c_in = width
        self.convs = nn.ModuleList(convs)
        self.requires_grad_(False)
        self.eval()

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        x = pixels * 2.0 - 1.0
        maps = []
        for index, conv in enumerate(self.convs):
            if index:
                x = functional.avg_pool2d(x, 2)  # the next scale
            x = functional.relu(conv(x))
            maps.append(x)
        return maps


def gram(features: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, C]: feature co-occurrence averaged over positions (size-independent)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def style_grams(net: RandomFeatures, style: torch.Tensor) -> list[torch.Tensor]:
    """The targets: each stage's Gram matrix of the style image [1, 3, H, W], [1, C, C]."""
    with torch.no_grad():
        return [gram(f) for f in net(style)]


def gram_distance(features: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Per item [N]: the sum over stages of ||G - G_style||^2 / ||G_style||^2 (each stage weighs alike)."""
    total = torch.zeros(features[0].shape[0], device=features[0].device)
    for f, target in zip(features, targets, strict=True):
        g = gram(f)
        total = total + ((g - target) ** 2).sum((1, 2)) / (target**2).sum()
    return total


def content_distance(features: list[torch.Tensor], originals: list[torch.Tensor], stage: int) -> torch.Tensor:
    """Per item [N]: mean squared feature difference at `stage`, relative to the original's mean square."""
    f, o = features[stage], originals[stage]
    return ((f - o) ** 2).mean((1, 2, 3)) / (o**2).mean((1, 2, 3)).clamp_min(1e-8)


def total_variation(pixels: torch.Tensor) -> torch.Tensor:
    """Per item [N]: mean absolute difference of neighbouring pixels (penalises speckle)."""
    dy = (pixels[..., 1:, :] - pixels[..., :-1, :]).abs().mean((1, 2, 3))
    dx = (pixels[..., :, 1:] - pixels[..., :, :-1]).abs().mean((1, 2, 3))
    return dx + dy
