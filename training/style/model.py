"""A Johnson-style feed-forward stylisation network: strided convolutions down, residual blocks at 1/4 resolution,
resize-convolution up (nearest 2x then a conv, which leaves no checkerboard where transposed convolutions do),
instance norm throughout. Fully convolutional: any batch, height and width that are multiples of STRIDE (8).

Pixels in, pixels out: RGB [N, 3, H, W] in [0, 1] both ways (the pixel contract), so the served graph is the module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional

STRIDE = 8
"""H and W must be multiples of it (the server pads files up to it): two stride-2 convolutions need 4, and 8 keeps
the residual blocks' maps at 2 x 2 or more, which reflection padding and instance norm need."""


@dataclass(frozen=True)
class StylizerConfig:
    widths: tuple[int, int, int] = (16, 32, 64)  # channels at strides 1, 2, 4
    residual_blocks: int = 3  # at stride 4, where a 3x3 conv costs 1/16 of one at full resolution
    edge_kernel: int = 5  # the first and last convolutions' kernel (Johnson's 9 costs 3x the FLOPs for little here)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InstanceNorm(nn.Module):
    """Per item and channel: zero mean, unit variance over H and W, then a learnt scale and shift. Written out
    rather than nn.InstanceNorm2d, whose size check turns traced shapes into Python booleans at export."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean((2, 3), keepdim=True)
        variance = ((x - mean) ** 2).mean((2, 3), keepdim=True)
        normalised = (x - mean) * torch.rsqrt(variance + self.eps)
        return normalised * self.weight[None, :, None, None] + self.bias[None, :, None, None]


class ConvLayer(nn.Module):
    """Reflection padding (no dark frame from zero padding), conv, instance norm, optional ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, relu: bool = True) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride)
        self.norm = InstanceNorm(c_out)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.norm(self.conv(self.pad(x)))
        return functional.relu(y) if self.relu else y


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvLayer(channels, channels, 3), ConvLayer(channels, channels, 3, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.body(x)
        return out


class UpsampleConv(nn.Module):
    """Nearest-neighbour 2x, then a conv: every output pixel sees the same number of inputs (no checkerboard)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = ConvLayer(c_in, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(functional.interpolate(x, scale_factor=2.0, mode="nearest"))
        return out


class Stylizer(nn.Module):
    """pixels [N, 3, H, W] in [0, 1] -> stylised pixels [N, 3, H, W] in [0, 1] (H, W multiples of STRIDE)."""

    def __init__(self, config: StylizerConfig) -> None:
        super().__init__()
        self.config = config
        w1, w2, w4 = config.widths
        self.down1 = ConvLayer(3, w1, config.edge_kernel)
        self.down2 = ConvLayer(w1, w2, 3, stride=2)
        self.down4 = ConvLayer(w2, w4, 3, stride=2)
        self.residuals = nn.Sequential(*(ResidualBlock(w4) for _ in range(config.residual_blocks)))
        self.up2 = UpsampleConv(w4, w2)
        self.up1 = UpsampleConv(w2, w1)
        self.pad_out = nn.ReflectionPad2d(config.edge_kernel // 2)
        self.out = nn.Conv2d(w1, 3, config.edge_kernel)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.down1(pixels * 2.0 - 1.0)  # [N, w1, H, W]; centred input
        x = self.down2(x)  # [N, w2, H/2, W/2]
        x = self.down4(x)  # [N, w4, H/4, W/4]
        x = self.residuals(x)  # [N, w4, H/4, W/4]
        x = self.up2(x)  # [N, w2, H/2, W/2]
        x = self.up1(x)  # [N, w1, H, W]
        out: torch.Tensor = torch.sigmoid(self.out(self.pad_out(x)))  # [N, 3, H, W] in [0, 1]
        return out
