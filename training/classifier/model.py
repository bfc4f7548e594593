"""A configurable CNN classifier: N blocks of conv + ReLU + max-pool, flatten, dense + ReLU, dense (logits)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from cnnserve.contracts import features as contract


@dataclass(frozen=True)
class ClassifierConfig:
    in_channels: int = 1  # image channels: 1 (grey) or 3 (RGB)
    image_size: int = 16  # input height = width, in pixels; divisible by 2 ** len(channels)
    num_classes: int = 10  # logits out
    channels: tuple[int, ...] = (32, 64)  # output channels of each conv block; one max-pool (/2) per block
    kernel_sizes: tuple[int, ...] = (3, 3)  # odd conv kernel size per block ("same" padding)
    hidden: int = 128  # width of the dense + ReLU layer
    batch_norm: bool = True  # batch norm after each conv (folded into the conv by the ONNX exporter)
    dropout: float = 0.3  # dropout before each dense layer; 0 disables

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.kernel_sizes) or not self.channels:
            raise ValueError(
                f"channels {self.channels} and kernel_sizes {self.kernel_sizes} must be non-empty and of equal length"
            )
        if any(k % 2 == 0 or k < 1 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd positive integers, got {self.kernel_sizes}")
        if self.image_size % (2 ** len(self.channels)) != 0:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2**{len(self.channels)} (one max-pool per block)"
            )
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        data = dict(data)
        data["channels"] = tuple(data["channels"])
        data["kernel_sizes"] = tuple(data["kernel_sizes"])
        return cls(**data)


class Classifier(nn.Module):
    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        blocks: list[nn.Module] = []
        in_ch = config.in_channels
        for out_ch, k in zip(config.channels, config.kernel_sizes, strict=True):
            blocks += [nn.Conv2d(in_ch, out_ch, k, padding=k // 2, bias=not config.batch_norm)]
            if config.batch_norm:
                blocks += [nn.BatchNorm2d(out_ch)]
            blocks += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        side = config.image_size // 2 ** len(config.channels)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(in_ch * side * side, config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # images: [B, C, S, S], already normalised as (x - mean) / std
        h = self.features(images)  # [B, channels[-1], S / 2**N, S / 2**N]
        logits: torch.Tensor = self.head(h)  # [B, num_classes]
        return logits

    def feature_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(logits, every conv block's activation after its ReLU and after its pool), named as
        contracts/features.py names the exported outputs, in graph order."""
        maps: dict[str, torch.Tensor] = {}
        h, block = images, 0
        for layer in self.features:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                block += 1
                maps[contract.feature_name(block, contract.RELU)] = h
            elif isinstance(layer, nn.MaxPool2d):
                maps[contract.feature_name(block, contract.POOL)] = h
        logits: torch.Tensor = self.head(h)
        return logits, maps


class PixelClassifier(nn.Module):
    """`classifier` behind its input normalisation: takes [0, 1] pixels [N, C, H, W], normalises them with the
    training split's per-channel statistics, and answers what `classifier` answers on normalised images."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, classifier: Classifier, mean: Sequence[float], std: Sequence[float],
                 with_features: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.classifier = classifier
        self.with_features = with_features
        # Buffers, not parameters: constants in the graph, and they move with .to(device) like the weights.
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32)[None, :, None, None])
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32)[None, :, None, None])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Logits; with_features: (logits, every feature map in `feature_names()` order)."""
        normalised = (pixels - self.mean) / self.std
        if not self.with_features:
            out: torch.Tensor = self.classifier(normalised)
            return out
        logits, maps = self.classifier.feature_maps(normalised)
        return (logits, *maps.values())

    def feature_names(self, example: torch.Tensor) -> tuple[str, ...]:
        """The feature-map outputs' names (contracts/features.py), in the order forward() answers them."""
        with torch.no_grad():
            _, maps = self.classifier.feature_maps((example - self.mean) / self.std)
        return tuple(maps)
