"""The neuron atlas of a classifier (contracts/features.py): per channel of every conv block, the input that excites
it most (gradient ascent from noise, in pixel space) and the validation crops that excite it most, as PNG sprites
and index.json, the files `publish(extra_files=...)` writes under the version's `atlas/` folder."""

from __future__ import annotations

import io
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional

from cnnserve.contracts import features as contract
from cnnserve.training.classifier.model import Classifier
from cnnserve.training.data import ImageSet

logger = logging.getLogger(__name__)

OPTIMISED_COLUMNS = 8  # the optimised sprite's grid; the top sprite has a row per channel (top_k columns)
TILE_TARGET_PX = 64  # tiles are upscaled (NEAREST, a whole factor) to about this many pixels a side
MEASURE = {
    "optimised": "mean of the channel's map over its positions, on the image as the sprite stores it (uint8)",
    "top": "the channel's map at the crop's centre position: its largest value on that image",
}
"""What the index's activation values are (written into index.json as `measure`)."""


@dataclass(frozen=True)
class AtlasConfig:
    steps: int = 64  # gradient-ascent steps per layer (all its channels at once)
    lr: float = 0.2  # Adam's step on the pre-sigmoid pixels
    jitter_px: int = 1  # each step shifts the batch by up to this many pixels (robust, not adversarial, patterns)
    blur_every: int = 4  # every that many steps the pre-sigmoid pixels are blurred (a low-pass on the noise)
    blur_weight: float = 0.25  # blend of the blurred pixels into the current ones
    leak: float = 0.1  # the objective's slope where a position is off (below 0 before the ReLU)
    init_std: float = 0.5  # the starting noise (pre-sigmoid); pixels start near 0.5 grey
    top_k: int = contract.ATLAS_TOP_K  # validation images per channel, best first
    seed: int = 0  # the starting noise and the jitter


@dataclass(frozen=True)
class ReceptiveField:
    """Where a block's `.relu` map looks in the input: unit (y, x) sees the `size` x `size` square from
    start + jump * (y, x) - (size - 1) / 2 (start: the centre of unit 0, in input pixels)."""

    size: int
    jump: int
    start: float

    def box(self, y: int, x: int) -> list[int]:
        """[x0, y0, x1, y1], x1 and y1 exclusive; it may reach past the image, where the crop is 0."""
        x0 = round(self.start + self.jump * x - (self.size - 1) / 2)
        y0 = round(self.start + self.jump * y - (self.size - 1) / 2)
        return [x0, y0, x0 + self.size, y0 + self.size]


def receptive_fields(model: Classifier) -> list[ReceptiveField]:
    """Per conv block, from the kernel sizes ("same" padding, stride 1) and the 2 x 2 max-pools between blocks."""
    fields: list[ReceptiveField] = []
    size, jump, start = 1, 1, 0.0
    for kernel in model.config.kernel_sizes:
        size += (kernel - 1) * jump  # the conv: same padding keeps the centre where it is
        fields.append(ReceptiveField(size, jump, start))
        size, start, jump = size + jump, start + 0.5 * jump, jump * 2  # the pool: 2 wide, stride 2
    return fields


