"""DCGAN generator and discriminator, unconditional or class-conditional (the label embedding enters both).

Pixel space is [-1, 1] (x * 2 - 1 of a [0, 1] image); a generated pixel in [0, 1] is (g + 1) / 2.
Both work at `native_size` (the data's own resolution: 8 for the digits); the generator's graph then upsamples
bilinearly to `image_size`, the same resize the data loader applies to real images, so samples carry no texture the
data lacks. Upsampling inside the generator is nearest-neighbour + 3x3 conv (resize-convolution): a stride-2
transposed conv overlaps its kernels unevenly and paints a checkerboard.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional
from torch.nn.utils.parametrizations import spectral_norm


@dataclass(frozen=True)
class GanConfig:
    latent_dim: int = 64  # size of the latent vector z ~ N(0, 1)
    image_size: int = 16  # generated height = width; a power of two >= 8
    native_size: int = 0  # G and D work at this size, a power of two in [8, image_size]; 0 = image_size
    channels: int = 1  # image channels: 1 (grey) or 3 (RGB)
    g_width: int = 64  # generator channels at half resolution; doubled per stage towards the 4x4 start
    d_width: int = 64  # discriminator channels after its first conv; doubled per stage
    num_classes: int = 0  # 0 = unconditional; > 0 = class-conditional generator and discriminator
    embed_dim: int = 32  # width of the class embedding concatenated to the latent (conditional only)
    spectral_norm: bool = True  # spectral norm on every discriminator layer (else batch norm, plain DCGAN)
    minibatch_std: bool = False  # discriminator sees the batch's feature spread (fights mode collapse)
    codes: int = 0  # unconditional only: InfoGAN-style categorical code = argmax of the latent's first `codes`
    # entries, embedded like a class; the discriminator learns to recover it (0 = off)
    auxiliary_classifier: bool = False  # conditional only: AC-GAN head on the discriminator's features
    pack: int = 1  # unconditional only: PacGAN, the discriminator judges `pack` images at once (fights mode dropping)

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {self.image_size}")
        native = self.native_size
        if native and (native < 8 or native & (native - 1) or native > self.image_size):
            raise ValueError(f"native_size must be 0 or a power of two in [8, image_size], got {native}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.pack < 1 or (self.pack > 1 and self.conditional):
            raise ValueError(f"pack must be >= 1 (and 1 for a conditional GAN), got {self.pack}")
        if self.codes and (self.conditional or not 2 <= self.codes <= self.latent_dim):
            raise ValueError(f"codes must be 0, or in [2, latent_dim] for an unconditional GAN, got {self.codes}")

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def embedded(self) -> int:
        """Rows of the generator's embedding: classes (conditional), codes (InfoGAN-style) or none."""
        return self.num_classes or self.codes

    @property
    def working_size(self) -> int:
        """The resolution G makes and D judges: native_size, or image_size when that is 0."""
        return self.native_size or self.image_size

    @property
    def upsamplings(self) -> int:
        """Stride-2 stages from the 4x4 start to the working size."""
        return int(math.log2(self.working_size)) - 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GanConfig:
        return cls(**data)


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: conv weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.embedded, config.embed_dim) if config.embedded else None
        in_ch = config.latent_dim + (config.embed_dim if config.embedded else 0)
        ch = config.g_width * 2**config.upsamplings
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_ch, ch, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(inplace=True),
        ]  # [B, ch, 4, 4]
        for _ in range(config.upsamplings):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(ch, ch // 2, 3, 1, 1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(inplace=True),
            ]  # resolution x2, channels / 2
            ch //= 2
        layers += [nn.Conv2d(ch, config.channels, 3, 1, 1), nn.Tanh()]  # [B, C, n, n] in [-1, 1], n = working size
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def code(self, latent: torch.Tensor) -> torch.Tensor:
        """The categorical code carried by the latent: argmax of its first `codes` entries, [B] int64."""
        return latent[:, : self.config.codes].argmax(dim=1)

    def native(self, latent: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Images at the working size [B, C, n, n] in [-1, 1], what the discriminator judges."""
        # latent: [B, latent_dim]; classes: [B] int64 (conditional only)
        h = latent
        if self.embed is not None:
            if self.config.codes:
                classes = self.code(latent)
            elif classes is None:
                raise ValueError("a conditional generator needs classes")
            h = torch.cat([latent, self.embed(classes)], dim=1)  # [B, latent_dim + embed_dim]
        images: torch.Tensor = self.net(h[:, :, None, None])  # [B, C, n, n]
        return images

    def forward(self, latent: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Images at image_size [B, C, S, S] in [-1, 1]: the native ones resized as the data loader resizes."""
        images = self.native(latent, classes)
        if self.config.working_size == self.config.image_size:
            return images
        size = (self.config.image_size, self.config.image_size)
        return functional.interpolate(images, size=size, mode="bilinear", align_corners=False)


class Discriminator(nn.Module):
    """A 3x3 conv at the working size, strided convs down to 4x4, then a score; conditional: plus a projection of
    the class embedding."""

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        self.config = config
        sn = spectral_norm if config.spectral_norm else _identity
        ch = config.d_width
        layers: list[nn.Module] = [
            sn(nn.Conv2d(config.channels * config.pack, ch, 3, 1, 1)),
            nn.LeakyReLU(0.2, inplace=True),
        ]  # [B / pack, d_width, n, n]
        for _ in range(config.upsamplings):
            layers += [sn(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=config.spectral_norm))]
            if not config.spectral_norm:
                layers += [nn.BatchNorm2d(ch * 2)]
            layers += [nn.LeakyReLU(0.2, inplace=True)]  # resolution / 2, channels x 2
            ch *= 2
        if config.minibatch_std:
            layers += [MinibatchStd()]  # [B, ch + 1, 4, 4]
            ch += 1
        self.body = nn.Sequential(*layers, nn.Flatten())  # [B / pack, ch * 16]
        self.score = sn(nn.Linear(ch * 16, 1))
        self.embed = sn(nn.Embedding(config.num_classes, ch * 16)) if config.conditional else None
        # InfoGAN's Q head (recovers the code) or AC-GAN's auxiliary classifier (recovers the class)
        heads = config.codes or (config.num_classes if config.auxiliary_classifier else 0)
        self.code_head = nn.Linear(ch * 16, heads * config.pack) if heads else None
        if not config.spectral_norm:
            self.apply(init_dcgan_weights)

    def forward(self, images: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        # images: [B, C, n, n] in [-1, 1] at the working size; classes: [B] int64 (conditional only)
        return self.head(self.features(images), classes)  # [B / pack] unnormalised realness

    def features(self, images: torch.Tensor) -> torch.Tensor:
        # images: [B, C, n, n]; B a multiple of pack. Packing stacks consecutive images along the channels.
        b, c, h, w = images.shape
        if b % self.config.pack:
            raise ValueError(f"batch of {b} images does not split into packs of {self.config.pack}")
        h_out: torch.Tensor = self.body(images.reshape(b // self.config.pack, c * self.config.pack, h, w))
        return h_out  # [B / pack, F]

    def head(self, h: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        # h: [B, F] from self.features
        out: torch.Tensor = self.score(h).squeeze(1)  # [B]
        if self.embed is not None:
            if classes is None:
                raise ValueError("a conditional discriminator needs classes")
            out = out + (self.embed(classes) * h).sum(dim=1)  # projection: <embed(y), features>
        return out

    def code_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Logits of the code (InfoGAN) or class (AC-GAN) behind an image, [B, codes or classes], from features h."""
        if self.code_head is None:
            raise ValueError("this discriminator has no code head (codes=0, auxiliary_classifier=False)")
        logits: torch.Tensor = self.code_head(h)  # [B / pack, pack * codes]
        return logits.reshape(-1, logits.shape[1] // self.config.pack)  # [B, codes], in image order


class MinibatchStd(nn.Module):
    """Appends one channel: the mean over features of the per-feature std across the batch (ProGAN)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # h: [B, C, H, W]
        spread = h.std(dim=0, unbiased=False).mean()  # scalar
        return torch.cat([h, spread.expand(h.shape[0], 1, *h.shape[2:])], dim=1)  # [B, C + 1, H, W]


def _identity(module: nn.Module) -> nn.Module:
    return module


class PixelGenerator(nn.Module):
    """`generator` (tanh output in [-1, 1]) answering [0, 1] pixels: (g + 1) / 2, clipped, because ONNX Runtime's
    tanh can overshoot -1 by a rounding step and a client may rely on the range it was told."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, latent: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        produced = self.generator(latent) if classes is None else self.generator(latent, classes)
        out: torch.Tensor = ((produced + 1.0) / 2.0).clamp(0.0, 1.0)
        return out
