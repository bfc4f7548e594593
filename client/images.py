"""Image <-> tensor conversions driven by a model's preprocessing hints (size, channels, scale, mean/std)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def to_tensor(image: Image.Image, hints: Mapping[str, Any]) -> np.ndarray:
    """One image -> FP32 [channels, height, width], preprocessed the way the model was trained."""
    channels = int(hints.get("channels", 1))
    height, width = int(hints["height"]), int(hints["width"])
    converted = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(converted, dtype=np.float32).reshape(height, width, channels)
    pixels = pixels * float(hints.get("scale", 1 / 255))
    mean = np.asarray(hints.get("mean", [0.0] * channels), dtype=np.float32)
    std = np.asarray(hints.get("std", [1.0] * channels), dtype=np.float32)
    pixels = (pixels - mean) / std
    chw: np.ndarray = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    return chw


def load(paths: Sequence[Path | str], hints: Mapping[str, Any]) -> np.ndarray:
    """Image files -> one FP32 batch [n, channels, height, width]."""
    tensors = []
    for path in paths:
        with Image.open(path) as image:
            tensors.append(to_tensor(image, hints))
    return np.stack(tensors)


def to_uint8(batch: np.ndarray, value_range: Sequence[float] = (-1.0, 1.0)) -> np.ndarray:
    """Generator output [n, c, h, w] in value_range -> uint8 images [n, h, w, c]."""
    low, high = float(value_range[0]), float(value_range[1])
    scaled = (np.clip(batch, low, high) - low) / (high - low) * 255.0
    pixels: np.ndarray = np.round(scaled).astype(np.uint8).transpose(0, 2, 3, 1)
    return pixels


def grid(images: np.ndarray, columns: int | None = None, pad: int = 2, upscale: int = 4) -> Image.Image:
    """uint8 images [n, h, w, c] -> one PNG-ready grid, upscaled so small digits are visible."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[top : top + h, left : left + w] = image
    picture = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    return picture.resize((picture.width * upscale, picture.height * upscale), Image.Resampling.NEAREST)
