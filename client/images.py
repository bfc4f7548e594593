"""Image <-> tensor conversions driven by a model's preprocessing hints (size, channels, scale, mean/std)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cnnserve import imaging


def to_tensor(image: Image.Image, hints: Mapping[str, Any]) -> np.ndarray:
    """One image -> FP32 item in the model's layout, preprocessed the way the model was trained (the server's
    own recipe for image inputs: cnnserve.imaging)."""
    return imaging.Preprocessing.from_hints(hints).tensor(image)


def load(paths: Sequence[Path | str], hints: Mapping[str, Any]) -> np.ndarray:
    """Image files -> one FP32 batch [n, channels, height, width]."""
    tensors = []
    for path in paths:
        with Image.open(path) as image:
            tensors.append(to_tensor(image, hints))
    return np.stack(tensors)


to_uint8 = imaging.to_uint8


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
