"""What the classifier does to its images: per-channel statistics (its input normalisation, in the exported graph)
and random-affine augmentation of training batches."""

from __future__ import annotations

import math

import torch
from torch.nn import functional


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of [N, C, H, W] images (std floored so constant channels stay finite)."""
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def normalise(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """(x - mean) / std per channel, for [0, 1] images [N, C, H, W]."""
    m = torch.tensor(mean, dtype=images.dtype, device=images.device)[None, :, None, None]
    s = torch.tensor(std, dtype=images.dtype, device=images.device)[None, :, None, None]
    return (images - m) / s


def random_affine(
    images: torch.Tensor, generator: torch.Generator, max_shift_px: float = 2.0, max_rotate_deg: float = 10.0,
    max_scale: float = 0.1,
) -> torch.Tensor:  # fmt: skip
    """Per-image random shift (pixels), rotation and scale by bilinear resampling; the border reads as 0."""
    n, _, h, _ = images.shape
    u = torch.rand(n, 4, generator=generator, device="cpu").to(images.device) * 2 - 1  # [N, 4] in [-1, 1]
    angle = u[:, 0] * math.radians(max_rotate_deg)
    scale = 1 + u[:, 1] * max_scale
    shift = u[:, 2:] * (2 * max_shift_px / h)  # affine_grid works in [-1, 1] units: one pixel = 2 / size
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = functional.affine_grid(theta, list(images.shape), align_corners=False)  # [N, H, W, 2]
    return functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