def build_atlas(model: Classifier, mean: Sequence[float], std: Sequence[float], val: ImageSet,
                classes: Sequence[str], name: str, config: AtlasConfig | None = None) -> dict[str, bytes]:  # fmt: skip
    """{path relative to the version folder: bytes}: atlas/index.json and two sprites per conv block. `model` is
    put in eval mode and only read; `mean` and `std` are its input normalisation, as the exported graph's."""
    config = config or AtlasConfig()
    started = time.monotonic()
    model.eval()
    pixels_in = PixelFeatures(model, mean, std)
    fields = receptive_fields(model)
    size = model.config.image_size
    top_k = min(config.top_k, len(val))
    files: dict[str, bytes] = {}
    layers: list[dict[str, Any]] = []
    for block, rf in enumerate(fields, start=1):
        layer = contract.feature_name(block, contract.RELU)
        optimised = optimise_layer(pixels_in, block, model.config.in_channels, size, config)
        stored = _quantised(optimised)
        own = channel_means(pixels_in, layer, stored).diagonal()
        top = top_crops(pixels_in, layer, val.images, top_k, rf)
        opt_sprite, top_sprite = f"block{block}-optimised.png", f"block{block}-top.png"
        crops = [_crop(val.images[i], rf.box(y, x)) for neuron in top for i, _, y, x in neuron]  # channel-major
        opt_tiles = _sprite(stored, columns=min(len(stored), OPTIMISED_COLUMNS))
        top_tiles = _sprite(torch.stack(crops), columns=top_k)
        files[f"{contract.ATLAS_DIR}/{opt_sprite}"], opt_tile, opt_columns = opt_tiles
        files[f"{contract.ATLAS_DIR}/{top_sprite}"], top_tile, top_columns = top_tiles
        layers.append({
            "layer": layer, "block": block, "channels": len(stored), "receptive_field": rf.size,
            "optimised": {"sprite": opt_sprite, "tile": opt_tile, "columns": opt_columns},
            "top": {"sprite": top_sprite, "tile": top_tile, "columns": top_columns},
            "neurons": [
                {"channel": c, "optimised_activation": round(float(own[c]), 6),
                 "top": [{"activation": round(value, 6), "label": classes[int(val.labels[i])], "image": i,
                          "box": rf.box(y, x)} for i, value, y, x in top[c]]}
                for c in range(len(stored))
            ],
        })  # fmt: skip
    index = {"model": name, "image_size": [size, size], "top_k": top_k, "measure": MEASURE, "layers": layers}
    files[f"{contract.ATLAS_DIR}/{contract.ATLAS_INDEX}"] = json.dumps(index, separators=(",", ":")).encode()
    logger.info("atlas model=%s layers=%d channels=%d steps=%d seconds=%.1f", name, len(layers),
                sum(int(layer["channels"]) for layer in layers), config.steps, time.monotonic() - started)  # fmt: skip
    return files


class PixelFeatures(nn.Module):
    """The classifier's feature maps of [0, 1] pixels, normalised as the exported graph normalises them."""

    def __init__(self, model: Classifier, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.mean = torch.tensor(list(mean), dtype=torch.float32)[None, :, None, None]
        self.std = torch.tensor(list(std), dtype=torch.float32)[None, :, None, None]

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.feature_maps((pixels - self.mean) / self.std)[1]

    def before_relu(self, pixels: torch.Tensor, block: int) -> torch.Tensor:
        """Block `block`'s map before its ReLU (the ReLU of it is the `.relu` map)."""
        h, seen = (pixels - self.mean) / self.std, 0
        for layer in self.model.features:
            if isinstance(layer, nn.ReLU):
                seen += 1
                if seen == block:
                    return h
            h = layer(h)
        raise ValueError(f"block {block}: the classifier has {seen} conv blocks")


def optimise_layer(pixels_in: PixelFeatures, block: int, in_channels: int, size: int, config: AtlasConfig
                   ) -> torch.Tensor:  # fmt: skip
    """[C, in_channels, size, size] pixels in [0, 1]: image c maximises the mean of channel c's map after the
    block's ReLU. All channels in one batch; pixels are sigmoid(z), so every step stays a picture."""
    with torch.no_grad():
        channels = int(pixels_in.before_relu(torch.zeros(1, in_channels, size, size), block).shape[1])
    generator = torch.Generator().manual_seed(config.seed)
    jitter = random.Random(config.seed)
    z = (torch.randn(channels, in_channels, size, size, generator=generator) * config.init_std).requires_grad_()
    optimiser = torch.optim.Adam([z], lr=config.lr)
    own = torch.arange(channels)
    for step in range(config.steps):
        dy, dx = (jitter.randint(-config.jitter_px, config.jitter_px) for _ in range(2))
        shifted = torch.roll(torch.sigmoid(z), shifts=(dy, dx), dims=(2, 3))
        maps = pixels_in.before_relu(shifted, block)  # [C images, C channels, H', W']
        # The ReLU map's mean, with a leak where a position is off: else a channel that is off everywhere on
        # the grey start (one that fires on black, say) has no gradient and never leaves it.
        objective = functional.leaky_relu(maps[own, own], config.leak).mean(dim=(1, 2)).sum()
        (gradient,) = torch.autograd.grad(-objective, z)  # grad of z only: the model's .grad stays untouched
        z.grad = gradient
        optimiser.step()
        if config.blur_every and (step + 1) % config.blur_every == 0:
            with torch.no_grad():
                z.lerp_(_blur(z), config.blur_weight)
    return torch.sigmoid(z).detach()


def _blur(images: torch.Tensor) -> torch.Tensor:
    """A 3 x 3 binomial blur per channel, edges replicated."""
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16.0).expand(images.shape[1], 1, 3, 3)
    return functional.conv2d(functional.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=images.shape[1])


def channel_means(pixels_in: PixelFeatures, layer: str, images: torch.Tensor) -> torch.Tensor:
    """[channels, images]: entry (c, i) is the mean of channel c's map on image i."""
    with torch.no_grad():
        maps = pixels_in(images)[layer]  # [N, C, H', W']
    means: torch.Tensor = maps.mean(dim=(2, 3)).T
    return means


def top_crops(pixels_in: PixelFeatures, layer: str, images: torch.Tensor, top_k: int, rf: ReceptiveField,
              batch_size: int = 512) -> list[list[tuple[int, float, int, int]]]:  # fmt: skip
    """Per channel, its top_k images best first, each once at its strongest position: (image, value, y, x)."""
    with torch.no_grad():
        peaks = [pixels_in(images[i : i + batch_size])[layer].flatten(2).max(dim=2)
                 for i in range(0, len(images), batch_size)]  # fmt: skip
        values = torch.cat([p.values for p in peaks])  # [N, C]
        where = torch.cat([p.indices for p in peaks])
        width = int(pixels_in(images[:1])[layer].shape[-1])
    best = values.topk(top_k, dim=0)  # [top_k, C], best first
    return [
        [(int(i), float(v), int(where[i, c]) // width, int(where[i, c]) % width)
         for v, i in zip(best.values[:, c], best.indices[:, c], strict=True)]
        for c in range(values.shape[1])
    ]  # fmt: skip


def _crop(image: torch.Tensor, box: Sequence[int]) -> torch.Tensor:
    """image[:, y0:y1, x0:x1], 0 (the background) where the box reaches past the image."""
    x0, y0, x1, y1 = box
    height, width = image.shape[-2:]
    left, top = max(0, -x0), max(0, -y0)
    padded = functional.pad(image, (left, max(0, x1 - width), top, max(0, y1 - height)))
    return padded[:, y0 + top : y1 + top, x0 + left : x1 + left]


def _quantised(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels as the PNG keeps them: rounded to uint8 steps, back in [0, 1]."""
    return torch.round(pixels.clamp(0, 1) * 255) / 255


def _sprite(tiles: torch.Tensor, columns: int) -> tuple[bytes, list[int], int]:
    """(PNG bytes, [tile h, tile w] as written, columns): tiles [n, C, h, w] in [0, 1], left to right then top to
    bottom, each upscaled by a whole factor with NEAREST so a 16 x 16 input is viewable."""
    n, channels, height, width = tiles.shape
    scale = max(1, round(TILE_TARGET_PX / max(height, width)))
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * height, columns * width, channels), dtype=np.uint8)
    pixels = np.round(tiles.clamp(0, 1).numpy() * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    for k in range(n):
        r, c = divmod(k, columns)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = pixels[k]
    image = Image.fromarray(grid[..., 0] if channels == 1 else grid)
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue(), [height * scale, width * scale], columns
